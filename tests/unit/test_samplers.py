"""Samplers without a model: the stage chart has one subplot per stage with the chosen token marked, and top-p from
the candidates keeps exactly the tokens the full sort keeps."""

from __future__ import annotations

import pytest
import torch

from playground import charts
from playground.trace import Stage, StepRecord, TopToken, Trace, VariantTrace


def test_stage_chart_has_one_subplot_per_stage_with_the_same_tokens_and_the_chosen_one_marked():
    stages = [
        Stage("raw", 0.1, 49152, [(5, "a", 0.5), (6, "b", 0.3), (2, "<eos>", 0.1)], "the model's own"),
        Stage("temperature", 0.05, 49152, [(5, "a", 0.6), (6, "b", 0.3), (2, "<eos>", 0.05)], "temperature 0.7 sharpened"),
        Stage("top_k", 0.0, 2, [(5, "a", 0.67), (6, "b", 0.33), (2, "<eos>", 0.0)], "top-k 2 kept 2 of 49152 tokens"),
        Stage("min_p", 0.0, 1, [(5, "a", 1.0), (6, "b", 0.0)], "min-p 0.6 kept 1 of 2 tokens"),
    ]
    record = StepRecord(0, 5, "a", 0.1, 0.0, 0.5, 1.0, 1.0, 0.0, [TopToken(5, "a", 0.5, 1.0)], stages)
    trace = Trace("m", "p", {"max_new_tokens": 4}, [VariantTrace("baseline", [], 3, [5], "a", [record])])
    figure = charts.stages_figure(trace, 0, 0)
    bars = figure.data
    assert [b.name for b in bars] == ["raw", "temperature", "top_k", "min_p"]
    assert [a.text for a in figure.layout.annotations] == ["raw · 49152 kept", "temperature · 49152 kept",
                                                           "top_k · 2 kept", "min_p · 1 kept"]
    assert all(list(b.y) == ["'<eos>'", "'b'", "'a' ◀"] for b in bars)  # most likely on top, chosen marked
    assert list(bars[0].x) == [0.1, 0.3, 0.5]
    assert list(bars[3].x) == [0.0, 0.0, 1.0]  # EOS is not listed after min-p, which kept 1 token: exactly 0
    assert list(bars[0].marker.color) == ["#1f77b4", "#1f77b4", "#ff7f0e"]
    assert "min-p 0.6 kept 1 of 2 tokens" in bars[3].hovertext[0]
    assert charts.stages_figure(trace, 0, 3).data == ()


@pytest.mark.parametrize("case", ["spread", "sharp", "masked", "ties", "one_token", "flat"])
def test_top_p_from_candidates_keeps_exactly_the_tokens_the_full_sort_keeps(case):
    """The decode loop's top-p looks at each row's 512 likeliest tokens instead of sorting the vocabulary; the
    tokens it keeps are transformers' own, including where it must hand a row to the full sort (ties at the cut,
    more tokens kept than candidates)."""
    from transformers import TopPLogitsWarper

    from playground.samplers import PartialTopPLogitsWarper

    generator = torch.Generator().manual_seed(0)
    scale = {"spread": 4.0, "sharp": 12.0, "masked": 4.0, "ties": 3.0, "one_token": 1.0, "flat": 0.05}[case]
    for top_p in (0.05, 0.5, 0.9, 0.95, 0.999):
        scores = torch.randn(8, 32000, generator=generator) * scale
        if case == "masked":
            scores[:, ::2] = float("-inf")  # an earlier stage (top-k, a ban) removed half the vocabulary
        elif case == "ties":
            scores = scores.round()  # many equal logits, some straddling the cut
        elif case == "one_token":
            scores[:, 7] = 50.0
        ours = PartialTopPLogitsWarper(top_p)(None, scores)
        theirs = TopPLogitsWarper(top_p)(None, scores)
        assert torch.equal(ours, theirs), (case, top_p)
