"""EOS Playground: `python app.py` serves the page on the embedded SmolLM2-135M-Instruct.

    python app.py --model meta-llama/Llama-2-7b-chat-hf --quantize 4bit --share --auth ann:secret
    python app.py --public      # what a Hugging Face Space runs: spaces.yaml's model, allowlist and caps

An app other machines can reach (``--share``, or a ``--host`` that is not loopback) serves strangers: the loaded
model and ``default`` only, spaces.yaml's caps, no paths, adapters or remote code. ``--allow-local-models`` lifts
the model limits, and only together with ``--auth``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth must be USER:PASSWORD, both non-empty")
    return user, password


def kv_budget_mb(value: str) -> float:
    from playground.decoder import check_budget_mb

    try:
        return check_budget_mb(value, "--kv-budget-mb")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    parser.add_argument("--kv-budget-mb", type=kv_budget_mb, metavar="MB",
                        help="the KV cache budget of the decode loop: runs wait for room beyond it (default: "
                             "$PLAYGROUND_KV_BUDGET_MB, spaces.yaml's kv_budget_mb in public mode, else on a GPU the "
                             "memory free after loading minus a reserve, on the CPU 2048)")
    parser.add_argument("--allow-local-models", action="store_true",
                        help="with --share or a non-loopback --host: let visitors load any local path, hub id, "
                             "adapter or remote code, as on your own machine (requires --auth)")
    parser.add_argument("--open", metavar="FILE",
                        help="show this trace (a trace JSON or an HTML file exported by the playground) on the "
                             "Compare page at start, without decoding; Run decodes it again with the loaded model")
    parser.add_argument("--lessons", action="append", metavar="DIR",
                        help="a folder of your own lessons (*.yaml, see docs/teaching.md) for the Learn tab, beside the "
                             "built-in ones; checked at start. Repeatable")
    return parser.parse_args(argv)


def exposed_policy(args: argparse.Namespace):
    """The policy of an app other machines can reach but that is not in public mode, or None (only this machine
    can reach it: the owner's local policy). Exits with a sentence for a combination that would hand the host to
    whoever has the link."""
    from playground.space.config import load_config
    from playground.space.policy import exposed_by

    exposure = exposed_by(args.share, args.host)
    if exposure is None:
        return None
    if args.allow_local_models and args.auth is None:
        sys.exit(f"error: --allow-local-models lets everyone who reaches {exposure} load any path on this machine "
                 "and run a model's code: add --auth USER:PASSWORD")
    if args.trust_remote_code and not args.allow_local_models:
        sys.exit(f"error: --trust-remote-code would run the model's own code for everyone who reaches {exposure}: "
                 "add --allow-local-models --auth USER:PASSWORD if you mean it")
    try:
        config = load_config()
    except ValueError as error:
        sys.exit(f"error: {error}")
    options = {"quantize": args.quantize, "dtype": args.dtype, "device": args.device}
    return config.shared_policy(args.model, options, allow_local_models=args.allow_local_models)


def describe_exposure(args: argparse.Namespace, policy) -> str:
    from playground.space.policy import exposed_by

    exposure = exposed_by(args.share, args.host)
    caps = (f"at most {policy.max_new_tokens} new tokens, {policy.max_prompt_tokens} prompt tokens, "
            f"{policy.max_columns} columns, {policy.time_limit_seconds:g} s a run, {policy.max_upload_mb:g} MB uploads, "
            f"a queue of {policy.queue_size}")
    if policy.allowed_models is None:
        return f"Reachable through {exposure}, behind --auth: visitors may load any model ({caps})."
    return (f"Reachable through {exposure}: visitors may use {', '.join(policy.allowed_models)} only — no local "
            f"paths, adapters or remote code, and no host path in any message ({caps}). "
            "For a team that logs in: --allow-local-models --auth USER:PASSWORD.")


# Seconds the runs in flight get to end (their handlers see the stop) and send their last event ("the server is
# shutting down") before the server closes.
SHUTDOWN_GRACE_SECONDS = (5.0, 0.5)


def stop_cleanly_on_signals(playground) -> None:
    """SIGINT (Ctrl-C) and SIGTERM: every decode loop stops (the runs in flight are told, in their stream, that the
    server is shutting down) and its thread is joined, then the server closes and the process exits 0. Without this,
    a decode thread still computing as the interpreter tears down aborts the process ("terminate called without an
    active exception")."""
    from playground.decoder import shutdown

    def stop(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while closing would interrupt the close
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"{signal.Signals(signum).name}: stopping the runs in flight and closing the server...", flush=True)
        shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS[0]
        while playground.active_generations and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(SHUTDOWN_GRACE_SECONDS[1])
        raise KeyboardInterrupt  # Gradio's launch() closes the server on it and returns

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    opened = None
    if args.open:  # before the model loads: a file that cannot be opened is said at once
        from playground.handover import read_trace

        try:
            opened = read_trace(Path(args.open).read_bytes())
        except (OSError, ValueError) as error:
            sys.exit(f"error: --open {args.open}: {error}")
    from playground.cli import load_from_args
    from playground.decoder import KV_BUDGET_ENV
    from playground.models import ModelLoadError
    from playground.space.config import ServedModel, load_config
    from playground.space.serving import is_public, serve_public
    from playground.service import Playground
    from playground.ui import launch

    from playground.lessons import LessonError, load_lessons

    try:  # every lesson is checked before the model loads: a broken file is named at once
        lessons = load_lessons(args.lessons or ())
    except LessonError as error:
        sys.exit(f"error: {error}")
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
                                 adapter=tuple(args.adapter) if args.adapter else None,
                                 checkpoint=tuple(args.checkpoint) if args.checkpoint else None)
        try:
            s = serve_public(config, served)
        except ModelLoadError as error:
            sys.exit(f"error: {error}")
        budget = args.kv_budget_mb
        if budget is None and not os.environ.get(KV_BUDGET_ENV, "").strip():
            budget = config.kv_budget_mb
        playground = Playground(s.bundle, s.reference, s.options, policy=s.policy, banner=s.banner,
                                kv_budget_mb=budget)
    else:
        args.model, args.dtype = args.model or "default", args.dtype or "auto"
        policy = exposed_policy(args)
        try:
            bundle = load_from_args(args)
        except ModelLoadError as error:
            sys.exit(f"error: {error}")
        options = {"quantize": args.quantize, "dtype": args.dtype, "device": args.device,
                   "trust_remote_code": args.trust_remote_code}
        playground = Playground(bundle, args.model, options, policy=policy, kv_budget_mb=args.kv_budget_mb)
        if policy is not None:
            print(describe_exposure(args, policy), flush=True)
    info = playground.bundle.info
    print(f"Loaded {info.name} ({info.source}) in {info.load_seconds:.1f} s", flush=True)
    stop_cleanly_on_signals(playground)
    return launch(playground, host=args.host, port=args.port, share=args.share, auth=args.auth, opened=opened,
                  lessons=lessons)


if __name__ == "__main__":
    main()
