"""The Gradio page. Each section lives in its own module and only wires the engine, charts and doctor to
components; the app's state and request handling are in :mod:`playground.service`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import plotly

from ..charts import STOP_MARKERS
from ..service import TRACE_MAX_AGE, Playground
from ..trace import StopReason
from .api import api_endpoints, export_endpoint
from .compare import compare_tab
from .doctor_tab import doctor_tab
from .errors import Doors
from .evaluate_tab import evaluate_tab
from .finetune_tab import finetune_tab
from .model_panel import model_panel

CSS = """
.prose.token-view { font-family: ui-monospace, monospace; font-size: 0.85em; line-height: 1.6; white-space: pre-wrap;
                    height: 200px; overflow-y: auto; padding: 6px; border: 1px solid #e5e7eb; border-radius: 6px; }
.token-view [data-s] { border-radius: 3px; cursor: pointer; background: hsla(calc(120 * var(--p)), 80%, 70%, 0.55); }
.shade-eos .token-view [data-s] { background: rgba(255, 140, 0, var(--e)); }
.token-view [data-s]:hover { outline: 1px solid #555; }
.token-view [data-s].ws { color: #9ca3af; }
.token-view [data-s].sel { outline: 2px solid #111; background: #ffe066; }
.token-view .eos-badge { background: #444 !important; color: white; padding: 0 4px; font-weight: 700; }
.status { font-weight: 600; height: 2.9em; overflow: hidden; }  /* two lines at most: boxes stay level */
.status p { margin: 0; font-size: 0.9em; line-height: 1.45em; display: -webkit-box; -webkit-line-clamp: 2;
            -webkit-box-orient: vertical; overflow: hidden; }
#story ul { margin: 0; padding-left: 1.2em; font-size: 0.9em; }
#selection { display: none; }
#stale-note { display: none; }
#stale-note.stale { display: block; }
.stale-note { background: #f3f4f6; border: 1px solid #d1d5db; border-radius: 6px; padding: 3px 10px; font-size: 0.9em; color: #374151; }
#columns-row.stale, #story.stale, #chart.stale, #inspector.stale { opacity: 0.45; }
.remove-branch { align-self: flex-start; }
@media (max-width: 720px) {  /* a phone: the inspector goes under the chart, each at full width */
  .row:has(> #chart) { flex-direction: column; }
  #chart, #inspector { min-width: 100% !important; }
}
#controls button { white-space: nowrap; padding-left: 6px; padding-right: 6px; }
#banner { background: #fff7e6; border: 1px solid #f0b429; border-radius: 6px; padding: 4px 10px; }
#title h1 { font-size: 1.4em; margin: 0; }
#title p { margin: 0; }
.eos-chart-toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 4px; font-size: 0.8em; }
.eos-chart-toolbar button { font-size: 1em; line-height: 1.4; font-weight: normal; border: 1px solid #d1d5db; border-radius: 4px; padding: 1px 6px; background: white; }
.eos-chart-toolbar button.on { background: #1f2937; color: white; }
.eos-chart-toolbar .note { color: #6b7280; margin-left: 4px; }
.eos-chart-empty { color: #6b7280; padding: 40px 0; text-align: center; border: 1px dashed #d1d5db; border-radius: 6px; }
.eos-chart-plot { width: 100%; min-height: 250px; }
.inspector { font-size: 0.85em; }
.inspector .no-branch { color: #92400e; margin: 2px 0 6px; }
.inspector.empty { color: #6b7280; padding: 30px 8px; }
.inspector .margin { margin: 4px 0; font-weight: 600; }
.inspector table { width: 100%; border-collapse: collapse; margin-bottom: 6px; }
.inspector td, .inspector th { padding: 1px 4px; text-align: left; font-weight: normal; border-bottom: 1px solid #f3f4f6; }
.inspector th { color: #6b7280; }
.inspector td.num { text-align: right; font-variant-numeric: tabular-nums; }
.inspector td.tok { font-family: ui-monospace, monospace; white-space: pre; max-width: 9em; overflow: hidden; }
.inspector tr.eos td.tok { font-weight: 700; }
.inspector td.bars { width: 40%; }
.inspector .bar { display: block; height: 5px; margin: 1px 0; border-radius: 2px; }
.inspector .bar.raw, .inspector .key.raw { background: #9ecae1; }
.inspector .bar.final, .inspector .key.final { background: #08519c; }
.inspector button.branch { padding: 0 5px; font-size: 0.8em; line-height: 1.3; border: 1px solid #d1d5db; border-radius: 4px; background: white; }
.inspector button.branch:hover { background: #fef3c7; }
.inspector .key { display: inline-block; width: 10px; height: 8px; margin: 0 2px 0 6px; }
/* The Evaluate table fits 1400 px: smaller type, headers break between words only. */
#evaluate-summary td, #evaluate-summary th { font-size: 0.8em; }
#evaluate-summary th, #evaluate-summary th * { word-break: keep-all; overflow-wrap: normal; hyphens: none; }
/* Toasts at the bottom: at the top they cover the Model panel's Load button. */
.toast-wrap { top: auto !important; bottom: var(--size-4); }
/* A refused input is explained in the toast; Gradio's "Error" badge over the output would only hide its content. */
[data-testid="status-tracker"]:has(> span.error) { display: none; }
"""
# plotly.js for the live chart comes from the installed Python package, not a CDN: a Space visitor or a laptop
# without internet still gets the chart. It is allowed as a static file and loaded without blocking the page.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
gr.set_static_paths([PLOTLY_JS])
# What page.js takes from the server rather than copying: each stop reason's label and chart marker.
PAGE_CONFIG = {"stops": {reason.value: {"label": reason.label, "symbol": STOP_MARKERS[reason]} for reason in StopReason}}
HEAD = (f'<script src="gradio_api/file={quote(str(PLOTLY_JS))}" async></script>'
        f"<script>window.eosPlaygroundConfig = {json.dumps(PAGE_CONFIG)};\n"
        f"{(Path(__file__).parent / 'page.js').read_text(encoding='utf-8')}</script>")


def build_app(playground: Playground) -> gr.Blocks:
    with Doors(playground, title="EOS Playground", delete_cache=(TRACE_MAX_AGE, TRACE_MAX_AGE)) as demo:
        gr.Markdown("# EOS Playground\nWhy does a language model (not) stop? One prompt decoded side by side "
                    "with and without stop interventions; p(EOS) and the next tokens at every step.", elem_id="title")
        if playground.banner:
            gr.Markdown(f"⚠️ {playground.banner}", elem_id="banner")
        model_panel(playground)
        with gr.Tabs():  # explicit: a component rendered between implicit tabs starts a second strip below the first
            compare_tab(playground, demo)
            doctor_tab(playground)
            evaluate_tab(playground)
            finetune_tab(playground)
        api_endpoints(playground)
        export_endpoint(playground)
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
           auth: tuple[str, str] | None = None, **kwargs):
    """Serve the page; a public policy bounds the queue, uploads and sessions kept in memory (runs stop at its time
    limit in the engine: Gradio's own ``time_limit=`` only applies to ``.stream()`` events)."""
    policy = playground.policy
    log_to_stderr()
    demo = build_app(playground)
    demo.queue(default_concurrency_limit=1, max_size=policy.queue_size)
    kwargs.setdefault("max_file_size", int(policy.max_upload_mb * 1024 * 1024))
    if policy.max_sessions is not None:
        kwargs.setdefault("state_session_capacity", policy.max_sessions)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, css=CSS, head=HEAD, **kwargs)
