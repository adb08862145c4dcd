"""The page's controls for run settings, made from :data:`playground.request.SETTINGS` (label, default, range)."""

from __future__ import annotations

import gradio as gr

from ..request import SETTINGS


def control(name: str, **options):
    """The control for setting ``name``: a checkbox (yes/no), a text box, a slider (numbers with a step) or a
    number box, with the schema's label, default and range; ``options`` override (e.g. ``value``, ``elem_id``)."""
    s = SETTINGS[name]
    options = {"label": s.label, "value": s.default, **options}
    if s.kind is bool:
        return gr.Checkbox(**options)
    if s.kind is str:
        return gr.Textbox(**{"lines": 1, **options})
    if s.step is not None:
        return gr.Slider(s.low, s.high, step=s.step, **options)
    # A number box, not a slider: a slider's box clamps -5 to 1 in the browser without a word; this one sends
    # what was typed, and the request's check answers with a sentence naming the field.
    return gr.Number(precision=0 if s.kind is int else None, **options)
