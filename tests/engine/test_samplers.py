"""Repetition penalty, no-repeat n-grams, min-p and typical-p: parity with generate(), their stage rows and notes,
and bad values refused with a sentence naming the field."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationConfig
from playground.engine import Comparison, Settings, Variant, compare
from playground.pipeline import generation_config_processors, sampling_warpers
from playground.prompts import encode_prompt

PARIS = "What can I do in Paris?"
COMBINED = dict(repetition_penalty=1.2, no_repeat_ngram_size=3, top_k=50, top_p=0.95, min_p=0.05, typical_p=0.9)


def assert_final_distribution_matches(record, scores, eos=2):
    """The engine's final distribution at one step equals softmax(generate()'s processed scores)."""
    probs = torch.softmax(scores.float(), -1)
    for top in record.top_k:
        assert top.p == pytest.approx(probs[top.token_id].item(), abs=1e-5)
    assert record.p_eos == pytest.approx(probs[eos].item(), abs=1e-6)
    assert record.p_chosen == pytest.approx(probs[record.token_id].item(), abs=1e-5)
    assert record.stages[-1].kept == int(torch.isfinite(scores).sum())  # the same tokens survived every cut


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}, {"min_p": 0.1}, {"typical_p": 0.8}, COMBINED,
], ids=["repetition_penalty", "no_repeat_ngram_size", "min_p", "typical_p", "combined"])
def test_sampled_final_distribution_matches_generate_scores(smollm, options):
    n = 16
    trace = compare(smollm, PARIS, [Variant("baseline")], Settings(max_new_tokens=n, temperature=0.8, seed=1, **options))
    variant = trace.variants[0]
    prompt_ids = encode_prompt(smollm.tokenizer, PARIS)
    for step in (0, 5, 10, len(variant.steps) - 1):
        prefix = torch.tensor([prompt_ids + variant.token_ids[:step]])
        # top_k=0 unless given: generate() would otherwise add its default top-k of 50
        out = smollm.model.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=1, do_sample=True,
                                    temperature=0.8, **{"top_k": 0, **options}, return_dict_in_generate=True,
                                    output_scores=True, pad_token_id=2)
        assert_final_distribution_matches(variant.steps[step], out.scores[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}, COMBINED,
], ids=["repetition_penalty", "no_repeat_ngram_size", "combined"])
def test_greedy_tokens_and_distribution_match_generate(smollm, options):
    """The penalty and the n-gram ban change greedy decoding too; min-p, typical-p, top-k and top-p do not."""
    n = 40
    trace = compare(smollm, PARIS, [Variant("baseline")], Settings(max_new_tokens=n, **options))
    variant = trace.variants[0]
    ids = torch.tensor([encode_prompt(smollm.tokenizer, PARIS)])
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                **options, return_dict_in_generate=True, output_scores=True, pad_token_id=2)
    assert variant.token_ids == out.sequences[0, ids.shape[1]:].tolist()
    for step in (0, 7, 20, len(variant.steps) - 1):
        assert_final_distribution_matches(variant.steps[step], out.scores[step][0])
    plain = compare(smollm, PARIS, [Variant("baseline")], Settings(max_new_tokens=n)).variants[0]
    assert variant.token_ids != plain.token_ids  # the setting really changed what greedy decoding wrote
    names = [s.name for s in variant.steps[0].stages]
    assert "min_p" not in names and "typical_p" not in names and "temperature" not in names


def test_stages_come_in_generate_order_each_with_a_note_that_matches_it(smollm):
    n = 12
    trace = compare(smollm, PARIS, [Variant("ramp", ["eos_reward"])], Settings(max_new_tokens=n, temperature=0.8, seed=2, **COMBINED))
    variant = trace.variants[0]
    prompt_ids = encode_prompt(smollm.tokenizer, PARIS)
    for record in variant.steps:
        stages = {s.name: s for s in record.stages}
        assert list(stages) == ["raw", "repetition_penalty", "no_repeat_ngram", "interventions", "temperature",
                                "top_k", "top_p", "min_p", "typical_p"]
        seen = len(set(prompt_ids + variant.token_ids[:record.step]))
        assert stages["repetition_penalty"].note == f"repetition penalty 1.2 lowered {seen} tokens already in the text"
        assert stages["temperature"].note.startswith("temperature 0.8 sharpened")
        assert stages["top_k"].note == "top-k 50 kept 50 of 49152 tokens"
        assert stages["min_p"].note.startswith(f"min-p 0.05 kept {stages['min_p'].kept} of {stages['top_p'].kept} tokens")
        assert stages["typical_p"].note.startswith(f"typical-p 0.9 kept {stages['typical_p'].kept} of {stages['min_p'].kept}")
        assert stages["typical_p"].kept <= stages["min_p"].kept <= stages["top_p"].kept <= 50
        assert all(s.note for s in record.stages)
    data = trace.to_dict(stages=True)["variants"][0]["steps"][0]["stages"]
    assert data[6]["name"] == "top_p" and data[6]["note"] == variant.steps[0].stages[6].note


def test_engine_stage_order_is_the_order_generate_builds(tiny):
    """Read from transformers itself: the processors and warpers generate() would build for these settings."""
    settings = Settings(temperature=0.8, **COMBINED)
    config = GenerationConfig(do_sample=True, temperature=0.8, max_new_tokens=8, **COMBINED)
    theirs = tiny.model._get_logits_processor(config, input_ids_seq_length=5, encoder_input_ids=None,
                                             logits_processor=[], device="cpu", model_kwargs={})
    ours = [*generation_config_processors(tiny.model, 5, 8, repetition_penalty=1.2, no_repeat_ngram_size=3),
            *(warper for _, warper, _ in sampling_warpers(settings))]
    assert len(ours) == len(theirs)  # ours may be a faster subclass giving the same result (top-p)
    assert all(isinstance(mine, type(their)) for mine, their in zip(ours, theirs)), (ours, theirs)


def test_no_repeat_ngrams_ban_and_say_how_many(tiny):
    trace = compare(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=60, no_repeat_ngram_size=1))
    tokens = trace.variants[0].token_ids
    assert len(set(tokens)) == len(tokens)  # n = 1: no token twice
    prompt_ids = encode_prompt(tiny.tokenizer, "Hello")
    for record in trace.variants[0].steps:
        seen = len(set(prompt_ids + tokens[:record.step]))
        assert record.stages[1].note == f"no-repeat 1-grams banned {seen} tokens that would repeat a 1-gram"


def test_a_left_padded_column_is_not_penalised_for_its_padding(tiny):
    """The pad token is EOS here: penalising the padding would lower a padded column's p(EOS)."""
    settings = Settings(max_new_tokens=4, repetition_penalty=2.0)
    together = compare(tiny, "Hello", [Variant("plain"), Variant("concise", ["concise_suffix"])], settings)
    alone = compare(tiny, "Hello", [Variant("plain")], Settings(max_new_tokens=4, repetition_penalty=2.0))
    assert together.variants[1].prompt_tokens > together.variants[0].prompt_tokens
    assert together.variants[0].token_ids == alone.variants[0].token_ids
    assert [s.p_eos for s in together.variants[0].steps] == pytest.approx([s.p_eos for s in alone.variants[0].steps], rel=1e-4)


@pytest.mark.parametrize("field, value, message", [  # the ranges and sentences of request.SETTINGS, as every door
    ("min_p", -0.1, "min_p must be between 0 and 1, got -0.1"),
    ("min_p", 1.5, "min_p must be between 0 and 1, got 1.5"),
    ("typical_p", 0, "typical_p must be between 0.01 and 1, got 0"),
    ("typical_p", 1.2, "typical_p must be between 0.01 and 1, got 1.2"),
    ("repetition_penalty", 0, "repetition_penalty must be between 0.5 and 2, got 0"),
    ("repetition_penalty", -1.5, "repetition_penalty must be between 0.5 and 2, got -1.5"),
    ("no_repeat_ngram_size", -1, "no_repeat_ngram_size must be between 0 and 10, got -1"),
    ("no_repeat_ngram_size", 2.5, "no_repeat_ngram_size must be a whole number, got 2.5"),
    ("min_p", "x", "min_p must be a number, got 'x'"),
    ("typical_p", math.nan, "typical_p must be a finite number"),
])
def test_bad_values_get_a_sentence_naming_the_field(tiny, field, value, message):
    with pytest.raises(ValueError) as error:
        Comparison(tiny, "Hello", [Variant("a")], Settings(**{field: value}))
    assert message in str(error.value)
