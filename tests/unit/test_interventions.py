"""Stop interventions on synthetic scores: the ramp, force-at-end and at-boundary, the article's reproduction bit
for bit, the decay penalty without NaN, repetition stop, the registry and parsing with sentences naming the field."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from playground.bench.processors import article_processor_class
from playground.interventions import (
    DESCRIPTIONS,
    INTERVENTION_NAMES,
    SCHEDULES,
    EosRewardLogitsProcessor,
    FiniteExponentialDecayLengthPenalty,
    Intervention,
    RepetitionStoppingCriteria,
    SeedEosTokenRewardLogitsProcessor,
    default_params,
    parse_interventions,
)

finite_or_infinite = st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([-math.inf, math.inf]))


# ----------------------------------------------------------------------------------------------------------------
# EosRewardLogitsProcessor: properties


@st.composite
def ramp_cases(draw):
    vocab = draw(st.integers(3, 40))
    rows = draw(st.integers(1, 4))
    scores = draw(st.lists(st.lists(finite_or_infinite, min_size=vocab, max_size=vocab), min_size=rows, max_size=rows))
    return dict(
        scores=torch.tensor(scores, dtype=torch.float32),
        eos=draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=3, unique=True)),
        max_new_tokens=draw(st.integers(1, 48)),
        ratio=draw(st.floats(0.0, 1.0)),
        strength=draw(st.floats(0.1, 50.0)),
        schedule=draw(st.sampled_from(SCHEDULES)),
        prompt_length=draw(st.integers(0, 6)),
    )


def ids_at_step(prompt_length: int, step: int, rows: int = 1, last: list[int] | None = None) -> torch.LongTensor:
    ids = torch.full((rows, prompt_length + step), 7, dtype=torch.long)
    if last is not None and step > 0:
        ids[:, -1] = torch.tensor(last)
    return ids


@settings(max_examples=60, deadline=None)
@given(ramp_cases())
def test_ramp_touches_only_eos_columns_from_the_start_step_with_a_growing_finite_bonus(case):
    scores = case["scores"]
    original = scores.clone()
    processor = EosRewardLogitsProcessor(case["eos"], case["max_new_tokens"], case["prompt_length"],
                                         reward_start_ratio=case["ratio"], strength=case["strength"],
                                         schedule=case["schedule"])
    start = math.floor(case["ratio"] * case["max_new_tokens"])
    others = [i for i in range(scores.shape[1]) if i not in case["eos"]]
    previous = None
    for step in range(case["max_new_tokens"] + 2):
        out = processor(ids_at_step(case["prompt_length"], step, scores.shape[0]), scores)
        assert torch.equal(scores, original), "scores must not be modified in place"
        assert not out.isnan().any()
        assert torch.equal(out[:, others], scores[:, others])
        if step < start:
            assert torch.equal(out, scores)
        finite = scores[:, case["eos"]].isfinite()
        added = (out[:, case["eos"]] - scores[:, case["eos"]])[finite]
        torch.testing.assert_close(added, torch.full_like(added, processor.bonus_at(step)), rtol=1e-4, atol=1e-2)
        if previous is not None:  # rounding is monotone, so the boosted logits themselves never decrease
            assert (out[:, case["eos"]] >= previous).all()
        previous = out[:, case["eos"]]
    if start < case["max_new_tokens"]:
        assert processor.bonus_at(case["max_new_tokens"] - 1) == pytest.approx(case["strength"])


@settings(max_examples=40, deadline=None)
@given(ramp_cases())
def test_force_at_end_makes_eos_certain_at_the_last_step_only(case):
    scores = case["scores"]
    kwargs = dict(reward_start_ratio=case["ratio"], strength=case["strength"], schedule=case["schedule"])
    forced = EosRewardLogitsProcessor(case["eos"], case["max_new_tokens"], case["prompt_length"], force_at_end=True, **kwargs)
    plain = EosRewardLogitsProcessor(case["eos"], case["max_new_tokens"], case["prompt_length"], **kwargs)
    last = case["max_new_tokens"] - 1
    for step in range(last):
        ids = ids_at_step(case["prompt_length"], step, scores.shape[0])
        assert torch.equal(forced(ids, scores), plain(ids, scores))
    out = forced(ids_at_step(case["prompt_length"], last, scores.shape[0]), scores)
    probabilities = out.softmax(dim=-1)
    assert not probabilities.isnan().any()
    torch.testing.assert_close(probabilities[:, case["eos"]].sum(dim=-1), torch.ones(scores.shape[0]))


@settings(max_examples=60, deadline=None)
@given(ramp_cases(), st.data())
def test_at_boundary_is_decided_per_row_by_each_rows_last_token(case, data):
    scores = case["scores"]
    vocab, rows = scores.shape[1], scores.shape[0]
    boundary = data.draw(st.lists(st.integers(0, vocab - 1), max_size=5, unique=True))
    last = data.draw(st.lists(st.integers(0, vocab + 3), min_size=rows, max_size=rows))  # ids past the vocab too
    step = data.draw(st.integers(0, case["max_new_tokens"] + 1))

    def make():
        return EosRewardLogitsProcessor(case["eos"], case["max_new_tokens"], case["prompt_length"],
                                        reward_start_ratio=case["ratio"], strength=case["strength"],
                                        schedule=case["schedule"], at_boundary=True, boundary_token_ids=boundary)

    ids = ids_at_step(case["prompt_length"], step, rows, last)
    batch = make()(ids, scores)
    one_by_one = torch.cat([make()(ids[i:i + 1], scores[i:i + 1]) for i in range(rows)])
    assert torch.equal(batch, one_by_one)
    plain = EosRewardLogitsProcessor(case["eos"], case["max_new_tokens"], case["prompt_length"],
                                     reward_start_ratio=case["ratio"], strength=case["strength"], schedule=case["schedule"])
    for row in range(rows):
        boosted = step >= 1 and last[row] in boundary  # step 0: the last token is the prompt's own
        expected = plain(ids[row:row + 1], scores[row:row + 1]) if boosted else scores[row:row + 1]
        assert torch.equal(batch[row:row + 1], expected)


def test_prompt_length_none_is_read_from_the_first_call():
    scores = torch.zeros(1, 5)
    explicit = EosRewardLogitsProcessor(2, 10, prompt_length=4, reward_start_ratio=0.0)
    lazy = EosRewardLogitsProcessor(2, 10, reward_start_ratio=0.0)
    for length in range(4, 14):
        ids = torch.zeros(1, length, dtype=torch.long)
        assert torch.equal(lazy(ids, scores), explicit(ids, scores))
    assert lazy.prompt_length == 4


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(reward_start_ratio=1.5), "reward_start_ratio"),
    (dict(strength=-1.0), "strength"),
    (dict(strength=math.inf), "strength"),
    (dict(schedule="cosine"), "schedule"),
    (dict(eos_token_id=[]), "eos_token_id"),
    (dict(eos_token_id=-3), "eos_token_id"),
    (dict(at_boundary=True), "at_boundary"),
])
def test_ramp_rejects_bad_arguments_naming_the_field(kwargs, field):
    arguments = dict(eos_token_id=2, max_new_tokens=10) | kwargs
    with pytest.raises(ValueError, match=field):
        EosRewardLogitsProcessor(**arguments)


# ----------------------------------------------------------------------------------------------------------------
# The article's processor


def slow_seed_reference(rows: list[list[float]], eos_token_id: int, max_length: int) -> list[list[float]]:
    """The article's net effect, one element at a time in plain Python (float64)."""
    first_ratio = int(max_length * 0.8) / max_length
    result = []
    for row in rows:
        out = []
        for index, x in enumerate(row):
            if index == eos_token_id:
                out.append(100.0)
                continue
            for ratio in (first_ratio, 1.0):
                sign = math.nan if math.isnan(x) else (x > 0) - (x < 0)
                x = x * ratio * 10 * math.exp(-sign)
            out.append(x)
        result.append(out)
    return result


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 30).flatmap(lambda vocab: st.tuples(
        st.lists(st.lists(finite_or_infinite, min_size=vocab, max_size=vocab), min_size=1, max_size=3),
        st.integers(0, vocab - 1),
    )),
    st.one_of(st.integers(1, 10), st.sampled_from([100, 300, 500, 4096]), st.integers(11, 5000)),
)
def test_seed_reproduction_equals_the_slow_reference(rows_and_eos, max_length):
    rows, eos = rows_and_eos
    scores = torch.tensor(rows, dtype=torch.float32)
    out = SeedEosTokenRewardLogitsProcessor(eos, max_length)(torch.zeros(1, 3, dtype=torch.long), scores)
    expected = torch.tensor(slow_seed_reference(rows, eos, max_length), dtype=torch.float32)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert out is scores, "like the article, it works in place"


def test_seed_reproduction_matches_the_articles_own_code_bit_for_bit():
    article_class, source = article_processor_class()
    if article_class is None:
        pytest.skip(source)
    generator = torch.Generator().manual_seed(0)
    for max_length in (1, 7, 100, 500):
        scores = torch.randn(2, 300, generator=generator) * 8
        scores[0, 5] = -math.inf
        input_ids = torch.zeros(2, 9, dtype=torch.long)
        expected = article_class(3, max_length)(input_ids, scores.clone())
        actual = SeedEosTokenRewardLogitsProcessor(3, max_length)(input_ids, scores.clone())
        assert torch.equal(actual.isnan(), expected.isnan())
        assert torch.equal(actual.nan_to_num(), expected.nan_to_num())


def test_seed_reproduction_validates_like_the_article_and_can_work_on_a_copy():
    with pytest.raises(ValueError, match="eos_token_id"):
        SeedEosTokenRewardLogitsProcessor(-1, 10)
    with pytest.raises(ValueError, match="max_length"):
        SeedEosTokenRewardLogitsProcessor(2, 0)
    scores = torch.tensor([[5.0, 10.0, -1.0]])
    out = SeedEosTokenRewardLogitsProcessor(0, 100, in_place=False)(None, scores)
    assert torch.equal(scores, torch.tensor([[5.0, 10.0, -1.0]]))
    assert out[0, 0] == 100 and out[0, 1] == pytest.approx(10 * 0.8 * 100 / math.e**2)


# ----------------------------------------------------------------------------------------------------------------
# Other processors and criteria


def test_decay_penalty_never_overflows_or_makes_nan_after_an_eos_ban():
    penalty = FiniteExponentialDecayLengthPenalty((0, 10.0), eos_token_id=[0, 1], input_ids_seq_length=2)
    scores = torch.tensor([[-math.inf, 0.0, 3.0], [-2.0, -math.inf, math.inf]])
    for step in (1, 5, 40, 200, 5000):  # upstream: NaN for the 0.0 logit at 200, OverflowError at 5000
        out = penalty(torch.zeros(2, 2 + step, dtype=torch.long), scores)
        assert not out.isnan().any()
        assert out[0, 0] == -math.inf and out[1, 1] == -math.inf  # a banned EOS stays banned
        assert torch.equal(out[:, 2], scores[:, 2])
    assert out[1, 0] == math.inf or out[1, 0] > 1e20  # a finite EOS logit grows without bound, not into NaN


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=12, max_size=12), min_size=1, max_size=4),
       st.integers(1, 4), st.integers(2, 4), st.integers(0, 6))
def test_repetition_stop_fires_per_row_exactly_when_the_last_ngram_repeats(rows, ngram_size, repeats, prompt_length):
    ids = torch.tensor(rows)
    fired = RepetitionStoppingCriteria(ngram_size, repeats, prompt_length)(ids, None)
    for row, hit in zip(rows, fired.tolist()):
        span = ngram_size * repeats
        tail = row[-span:]
        expected = len(row) - prompt_length >= span and tail == tail[-ngram_size:] * repeats
        assert hit == expected


# ----------------------------------------------------------------------------------------------------------------
# Declarative description


def test_registry_names_and_descriptions():
    assert INTERVENTION_NAMES == ("eos_reward", "seed_article", "stop_strings", "decay_penalty", "min_new_tokens",
                                  "ban_eos", "repetition_stop", "concise_suffix", "chat_template")
    assert set(DESCRIPTIONS) == set(INTERVENTION_NAMES) and all(DESCRIPTIONS.values())


def test_parse_accepts_names_dicts_and_objects_and_fills_defaults():
    parsed = parse_interventions([
        "ban_eos",
        {"name": "eos_reward", "params": {"strength": 5}},
        {"name": "stop_strings", "strings": ["END"]},
        Intervention("concise_suffix", {"sentences": 2}),
    ])
    assert parsed[0] == Intervention("ban_eos", {})
    assert parsed[1].params == default_params("eos_reward") | {"strength": 5.0}
    assert parsed[2].params == {"strings": ["END"]}
    assert parsed[3].params == {"sentences": 2}
    for item in parsed:
        assert Intervention.from_dict(json.loads(json.dumps(item.to_dict()))) == item


@pytest.mark.parametrize("item, message", [
    ("eos_bonus", "allowed: eos_reward, seed_article, stop_strings, decay_penalty, min_new_tokens, ban_eos"),
    ({"name": "eos_reward", "params": {"reward_start_ratio": 1.5}}, r"eos_reward.reward_start_ratio must be a number from 0.0 to 1.0"),
    ({"name": "eos_reward", "params": {"schedule": "cosine"}}, "eos_reward.schedule must be one of linear, exponential"),
    ({"name": "eos_reward", "params": {"at_boundary": "yes"}}, "eos_reward.at_boundary must be true or false"),
    ({"name": "repetition_stop", "params": {"repeats": 1}}, "repetition_stop.repeats must be from 2 to 1000"),
    ({"name": "stop_strings", "params": {"strings": []}}, "stop_strings.strings must be a non-empty list"),
    ({"name": "decay_penalty", "params": {"factor": 0.5}}, r"decay_penalty.factor must be a number from 1.0 to 10.0"),
    ({"name": "min_new_tokens", "params": {"n": -1}}, "min_new_tokens.n must be from 0"),
    ({"name": "ban_eos", "params": {"n": 1}}, "ban_eos: unknown parameter"),
])
def test_parse_rejects_bad_input_naming_field_and_range(item, message):
    with pytest.raises(ValueError, match=message):
        parse_interventions([item])


def test_parse_rejects_duplicates():
    with pytest.raises(ValueError, match="repeated: ban_eos"):
        parse_interventions(["ban_eos", "ban_eos"])
