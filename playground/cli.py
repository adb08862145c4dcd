"""``python -m playground compare|evaluate|doctor|bench|deploy`` — the playground without a browser."""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import textwrap

from .interventions import INTERVENTION_NAMES, unescape

DEFAULT_VARIANTS = ["eos_reward"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import DTYPE_CHOICES, DEVICE_CHOICES, QUANTIZE_CHOICES

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="default",
                       help='"default" (embedded SmolLM2-135M-Instruct), a hub id, a local directory or a .gguf file')
    group.add_argument("--adapter", help="PEFT LoRA adapter (directory or hub id) loaded on top of the model")
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
    """Baseline first, then one column per ``--intervention`` (``a+b`` combines several in one column)."""
    from .engine import Variant

    params = {
        "eos_reward": {"reward_start_ratio": args.reward_start_ratio, "strength": args.strength},
        "stop_strings": {"strings": [unescape(s) for s in args.stop_string or ["\\n\\n"]]},
    }
    variants = [Variant("baseline", [])]
    for spec in args.intervention or DEFAULT_VARIANTS:
        names = [name.strip() for name in spec.split("+") if name.strip()]
        variants.append(Variant(spec, [{"name": n, "params": {k: v for k, v in params.get(n, {}).items() if v is not None}}
                                       for n in names]))
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


def compare_main(args) -> int:
    from .engine import Comparison, Settings
    from .models import ModelLoadError

    try:
        bundle = load_from_args(args)
        settings = Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed, use_chat_template=not args.no_chat_template,
                            system_prompt=args.system_prompt)
        comparison = Comparison(bundle, args.prompt, variants_from_args(args), settings)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for trace in comparison.run():
        pass
    if args.json:
        print(trace.to_json(stages=args.stages))
    else:
        print(f"{bundle.info.name} · {args.prompt!r}\n")
        print(side_by_side(trace))
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

    from .engine import Settings
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
        settings = Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed, use_chat_template=not args.no_chat_template,
                            system_prompt=args.system_prompt)
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
    decoding = evaluate.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=128)
    decoding.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    decoding.add_argument("--top-p", type=float, default=1.0)
    decoding.add_argument("--top-k", type=int, default=0, help="0 = off")
    decoding.add_argument("--seed", type=int, default=0, help="first seed")
    decoding.add_argument("--seeds", type=int, default=1, metavar="K", help="sampling: run every prompt with K seeds")
    decoding.add_argument("--no-chat-template", action="store_true", help="feed prompts as plain text")
    decoding.add_argument("--system-prompt")
    interventions = evaluate.add_argument_group("interventions")
    interventions.add_argument("--intervention", action="append", metavar="NAME",
                               help="add a column (NAME or several joined with '+'; default: eos_reward); the "
                                    "baseline is always the first column")
    interventions.add_argument("--reward-start-ratio", type=float, help="eos_reward: start at this fraction of max new tokens")
    interventions.add_argument("--strength", type=float, help="eos_reward: the largest bonus added to the EOS logit")
    interventions.add_argument("--stop-string", action="append", help="stop_strings: a string that ends the answer (\\n = newline)")
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
    decoding = compare.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=128)
    decoding.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    decoding.add_argument("--top-p", type=float, default=1.0)
    decoding.add_argument("--top-k", type=int, default=0, help="0 = off")
    decoding.add_argument("--seed", type=int, default=0)
    decoding.add_argument("--no-chat-template", action="store_true", help="feed the prompt as plain text")
    decoding.add_argument("--system-prompt")
    interventions = compare.add_argument_group("interventions")
    interventions.add_argument("--intervention", action="append", metavar="NAME",
                               help=f"add a column; NAME is one of {', '.join(INTERVENTION_NAMES)} or several "
                                    "joined with '+' (default: eos_reward)")
    interventions.add_argument("--reward-start-ratio", type=float, help="eos_reward: start at this fraction of max new tokens")
    interventions.add_argument("--strength", type=float, help="eos_reward: the largest bonus added to the EOS logit")
    interventions.add_argument("--stop-string", action="append", help="stop_strings: a string that ends the answer (type a newline as \\n)")
    compare.add_argument("--json", action="store_true", help="print the whole trace as one JSON object")
    compare.add_argument("--stages", action="store_true", help="with --json: include the per-stage distributions")

    add_evaluate_parser(sub)
    sub.add_parser("doctor", help="check a model and tokenizer for the usual reasons it never emits EOS", add_help=False)
    sub.add_parser("bench", help="measure the engine and interventions against plain generate()", add_help=False)
    sub.add_parser("deploy", help="create or update the Hugging Face Space from spaces.yaml", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # doctor, bench and deploy own their flags; hand them the rest of the command line.
    if argv[:1] == ["doctor"]:
        from .doctor import main as doctor_main

        return doctor_main(argv[1:])
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["deploy"]:
        from .space import main as deploy_main

        return deploy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":
        return evaluate_main(args)
    return compare_main(args)
