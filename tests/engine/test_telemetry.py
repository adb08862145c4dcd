"""The stage tables a user sees (inspector, --stages, /trace with stages) are built lazily from the numbers the
decode kept; they equal the eager computation (a softmax, top-k and counts for every stage) on a recorded run."""

from __future__ import annotations

import pytest
import torch

from playground.engine import Comparison, Settings, Variant, compare
from playground.pipeline import StageFacts
from playground.trace import LazyStages

PARIS = "What can I do in Paris?"


def eager_stages(comparison, raw, stages, slot):
    """Every stage's (name, p_eos, kept, top, note) for one row, computed from its logits the eager way. A stage
    that kept fewer than k tokens shows the ones it removed next, as the stage before it ranked them."""
    eos, k = comparison.eos_ids, comparison.settings.telemetry_top_k
    logits_by_stage = [("raw", raw, lambda s: "the model's own distribution (softmax of its logits)"), *stages]
    table, previous = [], None
    for name, logits, note in logits_by_stage:
        probs = torch.softmax(logits[slot], -1)
        kept, p_eos = int((probs > 0).sum()), probs[eos].sum().item()
        if previous is None or kept >= k:
            top = torch.topk(probs, k)
            top = list(zip(top.indices.tolist(), top.values.tolist()))
        else:  # its kept tokens, then those it removed as the stage before ranked them (ties by id)
            top = torch.topk(probs, kept)
            ranking = torch.sort(torch.softmax(previous[1][slot], -1), descending=True, stable=True).indices
            removed = [i for i in ranking.tolist() if probs[i] == 0]
            top = list(zip(top.indices.tolist(), top.values.tolist())) + [(i, 0.0) for i in removed[:k - kept]]
        changed = 0 if previous is None else int((logits[slot] != previous[1][slot]).sum())
        before = (kept, p_eos) if previous is None else previous[0]
        facts = StageFacts(slot=slot, kept=kept, kept_before=before[0], changed=changed, p_eos_before=before[1], p_eos=p_eos)
        table.append((name, p_eos, kept, [(i, comparison.token_texts[i], p) for i, p in top], note(facts)))
        previous = ((kept, p_eos), logits)
    return table


WARPERS = {"order-keeping": dict(temperature=0.7, top_k=50, top_p=0.9),
           # typical_p removes tokens from both ends; top_k 6 keeps fewer than the 10 a stage table shows
           "truncating": dict(temperature=0.5, top_k=6, typical_p=0.6)}


@pytest.mark.parametrize("warpers", WARPERS.values(), ids=WARPERS.keys())
def test_lazy_stage_tables_equal_the_eager_computation_on_a_recorded_run(tiny, monkeypatch, warpers):
    settings = Settings(max_new_tokens=10, repetition_penalty=1.3, seed=2, **warpers)
    variants = [Variant("baseline"), Variant("ramp", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.3}}])]
    recorded = []
    choose = Comparison.choose

    def recording(self, raw, active):
        choice = choose(self, raw, active)
        recorded.append((self, raw.clone(), [(name, logits.clone(), note) for name, logits, note in choice.stages],
                         list(active)))
        return choice

    monkeypatch.setattr(Comparison, "choose", recording)
    trace = compare(tiny, PARIS, variants, settings)
    compared = truncated = 0
    for step, (comparison, raw, stages, active) in enumerate(recorded):
        for slot, row in enumerate(active):
            record = trace.variants[row].steps[step]
            assert isinstance(record.stages, LazyStages)
            expected = eager_stages(comparison, raw, stages, slot)
            assert [(s.name, s.p_eos, s.kept, s.top, s.note) for s in record.stages] == expected
            assert record.to_dict(stages=True)["stages"][-1]["p_eos"] == expected[-1][1]
            compared += 1
            truncated += any(kept < comparison.settings.telemetry_top_k for _, _, kept, _, _ in expected[1:])
    assert compared == sum(len(v.steps) for v in trace.variants) >= 10
    assert truncated or "top_p" in warpers, "top_k 6 keeps fewer tokens than a stage table shows"
    names = [s.name for s in trace.variants[1].steps[-1].stages]
    assert names == ["raw", "repetition_penalty", "interventions", *warpers]


def test_a_stage_that_changed_nothing_shows_the_previous_stages_numbers(tiny):
    """Greedy without interventions: the interventions stage changed no logit and repeats the raw numbers."""
    trace = compare(tiny, PARIS, [Variant("baseline")], Settings(max_new_tokens=3))
    for record in trace.variants[0].steps:
        raw, after = record.stages
        assert (after.name, after.p_eos, after.kept, after.top) == ("interventions", raw.p_eos, raw.kept, raw.top)
        assert after.note == "no interventions in this column"
        assert record.p_eos == record.p_eos_raw and record.entropy == record.entropy_raw


def test_the_eos_margin_does_not_depend_on_how_many_top_tokens_are_shown(smollm):
    """The margin is read from the top ids; with one top id, EOS itself when it wins, it must still be measured
    against the best other token."""
    one, ten = (compare(smollm, "Say OK.", [Variant("a")], Settings(max_new_tokens=40, telemetry_top_k=k))
                for k in (1, 10))
    assert one.variants[0].stop_reason == "eos"
    assert [s.eos_margin_raw for s in one.variants[0].steps] == [s.eos_margin_raw for s in ten.variants[0].steps]
    assert one.variants[0].steps[-1].eos_margin_raw < 0  # EOS won the last step


def test_a_growing_answer_reads_as_the_whole_decode_at_every_step(tokenizer):
    """The text a column shows while it grows (decoded a few tokens at a time) is, at every step, what decoding
    every token so far gives — with emoji, accents and CJK split over byte tokens, and with random ids — and the
    steps' texts join up to it; the vocabulary table is decode([id]) id by id."""
    import random

    from playground.detokenize import GrowingText, decoder_of
    from playground.telemetry import token_texts

    table = token_texts(tokenizer)
    assert table is token_texts(tokenizer) and len(table) == len(tokenizer)
    assert all(table[i] == tokenizer.decode([i]) for i in range(0, len(tokenizer), 97))
    generator = random.Random(0)
    answers = [tokenizer.encode(text, add_special_tokens=False) for text in
               ["Paris — café, naïve 東京 😀!", "  two spaces\n\nand a 🇫🇷 flag", "👨‍👩‍👧 family"]]
    answers += [[generator.randrange(len(tokenizer)) for _ in range(60)] for _ in range(10)]
    for ids in answers:
        text, pieces = GrowingText(decoder_of(tokenizer)), []
        for end, token_id in enumerate(ids, 1):
            pieces.append(text.add(token_id))
            assert text.text == tokenizer.decode(ids[:end])
        whole = tokenizer.decode(ids)
        joined = "".join(pieces)
        assert joined == whole or (whole.endswith("\ufffd") and whole.startswith(joined))
