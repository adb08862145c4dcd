"""The page's controls for run settings, made from :data:`playground.request.SETTINGS` (label, default, range)."""

from __future__ import annotations

import math

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


# The slider's position is log2 of the value: 16 and 1024 are equally easy to reach (on a linear 1-2048 slider the
# default 80 sits in its first 4 %). The browser converts both ways; no server round trip.
TO_POSITION = ("(tokens, position) => { const n = Number(tokens); "
               "return Number.isFinite(n) && n >= 1 ? Math.round(Math.log2(n) * 100) / 100 : position; }")


def max_new_tokens_control(limit: int, value: int, elem_id: str) -> gr.Number:
    """Max new tokens as a slider on a log scale beside its number box, up to ``limit`` (the policy's cap).

    The number box holds the real value: runs, links (``?max_new_tokens=…``) and the API read it, and what is
    typed there is checked like any door's value (a sentence naming the field, never a silent clamp). Moving the
    slider writes 2^position into the box; a value set in the box (typed, or from a link) moves the slider.
    Returns the number box."""
    s = SETTINGS["max_new_tokens"]
    limit = min(limit, int(s.high))
    # The box first, with the label, as a slider's head; the slider under it without its own (page CSS: .log-number).
    number = control("max_new_tokens", value=value, label=f"{s.label} (1 to {limit}, log scale)", elem_id=elem_id,
                     elem_classes="log-number")
    # The slider's end rounded up to its step, so its last position is the limit itself (300, not 298).
    scale = gr.Slider(0, math.ceil(math.log2(limit) * 100) / 100, value=round(math.log2(max(value, 1)), 2), step=0.01,
                      show_label=False, label=f"{s.label}, log2", elem_id=f"{elem_id}-scale", elem_classes="log-scale")
    scale.input(None, scale, number, js=f"(position) => Math.min({limit}, Math.max(1, Math.round(2 ** position)))")
    number.change(None, [number, scale], scale, js=TO_POSITION)
    return number
