"""Every door refuses like /compare: each API route, named or not, answers a bad value (NaN, Infinity, -1, "x", a
dict where a file goes, a path outside the uploads, an unknown or missing parameter, a name not loaded) with a
sentence naming the field — no bare "Error", no framework message, no traceback in the server's log — and the
server goes on serving. Driven over Gradio's REST routes (they can send NaN and what gradio_client refuses to)."""

from __future__ import annotations


def test_a_busy_refusal_is_titled_busy_whatever_the_door(tiny):
    """"a training is running" is no input's fault: its notice is not titled "Check your input"."""
    from playground.service import Busy, Playground
    from playground.ui.errors import BUSY, refusal

    playground = Playground(tiny)
    busy = refusal(playground, "/finetune", Busy("finetune: a training is running (step 3 of 40)"), page=True)
    assert busy.title == BUSY and busy.message.startswith(f"<strong>{BUSY}</strong>")
    plain = refusal(playground, "/finetune", ValueError("steps must be between 1 and 40, got 0"), page=False)
    assert plain.title == "Check your input" and plain.message == "steps must be between 1 and 40, got 0"
