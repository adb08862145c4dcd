"""Stop interventions on SmolLM2: the real tokenizer's boundary tokens, the built processor list, and real
generations where each intervention does what it says."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from playground.interventions import (
    INTERVENTION_NAMES,
    EosRewardLogitsProcessor,
    boundary_token_ids,
    build_interventions,
    default_params,
)
from playground.prompts import encode_prompt, render_prompt

PARIS = "What can I do in Paris?"  # rambles with the chat template: no EOS within 300 tokens
SHORT = "What is the capital of France? Answer in one word."  # "The capital of France is Paris." then EOS
LOOP = "I like Paris. I like Paris. I like Paris. I like Paris."  # raw text: falls into "I'm going to Paris." loops
RUNNERS = ("generate", "pipeline")
# pipeline() reaches the same processors as generate() (prompt_length read at their first call): the ramp runs it by
# default, the other interventions with -m slow.
GENERATE_BY_DEFAULT = ("generate", pytest.param("pipeline", marks=pytest.mark.slow))


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


def test_min_new_tokens_then_decay_is_nan_free_through_the_built_list(tokenizer):
    built = build_interventions([{"name": "decay_penalty", "start": 0, "factor": 10.0}, {"name": "min_new_tokens", "n": 30}],
                                tokenizer=tokenizer, eos_token_ids=[2], max_new_tokens=60, prompt_length=5)
    scores = torch.randn(1, 50)
    for step in range(0, 60):
        out = built.logits_processors(torch.zeros(1, 5 + step, dtype=torch.long), scores)
        assert not out.isnan().any()
        assert (out[0, 2] == -math.inf) == (step < 30)


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


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
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


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
def test_eos_reward_at_boundary_ends_on_a_sentence_or_line_end(smollm, text_pipeline, runner):
    items = [{"name": "eos_reward", "reward_start_ratio": 0.5, "at_boundary": True}]
    result = run(smollm, items, PARIS, 60, runner, text_pipeline)
    assert eos_step(smollm, result.new_ids) == len(result.new_ids) - 1
    assert result.text(smollm.tokenizer).rstrip(" ").endswith((".", "!", "?", "\n"))


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
def test_stop_string_spanning_several_tokens_stops_right_after_it(smollm, text_pipeline, paris_baseline, runner):
    stop = "City of Light"
    assert stop in paris_baseline.text(smollm.tokenizer)
    result = run(smollm, [{"name": "stop_strings", "strings": ["\n\n", stop]}], PARIS, 60, runner, text_pipeline)
    tokenizer = smollm.tokenizer
    assert result.text(tokenizer).endswith(stop) and len(result.new_ids) < 20
    assert not any(stop in tokenizer.decode([token]) for token in result.new_ids), "the string spans several tokens"
    assert stop not in tokenizer.decode(result.new_ids[:-1])
    assert result.built.stop_reason(result.sequence, None) == ("stop_string", stop)


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
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


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
def test_min_new_tokens_with_decay_penalty_stops_soon_after_the_minimum_without_nan(smollm, text_pipeline, runner):
    items = [{"name": "min_new_tokens", "n": 20}, {"name": "decay_penalty", "start": 0, "factor": 2.0}]
    result = run(smollm, items, PARIS, 50, runner, text_pipeline)
    stop = eos_step(smollm, result.new_ids)
    assert stop is not None and 20 <= stop < 30
    if result.scores is not None:
        assert not any(step.isnan().any() for step in result.scores)
        assert all(result.scores[step][0, 2] == -math.inf for step in range(20))


@pytest.mark.parametrize("runner", GENERATE_BY_DEFAULT)
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
