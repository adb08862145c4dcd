"""The engine's visible text: a possible stop string is held back until it is decided."""

from __future__ import annotations

from playground.engine import _visible


def test_visible_text_holds_back_a_possible_stop_string():
    assert _visible("The end.\n", ["\n\n"]) == "The end."
    assert _visible("The end.", ["\n\n"]) == "The end."
    assert _visible("Answer: ##", ["###"]) == "Answer: "
    assert _visible("Answer #1", ["###"]) == "Answer #1"  # "#1" can no longer become "###"
