"""``python -m playground compare|export|evaluate|doctor|bench|deploy`` — the playground without a browser."""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import textwrap

from .export import KINDS
from .interventions import INTERVENTION_NAMES, unescape

DEFAULT_VARIANTS = ["eos_reward"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import DTYPE_CHOICES, DEVICE_CHOICES, QUANTIZE_CHOICES

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="default",
                       help='"default" (embedded SmolLM2-135M-Instruct), a hub id, a local directory or a .gguf file')
    group.add_argument("--adapter", action="append", metavar="NAME=PATH",
                       help="a PEFT LoRA adapter (directory or hub id) on top of the model, named NAME (a bare path is "
                            "named after its folder); repeat for several, and pick one per column with @NAME")
    group.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="bitsandbytes quantization")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    group.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run Python code shipped with the model (only for models you trust)")


def load_from_args(args):
    from .models import load_model

    return load_model(args.model, adapter=args.adapter, quantize=args.quantize, dtype=args.dtype,
                      device=args.device, trust_remote_code=args.trust_remote_code)


def variants_from_args(args) -> list:
    """Baseline first, then one column per ``--intervention`` (``a+b`` combines several in one column; ``@NAME``
    at the end picks the column's model, ``base`` or a loaded adapter: ``baseline@base``, ``eos_reward@my-run``)."""
    from .engine import Variant

    params = {
        "eos_reward": {"reward_start_ratio": args.reward_start_ratio, "strength": args.strength},
        "stop_strings": {"strings": [unescape(s) for s in args.stop_string or ["\\n\\n"]]},
    }
    variants = [Variant("baseline", [])]
    for spec in args.intervention or DEFAULT_VARIANTS:
        body, at, model = spec.rpartition("@")
        body, model = (body, model.strip()) if at else (spec, None)
        names = [name.strip() for name in body.split("+") if name.strip() and name.strip() != "baseline"]
        variants.append(Variant(spec, [{"name": n, "params": {k: v for k, v in params.get(n, {}).items() if v is not None}}
                                       for n in names], model=model))
    return variants


def side_by_side(trace, width: int | None = None) -> str:
    """The columns' texts next to each other, each under its name and stop reason."""
    width = width or shutil.get_terminal_size((120, 40)).columns
    column = max(20, (width - 3 * (len(trace.variants) - 1)) // len(trace.variants))
    blocks = []
    for variant in trace.variants:
        lines = [variant.name, variant.status(), "─" * column]
        for paragraph in (variant.text or "(no text)").splitlines() or [""]:
            lines.extend(textwrap.wrap(paragraph, column) or [""])
        blocks.append(lines)
    rows = itertools.zip_longest(*blocks, fillvalue="")
    return "\n".join(" │ ".join(cell.ljust(column) for cell in row).rstrip() for row in rows)


def parse_branch_spec(spec: str) -> tuple[int, int, int]:
    """``COLUMN:STEP:TOKEN_ID`` → three whole numbers (their ranges are the engine's to check)."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--branch must be COLUMN:STEP:TOKEN_ID, three whole numbers such as 1:12:2 "
                         f"(column 1 from step 12 with token 2), got {spec!r}")
    column, step, token_id = (int(p) for p in parts)
    return column, step, token_id


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=128)
    decoding.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    decoding.add_argument("--top-p", type=float, default=1.0)
    decoding.add_argument("--top-k", type=int, default=0, help="0 = off")
    decoding.add_argument("--min-p", type=float, default=0.0,
                          help="keep tokens with at least this fraction of the top token's probability (0 = off)")
    decoding.add_argument("--typical-p", type=float, default=1.0, help="typical sampling's probability mass (1 = off)")
    decoding.add_argument("--repetition-penalty", type=float, default=1.0,
                          help="divide the logits of tokens already in the text by this (1 = off; applies when greedy too)")
    decoding.add_argument("--no-repeat-ngram-size", type=int, default=0,
                          help="ban tokens that would repeat an n-gram of this size (0 = off; applies when greedy too)")
    decoding.add_argument("--seed", type=int, default=0)
    decoding.add_argument("--no-chat-template", action="store_true", help="feed the prompt as plain text")
    decoding.add_argument("--system-prompt")


def add_intervention_arguments(parser: argparse.ArgumentParser) -> None:
    interventions = parser.add_argument_group("interventions")
    interventions.add_argument("--intervention", action="append", metavar="NAME",
                               help=f"add a column; NAME is one of {', '.join(INTERVENTION_NAMES)} or several "
                                    "joined with '+' (default: eos_reward)")
    interventions.add_argument("--reward-start-ratio", type=float, help="eos_reward: start at this fraction of max new tokens")
    interventions.add_argument("--strength", type=float, help="eos_reward: the largest bonus added to the EOS logit")
    interventions.add_argument("--stop-string", action="append", help="stop_strings: a string that ends the answer (type a newline as \\n)")


def settings_from_args(args):
    from .engine import Settings

    return Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, min_p=args.min_p, typical_p=args.typical_p,
                    repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                    seed=args.seed, use_chat_template=not args.no_chat_template, system_prompt=args.system_prompt)


def compare_main(args) -> int:
    from .engine import Comparison
    from .models import ModelLoadError

    try:
        branches = [parse_branch_spec(spec) for spec in args.branch or []]
        bundle = load_from_args(args)
        comparison = Comparison(bundle, args.prompt, variants_from_args(args), settings_from_args(args), branches=branches)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for trace in comparison.run():
        pass
    if branches:  # one second batch, from the finished columns
        try:
            second = Comparison.of_branches(bundle, trace, branches, comparison.settings)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for branch_trace in second.run():
            pass
        trace = trace.with_branches(branch_trace)
    if args.json:
        print(trace.to_json(stages=args.stages))
    else:
        print(f"{bundle.info.name} · {args.prompt!r}\n")
        print(side_by_side(trace))
    return 0


def doctor_main(args) -> int:
    """Exit 0 when nothing is a problem, 1 when something is, 2 on bad input or load errors."""
    from .doctor import check_out_dir, diagnose, load_sample, report_json, report_markdown, write_fixes
    from .models import ModelLoadError

    if args.max_length < 2:
        print(f"error: --max-length must be an integer >= 2, got {args.max_length}", file=sys.stderr)
        return 2
    try:
        if args.fix:
            check_out_dir(args.fix)  # before the model loads: a used directory is refused at once
    except ValueError as error:
        print(f"error: --fix: {error}", file=sys.stderr)
        return 2
    try:
        sample = load_sample(args.sample) if args.sample else None
    except (OSError, ValueError) as error:
        print(f"error: could not read --sample: {error}", file=sys.stderr)
        return 2
    try:
        bundle = load_from_args(args)
        findings = diagnose(bundle, sample=sample, max_length=args.max_length, probe=not args.no_probe,
                            gguf=args.gguf, stop_strings=[unescape(s) for s in args.stop_string or []] or None)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report_json(findings) if args.json else report_markdown(findings, title=f"EOS doctor — {bundle.info.name}"))
    if args.fix:
        try:
            result = write_fixes(bundle, findings, args.fix)
        except (OSError, ValueError) as error:
            print(f"error: --fix: {error}", file=sys.stderr)
            return 2
        print(f"Wrote {args.fix}: {len(result.changes)} change(s) for {', '.join(result.fixed) or 'nothing'}; "
              f"see {result.out_dir / 'FIXES.md'}.", file=sys.stderr)
    return 1 if any(f.status == "problem" for f in findings) else 0


def export_main(args) -> int:
    """Print the "Copy this fix" snippet for the one column ``--intervention`` describes."""
    from .engine import Comparison
    from .export import export_column
    from .models import ModelLoadError

    columns = variants_from_args(args)[1:]
    if len(columns) != 1:
        print("error: export prints one column: give one --intervention (join several with '+')", file=sys.stderr)
        return 2
    try:
        bundle = load_from_args(args)
        comparison = Comparison(bundle, args.prompt, columns, settings_from_args(args))
        print(export_column(comparison, kind=args.kind, model_reference=args.model), end="")
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def table(headers: list[str], rows: list[list]) -> str:
    """Rows as left-aligned columns under their headers."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("─" * w for w in widths))
    return "\n".join(lines)


def report_text(report) -> str:
    """An evaluation report for the terminal: the per-column table, then the sweep and its best cell."""
    from .evaluate import SUMMARY_HEADERS

    done = "" if report.complete else f" — cancelled, {len(report.rows)} of {report.expected_rows} rows"
    parts = [f"{report.model} · {len(report.prompts)} prompts × {len(report.columns)} columns × "
             f"{len(report.seeds)} seed(s) · max {report.settings['max_new_tokens']} new tokens{done}",
             "rates: share of rows [95% Wilson interval]; lengths in generated tokens; NLL/token under the raw model",
             "", table(SUMMARY_HEADERS, report.summary_rows())]
    models = report.models()
    if models:
        parts += ["", "stops best, per model (its cleanest column): " + "; ".join(
            f"{m['model']} {m['clean_stop_rate']['rate']:.0%} clean stops ({m['column']})" for m in models)]
    if report.sweep is not None:
        rows = [[c["name"], f"{c['clean_stop_rate']['rate']:.0%}" if c["clean_stop_rate"]["rate"] is not None else "—",
                 f"{c['mean_length']:.1f}" if c["mean_length"] is not None else "—",
                 f"{c['limit_rate']['rate']:.0%}" if c["limit_rate"]["rate"] is not None else "—"]
                for c in report.sweep_cells()]
        parts += ["", table(["sweep cell", "clean stop", "mean len", "limit"], rows)]
        best = report.best_cell()
        if best is not None:
            parts += ["", f"best: {best['name']} — by {best['rule']}", "", best["code"]]
    return "\n".join(parts)


def evaluate_main(args) -> int:
    from tqdm import tqdm

    from .evaluate import Evaluation, Sweep, builtin_prompts, read_prompts
    from .models import ModelLoadError

    try:
        prompts = builtin_prompts() if args.prompts == "builtin" else read_prompts(args.prompts)
        variants = variants_from_args(args)
        sweep = None
        if args.sweep:
            if len(args.intervention or []) > 1:
                raise ValueError("--sweep varies one column: give at most one --intervention (e.g. eos_reward+stop_strings)")
            sweep = Sweep.parse(args.sweep)
            variants = sweep.variants(variants[1])
        for problem in prompts.problems:
            print(f"skipped: {problem}", file=sys.stderr)
        bundle = load_from_args(args)
        settings = settings_from_args(args)
        evaluation = Evaluation(bundle, prompts, variants, settings, seeds=args.seeds, sweep=sweep,
                                model_reference=args.model)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in evaluation.problems[len(prompts.problems):]:
        print(f"skipped: {problem}", file=sys.stderr)
    with tqdm(total=evaluation.total, unit="row", desc="evaluate", file=sys.stderr) as bar:
        try:
            for done in evaluation.run():
                bar.update(done - bar.n)
        except KeyboardInterrupt:  # Ctrl-C: report what finished
            evaluation.cancel()
    report = evaluation.report()
    if args.json:
        print(report.to_json(indent=1))
        return 0
    if args.csv:
        with open(args.csv, "w", encoding="utf-8", newline="") as handle:
            handle.write(report.rows_csv())
        print(f"wrote {len(report.rows)} rows to {args.csv}", file=sys.stderr)
    print(report_text(report))
    return 0


def add_evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="run columns over a prompt set: stop rates, lengths, NLL; --sweep tunes eos_reward")
    evaluate.add_argument("--prompts", default="builtin", metavar="FILE|builtin",
                          help="builtin (shipped, 30 varied prompts) or a file: .jsonl with 'prompt' or 'messages' "
                               "per line, .csv with a 'prompt' column, anything else one prompt per line")
    add_model_arguments(evaluate)
    add_decoding_arguments(evaluate)
    evaluate.add_argument("--seeds", type=int, default=1, metavar="K",
                          help="sampling: run every prompt with K seeds, from --seed on")
    add_intervention_arguments(evaluate)
    interventions = evaluate.add_argument_group("sweep")
    interventions.add_argument("--sweep", nargs="+", metavar="PARAM=V1,V2",
                               help="tune eos_reward over a grid, e.g. --sweep reward_start_ratio=0.3,0.5,0.7 "
                                    "strength=4,8,12,16 at_boundary=on,off")
    output = evaluate.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole report as JSON")
    output.add_argument("--csv", metavar="OUT", help="write one line per prompt × column × seed to OUT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m playground", description="EOS Playground: why does a model (not) stop?")
    sub = parser.add_subparsers(dest="command", required=True)

    compare = sub.add_parser("compare", help="decode a prompt with and without stop interventions, side by side")
    compare.add_argument("--prompt", required=True)
    add_model_arguments(compare)
    add_decoding_arguments(compare)
    add_intervention_arguments(compare)
    compare.add_argument("--branch", action="append", metavar="COLUMN:STEP:TOKEN_ID",
                         help="after the comparison, decode column COLUMN (from 1, in the order shown) again with "
                              "TOKEN_ID at step STEP (from 0) and the same tokens before it; one more column. Repeatable")
    compare.add_argument("--json", action="store_true", help="print the whole trace as one JSON object")
    compare.add_argument("--stages", action="store_true", help="with --json: include the per-stage distributions")

    export = sub.add_parser("export", help="print one column's fix as code for your own generate() or pipeline()")
    export.add_argument("--prompt", required=True)
    export.add_argument("--kind", choices=KINDS, default="generate",
                        help="a generate() script, a pipeline() script, or the arguments for your own generate() call")
    add_model_arguments(export)
    add_decoding_arguments(export)
    add_intervention_arguments(export)

    add_evaluate_parser(sub)

    doctor = sub.add_parser("doctor", help="check a model and tokenizer for the usual reasons it never emits EOS")
    add_model_arguments(doctor)
    doctor.add_argument("--sample", help="JSONL training sample: {prompt, response}, {text}, {messages} or "
                                         "{input_ids, labels} per line")
    doctor.add_argument("--max-length", type=int, default=512, help="training max_length used for truncation (>= 2)")
    doctor.add_argument("--gguf", help="a GGUF export of the model: check that its metadata keeps the turn end")
    doctor.add_argument("--stop-string", action="append",
                        help="a string your code searches the decoded text for (type a newline as \\n)")
    doctor.add_argument("--no-probe", action="store_true", help="skip the teacher-forced p(EOS) forward passes")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    doctor.add_argument("--fix", metavar="OUT_DIR",
                        help="write a repaired copy of the model's files (config, tokenizer, FIXES.md; weights "
                             "symlinked) to this new directory")
    sub.add_parser("bench", help="measure the engine and interventions against plain generate()", add_help=False)
    sub.add_parser("deploy", help="create or update the Hugging Face Space from spaces.yaml", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # bench and deploy own their flags; hand them the rest of the command line.
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["deploy"]:
        from .space import main as deploy_main

        return deploy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return doctor_main(args)
    if args.command == "evaluate":
        return evaluate_main(args)
    return export_main(args) if args.command == "export" else compare_main(args)
