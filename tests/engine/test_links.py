"""The page's defaults tell the story on the embedded model: the first Run shows the baseline rambling and the
interventions ending it."""

from __future__ import annotations

from playground.engine import Settings, Variant, compare
from playground.interventions import ends_sentence
from playground.links import PAGE_DEFAULTS
from playground.request import DEFAULTS, resolve


def test_the_defaults_tell_the_story_on_the_embedded_model(smollm):
    """Baseline rambles to the limit, the ramp ends at a sentence end before it, the article's processor cuts the
    answer mid-sentence within a few tokens: the contrast the page exists to show, on the first click."""
    d = PAGE_DEFAULTS
    variants = [Variant(c.name, resolve(c, DEFAULTS)) for c in d["columns"]]
    trace = compare(smollm, d["prompt"], variants, Settings(max_new_tokens=d["max_new_tokens"]))
    baseline, ramp, article = trace.variants
    assert [v.name for v in trace.variants] == ["baseline", "eos_reward", "seed_article"]
    assert baseline.stop_reason == "max_new_tokens"
    assert ramp.stop_reason == "eos" and len(ramp.steps) < d["max_new_tokens"] and ends_sentence(ramp.text)
    assert article.stop_reason == "eos" and len(article.steps) <= 16 and not ends_sentence(article.text)
