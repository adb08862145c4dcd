"""``python -m playground compare|export|evaluate|doctor|finetune|learn|bench|deploy`` — the playground without a browser."""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import textwrap
from pathlib import Path

from .export import KINDS
from .interventions import INTERVENTION_NAMES, unescape
from .request import SETTINGS

DEFAULT_VARIANTS = ["eos_reward"]


def add_model_arguments(parser: argparse.ArgumentParser, *, checkpoints: bool = True) -> None:
    """The flags that load the model; ``checkpoints`` False for the commands that look at one model only (the
    doctor, finetune) and so take no ``--checkpoint``."""
    from .models import DTYPE_CHOICES, DEVICE_CHOICES, QUANTIZE_CHOICES

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="default",
                       help='"default" (embedded SmolLM2-135M-Instruct), a hub id, a local directory or a .gguf file')
    group.add_argument("--adapter", action="append", metavar="NAME=PATH",
                       help="a PEFT LoRA adapter (directory or hub id) on top of the model, named NAME (a bare path is "
                            "named after its folder); repeat for several, and pick one per column with @NAME")
    if checkpoints:
        group.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                           help="a second full model with the same tokenizer (e.g. a merged fine-tune, or the DPO "
                                "checkpoint beside the SFT one), loaded like --model and named NAME (a bare path is "
                                "named after its folder); a column picks it with @NAME and decodes on it in its own "
                                "loop, its forward passes not shared with the other columns'. Repeatable")
    group.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="bitsandbytes quantization")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    group.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run Python code shipped with the model (only for models you trust)")


def load_from_args(args):
    from .models import load_model

    return load_model(args.model, adapter=args.adapter, checkpoint=getattr(args, "checkpoint", None),
                      quantize=args.quantize, dtype=args.dtype, device=args.device,
                      trust_remote_code=args.trust_remote_code)


def columns_from_args(args) -> list[str]:
    """The columns, as text: every ``--column`` in the order given; ``--intervention NAME`` (the older flag) adds
    a column after a baseline. Neither: baseline and eos_reward."""
    if args.column:
        return [*args.column, *(args.intervention or [])]
    return ["baseline", *(args.intervention or DEFAULT_VARIANTS)]


def request_from_args(args) -> dict:
    """The run settings given on the command line (as text: :func:`playground.request.check_setting` reads them
    by the same rule as every other door); the rest take the schema's defaults."""
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None}
    if args.no_chat_template:
        given["use_chat_template"] = "false"
    if args.stop_string:  # the older, repeatable flag
        given["stop_strings"] = ",".join(args.stop_string)
    return given


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


INTERVENTION_SETTINGS = ("reward_start_ratio", "strength", "stop_strings", "min_new_tokens")


def add_decoding_arguments(parser: argparse.ArgumentParser, *, prompt: bool = True) -> None:
    """A flag per run setting of :data:`playground.request.SETTINGS` (``--max-new-tokens`` for max_new_tokens),
    with its help and default."""
    decoding = parser.add_argument_group("decoding")
    for name, s in SETTINGS.items():
        if name in INTERVENTION_SETTINGS or (name == "prompt" and not prompt):
            continue
        metavar = "true|false" if s.kind is bool else "TEXT" if s.kind is str else "N" if s.kind is int else "X"
        decoding.add_argument(s.flag, metavar=metavar, required=name == "prompt",
                              help=f"{s.help}" + ("" if name == "prompt" else f" (default: {s.text(s.default)!r})"))
    decoding.add_argument("--no-chat-template", action="store_true", help="the same as --use-chat-template false")


def add_intervention_arguments(parser: argparse.ArgumentParser) -> None:
    interventions = parser.add_argument_group("columns and interventions")
    interventions.add_argument("--column", action="append", metavar="SPEC",
                               help="add a column, in the order given: interventions joined with '+', each NAME or "
                                    "NAME(key=value,...), 'baseline' for none, e.g. "
                                    "'eos_reward(strength=8,reward_start_ratio=0.4)+stop_strings'. Repeatable")
    interventions.add_argument("--intervention", action="append", metavar="NAME",
                               help=f"add a column after a baseline; NAME is one of {', '.join(INTERVENTION_NAMES)} or "
                                    "several joined with '+' (default without --column: eos_reward)")
    for name in INTERVENTION_SETTINGS:
        s = SETTINGS[name]
        interventions.add_argument(s.flag, metavar="TEXT" if s.kind is str else "N" if s.kind is int else "X",
                                   help=f"{s.help}; a column's own parameters override it (default: {s.text(s.default)!r})")
    interventions.add_argument("--stop-string", action="append", help="one stop string (repeatable; the older form "
                                                                      "of --stop-strings)")


def playground_from_args(args):
    """The service every door goes through, on the model the flags load, with the owner's (local) policy."""
    from .service import Playground

    return Playground(load_from_args(args), args.model)


def compare_main(args) -> int:
    from .models import ModelLoadError

    try:
        branches = [parse_branch_spec(spec) for spec in args.branch or []]
        playground = playground_from_args(args)
        comparison = playground.comparison(columns=columns_from_args(args), branches=branches or None,
                                           **request_from_args(args))
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        for trace in playground.stream(comparison):  # the columns, then the branches in one second batch
            pass
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.html:
        from .handover import export_html

        page = export_html(playground, trace)
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"wrote {args.html} ({len(page.encode()) / 1e6:.1f} MB): open it in a browser, no server needed",
              file=sys.stderr)
    if args.json:
        print(trace.to_json(stages=args.stages))
    elif not args.html:
        print(f"{playground.bundle.info.name} · {comparison.trace.prompt!r}\n")
        print(side_by_side(trace))
    return 0


def show_example_main(args, sample) -> int:
    """``doctor --show-example N``: one training example as tokens, each supervised or masked, end tokens marked."""
    from .doctor import example_view
    from .models import ModelLoadError
    from .supervision import summary, to_text

    if sample is None:
        print("error: --show-example needs --sample FILE.jsonl", file=sys.stderr)
        return 2
    try:
        tokens, how = example_view(load_from_args(args), sample, args.show_example)
    except (ModelLoadError, ValueError) as error:
        print(f"error: --show-example: {error}", file=sys.stderr)
        return 2
    print(f"{how}\n{summary(tokens)}\nA supervised token is followed by [its label]; ⏹ marks an end token; "
          "· is a space, ↵ a newline.\n")
    print(textwrap.fill(to_text(tokens), width=shutil.get_terminal_size((120, 40)).columns, break_long_words=False,
                        break_on_hyphens=False))
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
    if args.show_example is not None:
        return show_example_main(args, sample)
    try:
        bundle = load_from_args(args)
        earlier = None
        if args.compare_with:

            from .models import load_model

            # An adapter folder is the earlier stage of the same base model (two adapters: SFT, then DPO).
            adapter = Path(args.compare_with, "adapter_config.json").is_file()
            earlier = load_model(args.model if adapter else args.compare_with,
                                 adapter=args.compare_with if adapter else None, quantize=args.quantize,
                                 dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
        findings = diagnose(bundle, sample=sample, max_length=args.max_length, probe=not args.no_probe,
                            gguf=args.gguf, stop_strings=[unescape(s) for s in args.stop_string or []] or None,
                            artifacts=args.artifact or (), compare_with=earlier,
                            repetition_penalty=args.repetition_penalty, model=args.examine)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {'--examine: ' if str(error).startswith('model ') else ''}{error}", file=sys.stderr)
        return 2
    examined = f" @{args.examine}" if args.examine else ""
    print(report_json(findings) if args.json
          else report_markdown(findings, title=f"EOS doctor — {bundle.info.name}{examined}"))
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
    """Print the "Copy this fix" snippet for the one column ``--column`` (or ``--intervention``) describes."""
    from .export import export_column
    from .models import ModelLoadError

    columns = [*(args.column or []), *(args.intervention or [])]
    if len(columns) != 1:
        print("error: export prints one column: give one --column (or --intervention)", file=sys.stderr)
        return 2
    try:
        playground = playground_from_args(args)
        comparison = playground.comparison(columns=columns, **request_from_args(args))
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
    from .evaluate.report import SUMMARY_HEADERS

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


    from .models import ModelLoadError

    try:
        prompts = "builtin" if args.prompts == "builtin" else Path(args.prompts)
        columns = columns_from_args(args)
        if args.sweep and len(columns) > 2:
            raise ValueError("--sweep varies one column: give at most one --intervention or --column besides the "
                             "baseline (e.g. eos_reward+stop_strings)")
        playground = playground_from_args(args)
        evaluation = playground.evaluation(prompts, columns, sweep=args.sweep or "", seeds=args.seeds,
                                           **request_from_args(args))
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in evaluation.problems:
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
    add_decoding_arguments(evaluate, prompt=False)
    evaluate.add_argument("--seeds", type=int, default=1, metavar="K",
                          help="sampling: run every prompt with K seeds, from --seed on")
    add_intervention_arguments(evaluate)
    interventions = evaluate.add_argument_group("sweep")
    interventions.add_argument("--sweep", nargs="+", metavar="PARAM=V1,V2",
                               help="tune eos_reward over a grid, e.g. --sweep reward_start_ratio=0.3,0.5,0.7 "
                                    "strength=4,8,12,16 at_boundary=true,false")
    output = evaluate.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole report as JSON")
    output.add_argument("--csv", metavar="OUT", help="write one line per prompt × column × seed to OUT")


def finetune_main(args) -> int:
    """Train a LoRA adapter with one recipe; a tqdm bar shows loss, steps and time left. Ctrl-C stops the run
    and keeps the adapter trained so far."""
    from tqdm import tqdm

    from .finetune.data import builtin_data, read_examples
    from .finetune.recipes import recipe_named
    from .finetune.train import FineTune, TrainConfig, check_out_dir
    from .models import ModelLoadError

    if args.adapter:
        print("error: --adapter: finetune trains a new adapter on the base model; leave --adapter out", file=sys.stderr)
        return 2
    config = TrainConfig(recipe=args.recipe, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, lora_r=args.lora_r, max_length=args.max_length,
                         seed=args.seed)
    try:
        recipe = recipe_named(args.recipe)
        check_out_dir(args.out)  # before the model loads
        data = read_examples(args.data) if args.data else builtin_data(conversations=recipe.conversations)
        for problem in data.problems:
            print(f"skipped: {problem}", file=sys.stderr)
        bundle = load_from_args(args)
        job = FineTune(bundle, data, config, args.out, base_reference=args.model)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{bundle.info.name} · recipe {args.recipe}: {recipe.description} · {data.source}, "
          f"{len(data.examples)} examples", file=sys.stderr)
    progress = None
    with tqdm(total=config.steps, unit="step", desc=f"finetune {args.recipe}", file=sys.stderr) as bar:
        runs = job.run()
        while True:
            try:
                progress = next(runs)
            except StopIteration:
                break
            except KeyboardInterrupt:  # Ctrl-C: finish the current step, keep the adapter
                job.stop()
                continue
            bar.update(progress.step - bar.n)
            if progress.loss is not None:
                bar.set_postfix(loss=f"{progress.loss:.3f}")
    print(progress.line() if progress else "no step ran", file=sys.stderr)
    print(f"wrote {args.out}: load it with --adapter {args.out}")
    return 0


def add_finetune_parser(sub) -> None:
    from .finetune.recipes import RECIPES

    finetune = sub.add_parser("finetune", help="train a LoRA adapter with TRL's SFTTrainer: the right way or with a "
                                               "bug that loses EOS")
    finetune.add_argument("--recipe", default="correct", choices=list(RECIPES),
                          help="; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    finetune.add_argument("--out", required=True, help="a new folder for the adapter (written atomically)")
    finetune.add_argument("--data", help="JSONL ({prompt, response}, {messages} or {text} per line) or CSV with "
                                         "prompt,response or text columns; default: the built-in 79 Q&A pairs")
    finetune.add_argument("--steps", type=int, default=40)
    finetune.add_argument("--batch-size", type=int, default=4)
    finetune.add_argument("--learning-rate", type=float, default=1e-3)
    finetune.add_argument("--lora-r", type=int, default=16)
    finetune.add_argument("--max-length", type=int, default=512)
    finetune.add_argument("--seed", type=int, default=0)
    add_model_arguments(finetune, checkpoints=False)


def learn_main(args) -> int:
    """``learn --list``: the lessons in order; ``learn --lesson N``: run lesson N's question and its "now you" step
    on the loaded model and print each question, the answer read from the run and why (``--json``: as JSON)."""
    import json

    from .lessons import LessonError, load_lessons, parse_prediction, run_to_end
    from .models import ModelLoadError

    try:
        lessons = load_lessons(args.lessons or ())
    except LessonError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list or args.lesson is None:
        rows = [[lesson.order, lesson.id, lesson.title, lesson.goal] for lesson in lessons]
        print(json.dumps([dict(zip(("order", "id", "title", "goal"), row)) for row in rows], ensure_ascii=False, indent=1)
              if args.json else table(["#", "id", "title", "goal"], rows))
        return 0
    lesson = next((l for l in lessons if args.lesson in (str(l.order), l.id)), None)
    if lesson is None:
        print(f"error: --lesson: no lesson {args.lesson!r}; the lessons are "
              f"{', '.join(f'{l.order} ({l.id})' for l in lessons)}", file=sys.stderr)
        return 2
    try:
        prediction = parse_prediction(lesson.question, args.predict, len(lesson.columns))
        playground = playground_from_args(args)
        first = run_to_end(playground, lesson)
        now = run_to_end(playground, lesson, "now_you", before=first)
    except (ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"lesson": lesson.id, "order": lesson.order, "title": lesson.title, "goal": lesson.goal,
                          "explanation": lesson.explanation, "model": playground.bundle.info.name,
                          "question": first.to_dict(prediction),
                          "now_you": {"change": lesson.now_you.change.says, **now.to_dict()}},
                         ensure_ascii=False, indent=1, default=str))
        return 0
    print(f"Lesson {lesson.order}: {lesson.title}\n{lesson.goal}\n\n{lesson.explanation}\n")
    for result in (first, now):
        if result.part == "now_you":
            print(f"Now you: {lesson.now_you.change.says}")
        for note in result.notes:
            print(f"note: {note}")
        print(f"prompt: {result.prompt!r}\n{side_by_side(result.trace)}\n")
        print(f"Q: {result.question.text}")
        print(result.feedback(prediction) if result.part == "question" and prediction is not None
              else f"A (from the run): {result.answer_text()}. {result.why['text']}")
        print()
    return 0


def add_learn_parser(sub) -> None:
    learn = sub.add_parser("learn", help="guided lessons on the live model: a question before each run, answered from the run")
    learn.add_argument("--list", action="store_true", help="list the lessons in order")
    learn.add_argument("--lesson", metavar="N|ID", help="run lesson N (its number or id): its question, then its 'now you' step")
    learn.add_argument("--predict", metavar="ANSWER", help="your prediction for the lesson's question, checked against the run")
    learn.add_argument("--lessons", action="append", metavar="DIR",
                       help="a folder of your own lesson files (*.yaml, see docs/teaching.md), added to the built-in "
                            "ones (one with a built-in's id replaces it). Repeatable")
    learn.add_argument("--json", action="store_true", help="print JSON: the questions, the answers from the run, why")
    add_model_arguments(learn)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m playground", description="EOS Playground: why does a model (not) stop?")
    sub = parser.add_subparsers(dest="command", required=True)

    compare = sub.add_parser("compare", help="decode a prompt with and without stop interventions, side by side")
    add_model_arguments(compare)
    add_decoding_arguments(compare)
    add_intervention_arguments(compare)
    compare.add_argument("--branch", action="append", metavar="COLUMN:STEP:TOKEN_ID",
                         help="after the comparison, decode column COLUMN (from 1, in the order shown) again with "
                              "TOKEN_ID at step STEP (from 0) and the same tokens before it; one more column. Repeatable")
    compare.add_argument("--json", action="store_true", help="print the whole trace as one JSON object")
    compare.add_argument("--stages", action="store_true", help="with --json: include the per-stage distributions")
    compare.add_argument("--html", metavar="OUT.html",
                         help="also write the comparison as one HTML file that opens offline: the columns, the chart, "
                              "the inspector of every step, Copy this fix and Replay (the app opens it again)")

    export = sub.add_parser("export", help="print one column's fix as code for your own generate() or pipeline()")
    export.add_argument("--kind", choices=KINDS, default="generate",
                        help="a generate() script, a pipeline() script, or the arguments for your own generate() call")
    add_model_arguments(export)
    add_decoding_arguments(export)
    add_intervention_arguments(export)

    add_evaluate_parser(sub)
    add_finetune_parser(sub)
    add_learn_parser(sub)

    doctor = sub.add_parser("doctor", help="check a model and tokenizer for the usual reasons it never emits EOS")
    add_model_arguments(doctor, checkpoints=False)
    doctor.add_argument("--sample", help="JSONL training sample: {prompt, response}, {text}, {messages} or "
                                         "{input_ids, labels} per line")
    doctor.add_argument("--examine", metavar="NAME",
                        help="which loaded model to examine, as a column picks it: base or an --adapter's NAME "
                             "(default: the only adapter, else the base)")
    doctor.add_argument("--max-length", type=int, default=512, help="training max_length used for truncation (>= 2)")
    doctor.add_argument("--gguf", help="a GGUF export of the model: check that its metadata keeps the turn end")
    doctor.add_argument("--stop-string", action="append",
                        help="a string your code searches the decoded text for (type a newline as \\n)")
    doctor.add_argument("--no-probe", action="store_true", help="skip the teacher-forced p(EOS) forward passes")
    doctor.add_argument("--artifact", action="append", metavar="PATH",
                        help="an export to compare with the model: adapter or merged folder, .gguf, Ollama Modelfile "
                             "(repeatable; --fix writes corrected Modelfiles and generation configs)")
    doctor.add_argument("--compare-with", metavar="PATH",
                        help="an earlier checkpoint with the same tokenizer (the SFT model before DPO/RL, or its "
                             "adapter folder on the same --model): check that p(EOS) at the answer end did not "
                             "collapse since")
    doctor.add_argument("--repetition-penalty", type=float, metavar="X",
                        help="the repetition penalty you serve with (default: the generation config's)")
    doctor.add_argument("--show-example", type=int, metavar="N",
                        help="instead of the report, show example N (from 1) of --sample as tokens: supervised or "
                             "masked, the label under each, end tokens marked")
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
        from .bench.run import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["deploy"]:
        from .space.deploy import main as deploy_main

        return deploy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return doctor_main(args)
    if args.command == "evaluate":
        return evaluate_main(args)
    if args.command == "finetune":
        return finetune_main(args)
    if args.command == "learn":
        return learn_main(args)
    return export_main(args) if args.command == "export" else compare_main(args)
