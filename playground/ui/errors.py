"""Refusing a visitor's input: one log line instead of a traceback, and a message that says what to fix.

Gradio 6.31 heads every error toast "Error" and drops ``gr.Error(title=...)`` (the toast shows its type, not
its title), so on the page the title opens the message in bold; a program (gradio_client, the REST route) gets
the bare sentence, with the title in the error's ``title`` field.
"""

from __future__ import annotations

import html

import gradio as gr

from ..service import Playground

CHECK_INPUT = "Check your input"
RUN_STOPPED = "Run stopped"
MODEL_NOT_LOADED = "Model not loaded — the previous model is still in use"


def from_page(event: gr.EventData | None) -> bool:
    """Whether the page's own component triggered the event (a program's call names no trigger)."""
    return event is not None and event.target is not None


def refusal(playground: Playground, endpoint: str, error: BaseException, *, title: str = CHECK_INPUT,
            page: bool) -> gr.Error:
    """The gr.Error to raise for a handled input error (log: one line; no traceback, since nothing is broken)."""
    message = playground.refused(endpoint, error)
    if page:
        message = f"<strong>{html.escape(title)}</strong><br>{html.escape(message)}"
    return gr.Error(message, title=title, print_exception=False)


def stopped(playground: Playground, error: BaseException, *, page: bool) -> gr.Error:
    """The gr.Error for a run the decode loop stopped (out of memory, a failed step): its sentence, no traceback."""
    message = playground.user_message(error)
    if page:
        message = f"<strong>{RUN_STOPPED}</strong><br>{html.escape(message)}"
    return gr.Error(message, title=RUN_STOPPED, print_exception=False)
