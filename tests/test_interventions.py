"""Stop interventions: properties of the processors, the article reproduction, and real generations with SmolLM2."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

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
    boundary_token_ids,
    build_interventions,
    default_params,
    parse_interventions,
)
from playground.prompts import encode_prompt, render_prompt

PARIS = "What can I do in Paris?"  # rambles with the chat template: no EOS within 300 tokens
SHORT = "What is the capital of France? Answer in one word."  # "The capital of France is Paris." then EOS
LOOP = "I like Paris. I like Paris. I like Paris. I like Paris."  # raw text: falls into "I'm going to Paris." loops
RUNNERS = ("generate", "pipeline")

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


def test_boundary_tokens_of_the_real_tokenizer(tokenizer):
    ids = set(boundary_token_ids(tokenizer))
    def single(text):
        [token] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return token
    for text in (".", "!", "?", "\n", '."', "\n\n"):
        assert single(text) in ids, text
    for text in (" Paris", ",", ":", " the"):
        assert single(text) not in ids, text
    assert tokenizer.eos_token_id not in ids

    processor = EosRewardLogitsProcessor(tokenizer.eos_token_id, 10, prompt_length=1, reward_start_ratio=0.0,
                                         at_boundary=True, tokenizer=tokenizer)
    scores = torch.zeros(1, len(tokenizer))
    def bonus_after(text):
        generated = tokenizer(text, add_special_tokens=False)["input_ids"]
        out = processor(torch.tensor([[0] + generated]), scores)
        return out[0, tokenizer.eos_token_id].item()
    assert bonus_after(" your guide.") > 0
    assert bonus_after(" a list:\n") > 0
    assert bonus_after(" your guide") == 0
    assert bonus_after("\n1.") == 0, "a list number is not the end of a sentence"


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


def test_min_new_tokens_then_decay_is_nan_free_through_the_built_list(tokenizer):
    built = build_interventions([{"name": "decay_penalty", "start": 0, "factor": 10.0}, {"name": "min_new_tokens", "n": 30}],
                                tokenizer=tokenizer, eos_token_ids=[2], max_new_tokens=60, prompt_length=5)
    scores = torch.randn(1, 50)
    for step in range(0, 60):
        out = built.logits_processors(torch.zeros(1, 5 + step, dtype=torch.long), scores)
        assert not out.isnan().any()
        assert (out[0, 2] == -math.inf) == (step < 30)


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


def test_stop_strings_count_only_generated_text(tokenizer):
    from transformers import StopStringCriteria

    prompt_ids = encode_prompt(tokenizer, PARIS)  # ends with "assistant\n"
    [newline] = tokenizer("\n", add_special_tokens=False)["input_ids"]
    built = build_interventions([{"name": "stop_strings", "strings": ["\n\n"]}], tokenizer=tokenizer,
                                eos_token_ids=[2], max_new_tokens=10, prompt_length=len(prompt_ids))
    one_newline = torch.tensor([prompt_ids + [newline]])
    assert StopStringCriteria(tokenizer, ["\n\n"])(one_newline, None)[0], "precondition: upstream matches across"
    assert built.stop_reason(one_newline, None) is None
    assert built.stop_reason(torch.tensor([prompt_ids + [newline, newline]]), None) == ("stop_string", "\n\n")


# ----------------------------------------------------------------------------------------------------------------
# Declarative description


def test_registry_names_and_descriptions():
    assert INTERVENTION_NAMES == ("eos_reward", "seed_article", "stop_strings", "decay_penalty", "min_new_tokens",
                                  "ban_eos", "repetition_stop", "concise_suffix", "chat_template")
    assert set(DESCRIPTIONS) == set(INTERVENTION_NAMES) and all(DESCRIPTIONS.values())


def test_an_intervention_is_declared_once_with_its_export_line_and_its_stage(tokenizer):
    """Each spec writes its own line for the export, and its stage orders both the processors the engine applies
    and the lines the export writes: EOS bans first, so a boost cannot undo them."""
    from playground.export import export_code
    from playground.interventions import SPECS

    for name, spec in SPECS.items():
        assert spec.export.place in ("argument", "logits_processor", "stopping_criteria", "prompt")
        assert spec.export.text(default_params(name), 16, "generate").strip()
    built = build_interventions(list(SPECS), tokenizer=tokenizer, eos_token_ids=[2], max_new_tokens=16, prompt_length=4)
    assert [type(p).__name__ for p in built.logits_processors] == [
        "_SuppressTokens", "MinNewTokensLengthLogitsProcessor", "FiniteExponentialDecayLengthPenalty",
        "SeedEosTokenRewardLogitsProcessor", "_MemoizedEosReward"]
    code = export_code(["eos_reward", "seed_article"], model_reference="default", prompt="Hi", system_prompt=None,
                       use_chat_template=True, max_new_tokens=16, temperature=0.0, top_p=1.0, top_k=0, seed=0)
    assert code.index("    SeedEosTokenRewardLogitsProcessor(") < code.index("    EosRewardLogitsProcessor(")


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


def test_built_processors_never_modify_the_callers_scores(tokenizer):
    everything = list(INTERVENTION_NAMES)
    built = build_interventions(everything, tokenizer=tokenizer, eos_token_ids=[2], max_new_tokens=20, prompt_length=4)
    assert built.prompt_suffix == " Answer in 5 sentences or fewer."
    assert built.use_chat_template is True and built.stop_strings == ["\n\n"]
    scores = torch.randn(2, len(tokenizer))
    original = scores.clone()
    for step in range(20):
        built.logits_processors(torch.zeros(1, 4 + step, dtype=torch.long), scores[0:1])
    assert torch.equal(scores, original)


def test_built_without_prompt_length_matches_built_with_it(tokenizer):
    items = [{"name": "min_new_tokens", "n": 3}, {"name": "decay_penalty", "start": 2, "factor": 1.5},
             {"name": "eos_reward", "reward_start_ratio": 0.3}]
    lazy = build_interventions(items, tokenizer=tokenizer, eos_token_ids=[2, 0], max_new_tokens=12, prompt_length=None)
    explicit = build_interventions(items, tokenizer=tokenizer, eos_token_ids=[2, 0], max_new_tokens=12, prompt_length=6)
    scores = torch.randn(1, 64)
    for step in range(12):
        ids = torch.zeros(1, 6 + step, dtype=torch.long)
        assert torch.equal(lazy.logits_processors(ids, scores), explicit.logits_processors(ids, scores))


# ----------------------------------------------------------------------------------------------------------------
# Real generations with SmolLM2-135M-Instruct, through model.generate() and pipeline("text-generation")


@dataclass
class Run:
    new_ids: list[int]
    sequence: torch.LongTensor
    built: object
    scores: tuple | None = None
    logits: tuple | None = None

    def text(self, tokenizer) -> str:
        return tokenizer.decode(self.new_ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def text_pipeline(smollm):
    from transformers import pipeline

    return pipeline("text-generation", model=smollm.model, tokenizer=smollm.tokenizer)


def run(smollm, items, prompt, max_new_tokens, runner="generate", pipe=None) -> Run:
    """Greedy generation with the interventions, the way a user would wire them into either API."""
    tokenizer = smollm.tokenizer
    eos_ids = smollm.info.eos_token_ids
    # The pipeline path leaves prompt_length to the processors (first call), the generate path passes it.
    built = build_interventions(items, tokenizer=tokenizer, eos_token_ids=eos_ids, max_new_tokens=max_new_tokens, prompt_length=None)
    chat = True if built.use_chat_template is None else built.use_chat_template
    prompt_ids = encode_prompt(tokenizer, prompt + built.prompt_suffix, use_chat_template=chat)
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if runner == "pipeline":
        text = render_prompt(tokenizer, prompt + built.prompt_suffix, use_chat_template=chat)
        [result] = pipe(text, add_special_tokens=not chat, return_tensors=True, logits_processor=built.logits_processors,
                        stopping_criteria=built.stopping_criteria, **options)
        assert result["generated_token_ids"][:len(prompt_ids)] == prompt_ids
        return Run(result["generated_token_ids"][len(prompt_ids):], torch.tensor([result["generated_token_ids"]]), built)
    built = build_interventions(items, tokenizer=tokenizer, eos_token_ids=eos_ids, max_new_tokens=max_new_tokens,
                                prompt_length=len(prompt_ids))
    input_ids = torch.tensor([prompt_ids])
    out = smollm.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), logits_processor=built.logits_processors,
                                stopping_criteria=built.stopping_criteria, output_scores=True, output_logits=True,
                                return_dict_in_generate=True, **options)
    return Run(out.sequences[0, len(prompt_ids):].tolist(), out.sequences, built, out.scores, out.logits)


@pytest.fixture(scope="module")
def paris_baseline(smollm) -> Run:
    baseline = run(smollm, [], PARIS, 60)
    assert len(baseline.new_ids) == 60 and smollm.tokenizer.eos_token_id not in baseline.new_ids
    return baseline


def eos_step(smollm, new_ids) -> int | None:
    eos = [i for i, token in enumerate(new_ids) if token in smollm.info.eos_token_ids]
    return eos[0] if eos else None


@pytest.mark.parametrize("runner", RUNNERS)
def test_ban_eos_makes_a_short_answer_run_to_max_new_tokens(smollm, text_pipeline, runner):
    baseline = run(smollm, [], SHORT, 20)
    assert eos_step(smollm, baseline.new_ids) is not None and len(baseline.new_ids) < 12
    banned = run(smollm, ["ban_eos"], SHORT, 20, runner, text_pipeline)
    assert len(banned.new_ids) == 20 and eos_step(smollm, banned.new_ids) is None
    assert banned.new_ids[:len(baseline.new_ids) - 1] == baseline.new_ids[:-1]


@pytest.mark.parametrize("runner", RUNNERS)
def test_eos_reward_stops_the_rambling_answer_after_the_ramp_starts(smollm, text_pipeline, paris_baseline, runner):
    result = run(smollm, [{"name": "eos_reward", "reward_start_ratio": 0.5}], PARIS, 60, runner, text_pipeline)
    stop = eos_step(smollm, result.new_ids)
    assert stop is not None and 30 <= stop < 59, result.text(smollm.tokenizer)
    assert result.new_ids[:stop] == paris_baseline.new_ids[:stop], "nothing may change before the model stops"


@pytest.mark.parametrize("runner", RUNNERS)
def test_eos_reward_at_boundary_ends_on_a_sentence_or_line_end(smollm, text_pipeline, runner):
    items = [{"name": "eos_reward", "reward_start_ratio": 0.5, "at_boundary": True}]
    result = run(smollm, items, PARIS, 60, runner, text_pipeline)
    assert eos_step(smollm, result.new_ids) == len(result.new_ids) - 1
    assert result.text(smollm.tokenizer).rstrip(" ").endswith((".", "!", "?", "\n"))


@pytest.mark.parametrize("runner", RUNNERS)
def test_stop_string_spanning_several_tokens_stops_right_after_it(smollm, text_pipeline, paris_baseline, runner):
    stop = "City of Light"
    assert stop in paris_baseline.text(smollm.tokenizer)
    result = run(smollm, [{"name": "stop_strings", "strings": ["\n\n", stop]}], PARIS, 60, runner, text_pipeline)
    tokenizer = smollm.tokenizer
    assert result.text(tokenizer).endswith(stop) and len(result.new_ids) < 20
    assert not any(stop in tokenizer.decode([token]) for token in result.new_ids), "the string spans several tokens"
    assert stop not in tokenizer.decode(result.new_ids[:-1])
    assert result.built.stop_reason(result.sequence, None) == ("stop_string", stop)


@pytest.mark.parametrize("runner", RUNNERS)
def test_repetition_stop_ends_a_degenerate_loop(smollm, text_pipeline, runner):
    raw = {"name": "chat_template", "enabled": False}
    baseline = run(smollm, [raw], LOOP, 32)
    assert len(baseline.new_ids) == 32
    result = run(smollm, [raw, {"name": "repetition_stop", "ngram_size": 6, "repeats": 3}], LOOP, 32, runner, text_pipeline)
    ids = result.new_ids
    assert 18 <= len(ids) < 32 and ids == baseline.new_ids[:len(ids)]
    assert ids[-18:] == ids[-6:] * 3
    assert result.built.stop_reason(result.sequence, None) == ("repetition", None)
    assert result.built.stop_reason(result.sequence[:, :-1], None) is None


@pytest.mark.parametrize("runner", RUNNERS)
def test_min_new_tokens_with_decay_penalty_stops_soon_after_the_minimum_without_nan(smollm, text_pipeline, runner):
    items = [{"name": "min_new_tokens", "n": 20}, {"name": "decay_penalty", "start": 0, "factor": 2.0}]
    result = run(smollm, items, PARIS, 50, runner, text_pipeline)
    stop = eos_step(smollm, result.new_ids)
    assert stop is not None and 20 <= stop < 30
    if result.scores is not None:
        assert not any(step.isnan().any() for step in result.scores)
        assert all(result.scores[step][0, 2] == -math.inf for step in range(20))


@pytest.mark.parametrize("runner", RUNNERS)
def test_seed_article_stops_at_the_first_token_the_model_is_unsure_of(smollm, text_pipeline, runner):
    result = run(smollm, ["seed_article"], PARIS, 40, runner, text_pipeline)
    stop = eos_step(smollm, result.new_ids)
    assert stop is not None and stop < 20
    if result.logits is not None:
        # EOS is pinned to 100 and positive logits are stretched by 0.8 * 100 / e^2, so the model goes on only while
        # its best raw logit is above 100 / 10.83 ~ 9.2.
        threshold = 100 / (int(40 * 0.8) / 40 * 100 / math.e**2)
        best = [step[0].max().item() for step in result.logits]
        assert all(value > threshold for value in best[:stop]) and best[stop] < threshold


def test_concise_suffix_and_chat_template_shape_the_prompt(tokenizer):
    built = build_interventions([{"name": "concise_suffix", "sentences": 3}, {"name": "chat_template", "enabled": False}],
                                tokenizer=tokenizer, eos_token_ids=[2], max_new_tokens=10, prompt_length=None)
    assert built.prompt_suffix == " Answer in 3 sentences or fewer." and built.use_chat_template is False
    templated = tokenizer.decode(encode_prompt(tokenizer, PARIS + built.prompt_suffix, use_chat_template=True))
    assert "Paris? Answer in 3 sentences or fewer.<|im_end|>" in templated


def test_stop_string_tables_are_bounded_per_tokenizer(tokenizer):
    """A public app sees endless new stop strings; their tables must not pile up in memory."""
    from playground.interventions import STOP_STRING_CACHE_SIZE, _tokenizer_cache

    for n in range(STOP_STRING_CACHE_SIZE + 10):
        build_interventions([{"name": "stop_strings", "params": {"strings": [f"STOP{n}"]}}], tokenizer=tokenizer,
                            eos_token_ids=[2], max_new_tokens=4, prompt_length=None)
    cache = _tokenizer_cache(tokenizer)["stop_strings"]
    assert len(cache) == STOP_STRING_CACHE_SIZE
    assert f"STOP{STOP_STRING_CACHE_SIZE + 9}" in cache and "STOP0" not in cache
