"""EOS Playground: `python app.py` serves the page on the embedded SmolLM2-135M-Instruct.

    python app.py --model meta-llama/Llama-2-7b-chat-hf --quantize 4bit --share
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from playground.cli import add_model_arguments

    parser = argparse.ArgumentParser(description="EOS Playground: see why a language model (doesn't) stop.")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    from playground.cli import load_from_args
    from playground.models import ModelLoadError
    from playground.ui import Playground, launch

    try:
        bundle = load_from_args(args)
    except ModelLoadError as error:
        sys.exit(f"error: {error}")
    print(f"Loaded {bundle.info.name} ({bundle.info.source}) in {bundle.info.load_seconds:.1f} s", flush=True)
    options = {"quantize": args.quantize, "dtype": args.dtype, "device": args.device,
               "trust_remote_code": args.trust_remote_code}
    return launch(Playground(bundle, args.model, options), host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
