"""The Gradio page. Each section lives in its own module and only wires the engine, charts and doctor to
components; the app's state and request handling are in :mod:`playground.service`."""

from __future__ import annotations

import gradio as gr

from ..service import TRACE_MAX_AGE, Playground
from .api import api_endpoints
from .compare import compare_tab
from .doctor_tab import doctor_tab
from .evaluate_tab import evaluate_tab
from .model_panel import model_panel

CSS = """
.token-view { font-family: ui-monospace, monospace; font-size: 0.9em; line-height: 1.7; white-space: pre-wrap;
              max-height: 420px; overflow-y: auto; padding: 6px; border: 1px solid #e5e7eb; border-radius: 6px; }
.token-view span { border-radius: 3px; }
.status { font-weight: 600; }
#banner { background: #fff7e6; border: 1px solid #f0b429; border-radius: 6px; padding: 4px 10px; }
"""


def build_app(playground: Playground) -> gr.Blocks:
    with gr.Blocks(title="EOS Playground", delete_cache=(TRACE_MAX_AGE, TRACE_MAX_AGE)) as demo:
        gr.Markdown("# EOS Playground\nWhy does a language model (not) stop? The same prompt, decoded side "
                    "by side with and without stop interventions, with p(EOS) and the next-token distribution "
                    "at every step.")
        if playground.banner:
            gr.Markdown(f"⚠️ {playground.banner}", elem_id="banner")
        model_panel(playground)
        compare_tab(playground, demo)
        doctor_tab(playground)
        evaluate_tab(playground)
        api_endpoints(playground)
    return demo


def launch(playground: Playground, *, host: str | None = None, port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, **kwargs):
    """Serve the page; a public policy bounds the queue, uploads and sessions kept in memory (runs stop at its time
    limit in the engine: Gradio's own ``time_limit=`` only applies to ``.stream()`` events)."""
    policy = playground.policy
    demo = build_app(playground)
    demo.queue(default_concurrency_limit=1, max_size=policy.queue_size)
    if policy.max_upload_mb is not None:
        kwargs.setdefault("max_file_size", int(policy.max_upload_mb * 1024 * 1024))
    if policy.max_sessions is not None:
        kwargs.setdefault("state_session_capacity", policy.max_sessions)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, css=CSS, **kwargs)
