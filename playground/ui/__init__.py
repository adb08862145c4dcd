"""The Gradio page. Each section lives in its own module and only wires the engine, charts and doctor to
components; the app's state and request handling are in :mod:`playground.service`."""

from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import plotly
from starlette.responses import FileResponse
from starlette.routing import Route

from ..lessons import Lesson
from ..markup import md_text, status_mark
from ..service import TRACE_MAX_AGE, Playground
from ..handover import PAGE_CONFIG, PLOTLY_JS, trace_cap_mb
from .api import api_endpoints, export_endpoint, handover_endpoint
from .compare import compare_tab
from .doctor_tab import doctor_tab
from .errors import Doors
from .evaluate_tab import evaluate_tab
from .finetune_tab import finetune_tab
from .learn_tab import LEARN_SCRIPT, learn_tab
from .model_panel import model_panel

# The page's styles, shared with the exported HTML file (playground/handover.py).
CSS = (Path(__file__).parent / "page.css").read_text(encoding="utf-8")
# plotly.js for the live chart comes from the installed Python package, not a CDN: a Space visitor or a laptop
# without internet still gets the chart. The app serves it under a route of its own (not Gradio's file route,
# whose URL would show every visitor where the app is installed), cached for a year: the version in the query
# changes the URL when plotly is upgraded. Loaded without blocking the page.
PLOTLY_ROUTE = "/eos-assets/plotly.min.js"
HEAD = (f'<script src="{PLOTLY_ROUTE.lstrip("/")}?v={quote(plotly.__version__)}" async></script>'
        f"<script>window.eosPlaygroundConfig = {json.dumps(PAGE_CONFIG)};\n"
        f"{(Path(__file__).parent / 'page.js').read_text(encoding='utf-8')}</script><script>{LEARN_SCRIPT}</script>")


def plotly_js(request) -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


def build_app(playground: Playground, opened=None, lessons: list[Lesson] | None = None) -> gr.Blocks:
    """The page; ``opened``: a trace every new page shows at first (``app.py --open``); ``lessons``: the Learn
    tab's (``app.py --lessons DIR``: the built-in ones and a teacher's, see :func:`~playground.lessons.load_lessons`;
    None: the built-in ones)."""
    with Doors(playground, title="EOS Playground", delete_cache=(TRACE_MAX_AGE, TRACE_MAX_AGE)) as demo:
        gr.Markdown("# EOS Playground\nWhy does a language model (not) stop? One prompt decoded side by side "
                    "with and without stop interventions; p(EOS) and the next tokens at every step.", elem_id="title")
        if playground.banner:
            gr.Markdown(f"{status_mark('warning')} {md_text(playground.banner)}", elem_id="banner")
        model_panel(playground)
        with gr.Tabs() as tabs:  # explicit: a component rendered between implicit tabs starts a second strip below the first
            compare_tab(playground, demo, opened)
            doctor = doctor_tab(playground, demo)
            evaluate_tab(playground)
            finetune_tab(playground, demo, tabs, doctor)
            learn_tab(playground, demo, lessons)
        api_endpoints(playground)
        export_endpoint(playground)
        handover_endpoint(playground)
    return demo


def log_to_stderr() -> None:
    """The app's own log lines (one per refused input) on stderr, next to Gradio's."""
    logger = logging.getLogger("playground")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [playground] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def launch(playground: Playground, *, host: str | None = None, port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, opened=None, lessons: list[Lesson] | None = None, **kwargs):
    """Serve the page; a public policy bounds the queue, uploads and sessions kept in memory (runs stop at its time
    limit in the engine: Gradio's own ``time_limit=`` only applies to ``.stream()`` events)."""
    policy = playground.policy
    log_to_stderr()
    demo = build_app(playground, opened, lessons)
    # What is loaded by now (torch, transformers, Gradio, the model: ~400k objects) lives as long as the app: keep it
    # out of the cyclic collector, whose full pass over it stalled every visitor's columns for ~360 ms about once
    # per 200-token run (2.6% of it), and now takes none.
    gc.collect()
    gc.freeze()
    demo.queue(default_concurrency_limit=1, max_size=policy.queue_size)
    # Each upload's own cap is checked where it is read (the doctor's sample, a trace file); Gradio's is the largest.
    kwargs.setdefault("max_file_size", int(max(policy.max_upload_mb, trace_cap_mb(policy)) * 1024 * 1024))
    if policy.max_sessions is not None:
        kwargs.setdefault("state_session_capacity", policy.max_sessions)
    # The app's own routes go first in the FastAPI app Gradio builds, before its own.
    kwargs.setdefault("app_kwargs", {"routes": [Route(PLOTLY_ROUTE, plotly_js, methods=["GET", "HEAD"])]})
    # Quiet: Gradio's start lines tell users to set share=True in launch(); ours name app.py's flag instead.
    kwargs.setdefault("quiet", True)
    blocking = not kwargs.pop("prevent_thread_lock", False)
    served = demo.launch(server_name=host, server_port=port, share=share, auth=auth, css=CSS, head=HEAD,
                         prevent_thread_lock=True, **kwargs)
    if demo.is_running:  # (not when a test replaces Blocks.launch)
        print(f"* Running on local URL:  {demo.local_url}", flush=True)
        if not share:
            print("* For a public link, start it with `python app.py --share` (add --auth USER:PASSWORD to ask "
                  "visitors to log in).", flush=True)
        if blocking:
            demo.block_thread()
    return served
