"""The story's sentence ends."""

from __future__ import annotations

from playground.interventions import ends_sentence


def test_sentence_ends():
    assert ends_sentence("Paris is a culinary paradise.") and ends_sentence('He said "yes."') and ends_sentence("Done!  ")
    assert not ends_sentence("Bonjour, welcome to the City of") and not ends_sentence("1. Louvre\n") and not ends_sentence("")
