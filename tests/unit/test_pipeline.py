"""The pure pipeline and telemetry functions on small random tensors, without a model: each against a
straightforward reference implementation (softmax, topk, sort, a loop per row)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import SuppressTokensLogitsProcessor, TopPLogitsWarper

from playground import pipeline, telemetry
from playground.interventions import _SuppressTokens
from playground.pipeline import StageLogits
from playground.samplers import PartialTopPLogitsWarper

INF = float("inf")


def logits(rows: int = 5, vocab: int = 3000, seed: int = 0, scale: float = 4.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("seed", range(4))
def test_top_k_equals_torch_topk_values_and_ids(seed):
    probs = torch.softmax(logits(seed=seed), -1)
    for k in (1, 10, 30):
        ours, theirs = telemetry.top_k(probs, k), torch.topk(probs, k)
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_top_k_with_tied_zeros_after_a_truncation_still_equals_torch_topk():
    probs = torch.softmax(TopPLogitsWarper(0.5)(None, logits(scale=8.0)), -1)  # most probabilities exactly 0
    ours, theirs = telemetry.top_k(probs, 10), torch.topk(probs, 10)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_entropy_equals_minus_sum_p_log_p():
    x = logits()
    x[0, :100] = -INF  # removed tokens add nothing
    probs = torch.softmax(x, -1)
    reference = [-sum(p * math.log(p) for p in row.tolist() if p > 0) for row in probs.double()]
    ours = telemetry.entropy(x, probs, torch.topk(probs, 3).indices)
    assert ours.tolist() == pytest.approx(reference, rel=1e-4)


def test_changed_count_equals_not_equal_count_with_infinities():
    before = logits()
    after = before.clone()
    after[0, [1, 2, 3]] = -INF  # three banned
    after[1, 5] += 1.0
    before[2, 7] = after[2, 7] = -INF  # equal infinities are unchanged
    assert telemetry.changed_count(after, before).tolist() == (after != before).sum(-1).float().tolist()


def test_eos_margin_is_best_other_minus_best_eos():
    x = logits(rows=4, vocab=50)
    eos = torch.tensor([3, 7])
    x[1, 3] = 100.0  # EOS wins this row
    x[2, [3, 7]] = -INF  # banned: +inf
    probs = torch.softmax(x, -1)
    for k in (1, 5):
        ours = telemetry.eos_margin(x, *torch.topk(probs, k), eos=eos)
        for row, margin in zip(x, ours.tolist()):
            others = max(v for i, v in enumerate(row.tolist()) if i not in (3, 7))
            assert margin == pytest.approx(others - max(row[3].item(), row[7].item()), abs=1e-5)


def test_top_of_larger_is_the_top_k_of_the_elementwise_max():
    p_a, p_b = torch.softmax(logits(seed=1), -1), torch.softmax(logits(seed=2), -1)
    k = 8
    ours = telemetry.top_of_larger(p_a, torch.topk(p_a, k).indices, p_b, torch.topk(p_b, k).indices)
    assert torch.equal(ours, torch.topk(torch.maximum(p_a, p_b), k).indices)


def reference_stage_top(probs, before, k):
    """The stage table's top k: kept tokens by probability, then removed ones as the stage before ranked them."""
    rows = []
    for p, b in zip(probs, before):
        kept = int((p > 0).sum())
        top = torch.topk(p, min(k, kept)).indices.tolist()
        removed = [i for i in torch.sort(b, descending=True, stable=True).indices.tolist() if p[i] == 0]
        rows.append(top + removed[:k - len(top)])
    return rows


@pytest.mark.parametrize("keeps_order", [True, False])
def test_stage_top_after_a_truncation_shows_kept_then_removed_tokens(keeps_order):
    x = logits(scale=6.0)
    before = torch.softmax(x, -1)
    after_logits = TopPLogitsWarper(0.6)(None, x)
    after = torch.softmax(after_logits, -1)
    k = 10
    top_p, top_ids = telemetry.stage_top(after, after.sign().sum(-1), before, *torch.topk(before, k),
                                         keeps_order=keeps_order)
    assert top_ids.tolist() == reference_stage_top(after, before, k)
    assert torch.equal(top_p, after.gather(-1, top_ids))


def test_stage_top_of_a_stage_that_changed_eos_alone_reads_only_those_ids():
    x = logits()
    eos = torch.tensor([11])
    boosted = x.index_add(-1, eos, torch.full((len(x), 1), 30.0))
    before, after = torch.softmax(x, -1), torch.softmax(boosted, -1)
    top_p, top_ids = telemetry.stage_top(after, after.sign().sum(-1), before, *torch.topk(before, 5),
                                         keeps_order=False, changed_only=eos)
    assert torch.equal(top_ids, torch.topk(after, 5).indices) and torch.equal(top_p, torch.topk(after, 5).values)


def test_stage_numbers_reuse_the_previous_stage_when_nothing_changed():
    raw = logits()
    eos = torch.tensor([0])
    probs, numbers = telemetry.stage_numbers([raw, raw], ["raw", "interventions"], eos, 5)
    assert probs[1] is probs[0] and numbers[1]["top_ids"] is numbers[0]["top_ids"]
    assert numbers[1]["changed"].tolist() == [0] * len(raw)
    assert torch.equal(probs[0], torch.softmax(raw, -1))
    assert torch.equal(numbers[0]["p_eos"], torch.softmax(raw, -1)[:, 0])


def test_step_records_hold_the_numbers_of_the_final_distribution():
    raw = logits(rows=3, vocab=400)
    eos = torch.tensor([2])
    banned = raw.index_fill(-1, eos, -INF)
    stages = [StageLogits("interventions", banned, lambda s: f"changed {s.changed}")]
    chosen = banned.argmax(-1)
    tokenizer = type("Tokenizer", (), {"__len__": lambda self: 400,
                                       "batch_decode": lambda self, ids: [f"<{i[0]}>" for i in ids]})()
    texts = telemetry.TokenTexts(tokenizer)
    records = telemetry.step_records(raw, stages, chosen, None, eos=eos, k=4, texts=texts)
    p_raw, p = torch.softmax(raw, -1), torch.softmax(banned, -1)
    for row, record in enumerate(records):
        assert record.token_id == chosen[row].item() and record.token == f"<{record.token_id}>"
        assert record.p_eos == 0.0 and record.p_eos_raw == p_raw[row, 2].item()
        assert record.eos_margin is None and record.eos_margin_raw == pytest.approx(
            raw[row].index_fill(0, eos, -INF).max().item() - raw[row, 2].item())
        assert [t.token_id for t in record.top_k] == torch.topk(torch.maximum(p_raw[row], p[row]), 4).indices.tolist()
        assert [s.name for s in record.stages] == ["raw", "interventions"]
        assert record.stages[1].note == "changed 1" and record.stages[1].kept == int((p[row] > 0).sum())


class Row:
    """A pipeline row (pipeline.PipelineRow) without an engine around it."""

    def __init__(self, processors=(), key="", prompt_length=4, forced=()):
        self.prompt_length, self.interventions, self.interventions_key = prompt_length, [], key
        self.logits_processors, self.forced_token_ids = list(processors), list(forced)


def test_interventions_run_per_group_and_leave_the_other_rows_alone():
    raw = logits(rows=4, vocab=100)
    ban = _SuppressTokens([5, 6])
    rows = [Row([ban], "ban"), Row(), Row([ban], "ban"), Row()]
    stage = pipeline.apply_interventions(raw, torch.zeros(4, 6, dtype=torch.long), rows)
    expected = raw.clone()
    expected[[0, 2]] = SuppressTokensLogitsProcessor([5, 6])(None, raw[[0, 2]])
    assert torch.equal(stage.logits, expected)
    assert pipeline.apply_interventions(raw, torch.zeros(4, 6, dtype=torch.long), [Row()] * 4).logits is raw


def test_by_groups_puts_rows_back_in_order():
    x = torch.arange(12.0).view(6, 2)
    out = pipeline.by_groups(x, [[4, 0], [1, 5, 2], [3]], lambda slots, rows: rows + 100 * slots[0])
    assert out.tolist() == [[400.0, 401.0], [102.0, 103.0], [104.0, 105.0], [306.0, 307.0],
                            [408.0, 409.0], [110.0, 111.0]]


def test_choose_greedy_is_argmax_and_a_branch_takes_its_forced_token():
    raw = logits(rows=3, vocab=50)
    ids = torch.zeros(3, 6, dtype=torch.long)  # prompts of 4, padded to 5, one token generated: step 1
    rows = [Row(), Row(forced=[7, 9]), Row(forced=[7])]
    choice = pipeline.choose(raw, ids, rows, processors=[], warpers=[], generator=None, padded_length=5)
    assert choice.tokens.tolist() == [raw[0].argmax().item(), 9, raw[2].argmax().item()]
    assert choice.sampled is None and [s.name for s in choice.stages] == ["interventions"]


def test_sample_draws_what_multinomial_draws_with_each_rows_generator():
    probs = torch.softmax(logits(rows=6, vocab=500, scale=2.0), -1)
    for seed in range(5):
        ours = pipeline.sample(probs, torch.Generator().manual_seed(seed))
        theirs = [torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed)).item() for p in probs]
        assert ours.tolist() == theirs


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99])
def test_partial_top_p_keeps_what_the_full_sort_keeps(top_p):
    for seed, scale in [(0, 1.0), (1, 4.0), (2, 12.0)]:
        x = logits(rows=6, vocab=4000, seed=seed, scale=scale)
        x[0, :5] = x[0, 5]  # ties
        assert torch.equal(PartialTopPLogitsWarper(top_p)(None, x), TopPLogitsWarper(top_p)(None, x))


def test_suppress_tokens_equals_transformers_and_ignores_ids_outside_the_vocabulary():
    x = logits(rows=2, vocab=20)
    assert torch.equal(_SuppressTokens([1, 3, 25])(None, x), SuppressTokensLogitsProcessor([1, 3, 25])(None, x))


def test_first_argmax_is_torch_argmax_with_ties_banned_rows_and_nan():
    """The greedy token and the sampled draw are read with first_argmax: it must pick what argmax picks, the first
    of equal logits included, at any vocabulary size (a last chunk shorter than the others) and chunk size."""
    generator = torch.Generator().manual_seed(1)
    for trial in range(600):
        rows, size = int(torch.randint(1, 9, (1,), generator=generator)), int(torch.randint(1, 3000, (1,),
                                                                                           generator=generator))
        values = torch.randn(rows, size, generator=generator)
        if trial % 3 == 0:
            values = values.round()  # many ties
        if trial % 7 == 0:
            values[:, : size // 2] = -INF
        if trial % 11 == 0:
            values[0] = -INF  # a row with every token banned
        if trial % 13 == 0:
            values[rows - 1, size - 1] = float("nan")
        for chunk in (16, 128):
            assert torch.equal(pipeline.first_argmax(values, chunk=chunk), values.argmax(-1)), (trial, rows, size, chunk)


def test_a_token_text_table_is_shared_and_does_not_keep_its_tokenizer_alive():
    """Every run on a tokenizer reads one table; once the tokenizer is gone (another model loaded), so is its
    table: 49k strings per model would otherwise pile up."""
    import gc
    import weakref

    class Tokenizer:
        def __len__(self):
            return 3

        def batch_decode(self, ids):
            return [f"<{i[0]}>" for i in ids]

        def decode(self, ids):
            return f"<{ids[0]}>"

    tokenizer = Tokenizer()
    table = telemetry.token_texts(tokenizer)
    assert table is telemetry.token_texts(tokenizer) and table[1] == "<1>" and table[7] == "<7>"  # 7: decoded when met
    gone = weakref.ref(table)
    del tokenizer, table
    gc.collect()
    assert gone() is None
