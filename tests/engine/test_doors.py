"""Every door refuses like /compare, in the service: a busy refusal is titled busy whatever the door."""

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
