"""The Gradio page. Each section lives in its own module and only wires the engine, charts and doctor to
components; the app's state and request handling are in :mod:`playground.service`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import gradio as gr

from ..service import TRACE_MAX_AGE, Playground
from .api import api_endpoints, export_endpoint
from .compare import compare_tab
from .doctor_tab import doctor_tab
from .evaluate_tab import evaluate_tab
from .finetune_tab import finetune_tab
from .model_panel import model_panel

CSS = """
.prose.token-view { font-family: ui-monospace, monospace; font-size: 0.85em; line-height: 1.6; white-space: pre-wrap;
                    height: 200px; overflow-y: auto; padding: 6px; border: 1px solid #e5e7eb; border-radius: 6px; }
.token-view [data-s] { border-radius: 3px; cursor: pointer; background: hsla(calc(120 * var(--p)), 80%, 70%, 0.55); }
.shade-eos .token-view [data-s] { background: rgba(255, 140, 0, var(--e)); }
.token-view [data-s]:hover { outline: 1px solid #555; }
.token-view [data-s].sel { outline: 2px solid #111; background: #ffe066; }
.token-view .eos-badge { background: #444 !important; color: white; padding: 0 4px; font-weight: 700; }
.status { font-weight: 600; min-height: 1.5em; }
.status p { margin: 0; font-size: 0.9em; }
#story ul { margin: 0; padding-left: 1.2em; font-size: 0.9em; }
#selection { display: none; }
@media (max-width: 720px) {  /* a phone: the inspector goes under the chart, each at full width */
  .row:has(> #chart) { flex-direction: column; }
  #chart, #inspector { min-width: 100% !important; }
}
#controls button { white-space: nowrap; padding-left: 6px; padding-right: 6px; }
#banner { background: #fff7e6; border: 1px solid #f0b429; border-radius: 6px; padding: 4px 10px; }
#title h1 { font-size: 1.4em; margin: 0; }
#title p { margin: 0; }
.eos-chart-toolbar button { font-size: 0.8em; border: 1px solid #d1d5db; border-radius: 4px; padding: 1px 6px; margin-right: 4px; background: white; }
.eos-chart-toolbar button.on { background: #1f2937; color: white; }
.eos-chart-legend { font-size: 0.8em; margin: 4px 0; }
.eos-chart-legend span { margin-right: 10px; }
.eos-chart-legend i, .eos-chart-tip i { display: inline-block; width: 10px; height: 10px; margin-right: 3px; border-radius: 2px; }
.eos-chart-legend .note { color: #6b7280; }
.eos-chart-empty { color: #6b7280; padding: 40px 0; text-align: center; border: 1px dashed #d1d5db; border-radius: 6px; }
.eos-chart-frame { position: relative; }
.eos-chart-svg text.tick { font-size: 10px; fill: #6b7280; }
.eos-chart-svg text.ramp-label { font-size: 10px; fill: #b45309; }
.eos-chart-svg text.stop-marker { font-size: 16px; stroke: black; stroke-width: 0.5px; cursor: default; }
.eos-chart-svg line.grid { stroke: #eef0f3; }
.eos-chart-svg line.zero { stroke: #111; stroke-dasharray: 2 2; }
.eos-chart-svg line.guide { stroke: #9ca3af; }
.eos-chart-svg line.selected-step { stroke: #111; stroke-dasharray: 4 3; }
.eos-chart-tip { display: none; position: absolute; top: 20px; background: rgba(255,255,255,0.96); border: 1px solid #d1d5db;
                 border-radius: 4px; padding: 4px 6px; font-size: 0.75em; pointer-events: none; max-width: 260px; }
.inspector { font-size: 0.85em; max-height: 330px; overflow-y: auto; }
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
/* A refused input is explained in the toast; Gradio's "Error" badge over the output would only hide its content. */
[data-testid="status-tracker"]:has(> span.error) { display: none; }
"""
HEAD = f"<script>{(Path(__file__).parent / 'page.js').read_text(encoding='utf-8')}</script>"


def build_app(playground: Playground) -> gr.Blocks:
    with gr.Blocks(title="EOS Playground", delete_cache=(TRACE_MAX_AGE, TRACE_MAX_AGE)) as demo:
        gr.Markdown("# EOS Playground\nWhy does a language model (not) stop? One prompt decoded side by side "
                    "with and without stop interventions; p(EOS) and the next tokens at every step.", elem_id="title")
        if playground.banner:
            gr.Markdown(f"⚠️ {playground.banner}", elem_id="banner")
        model_panel(playground)
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
