"""``python -m playground compare|export|doctor|bench|deploy`` — the playground without a browser."""

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


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=128)
    decoding.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    decoding.add_argument("--top-p", type=float, default=1.0)
    decoding.add_argument("--top-k", type=int, default=0, help="0 = off")
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
                    top_k=args.top_k, seed=args.seed, use_chat_template=not args.no_chat_template,
                    system_prompt=args.system_prompt)


def compare_main(args) -> int:
    from .engine import Comparison
    from .models import ModelLoadError

    try:
        bundle = load_from_args(args)
        comparison = Comparison(bundle, args.prompt, variants_from_args(args), settings_from_args(args))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m playground", description="EOS Playground: why does a model (not) stop?")
    sub = parser.add_subparsers(dest="command", required=True)

    compare = sub.add_parser("compare", help="decode a prompt with and without stop interventions, side by side")
    compare.add_argument("--prompt", required=True)
    add_model_arguments(compare)
    add_decoding_arguments(compare)
    add_intervention_arguments(compare)
    compare.add_argument("--json", action="store_true", help="print the whole trace as one JSON object")
    compare.add_argument("--stages", action="store_true", help="with --json: include the per-stage distributions")

    export = sub.add_parser("export", help="print one column's fix as code for your own generate() or pipeline()")
    export.add_argument("--prompt", required=True)
    export.add_argument("--kind", choices=KINDS, default="generate",
                        help="a generate() script, a pipeline() script, or the arguments for your own generate() call")
    add_model_arguments(export)
    add_decoding_arguments(export)
    add_intervention_arguments(export)

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
    return export_main(args) if args.command == "export" else compare_main(args)
