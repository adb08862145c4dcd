"""EOS Playground: `python app.py` serves the page on the embedded SmolLM2-135M-Instruct.

    python app.py --model meta-llama/Llama-2-7b-chat-hf --quantize 4bit --share --auth ann:secret
    python app.py --public      # what a Hugging Face Space runs: spaces.yaml's model, allowlist and caps
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth must be USER:PASSWORD, both non-empty")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from playground.cli import add_model_arguments

    parser = argparse.ArgumentParser(description="EOS Playground: see why a language model (doesn't) stop.")
    add_model_arguments(parser)
    # None = not given: public mode then serves spaces.yaml's model; otherwise "default" and "auto".
    parser.set_defaults(model=None, dtype=None)
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    parser.add_argument("--auth", type=parse_auth, metavar="USER:PASSWORD",
                        help="ask for this user name and password before showing the page (e.g. with --share)")
    parser.add_argument("--public", action="store_true",
                        help="public mode (automatic inside a Hugging Face Space): spaces.yaml's model, only its "
                             "allowlisted models, its caps enforced server-side, no local paths or remote code")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    from playground.cli import load_from_args
    from playground.models import ModelLoadError
    from playground.space import ServedModel, is_public, load_config, serve_public
    from playground.service import Playground
    from playground.ui import launch

    if is_public(args.public):
        if args.trust_remote_code:
            sys.exit("error: --trust-remote-code cannot be used in public mode: visitors would run the model's own code")
        try:
            config = load_config()
        except ValueError as error:
            sys.exit(f"error: {error}")
        served = None
        if args.model is not None:  # the operator's choice wins over spaces.yaml
            served = ServedModel(reference=args.model, quantize=args.quantize, dtype=args.dtype or "auto",
                                 adapter=args.adapter)
        try:
            s = serve_public(config, served)
        except ModelLoadError as error:
            sys.exit(f"error: {error}")
        playground = Playground(s.bundle, s.reference, s.options, policy=s.policy, banner=s.banner)
    else:
        args.model, args.dtype = args.model or "default", args.dtype or "auto"
        try:
            bundle = load_from_args(args)
        except ModelLoadError as error:
            sys.exit(f"error: {error}")
        options = {"quantize": args.quantize, "dtype": args.dtype, "device": args.device,
                   "trust_remote_code": args.trust_remote_code}
        playground = Playground(bundle, args.model, options)
    info = playground.bundle.info
    print(f"Loaded {info.name} ({info.source}) in {info.load_seconds:.1f} s", flush=True)
    return launch(playground, host=args.host, port=args.port, share=args.share, auth=args.auth)


if __name__ == "__main__":
    main()
