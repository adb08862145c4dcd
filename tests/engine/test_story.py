"""Distance to stopping (the EOS margin) and the sentences that say what happened."""

from __future__ import annotations

import torch

from playground.engine import Settings, Variant, compare
from playground.prompts import encode_prompt
from playground.story import describe, step_explanation

PROMPT = "What can I do in Paris?"


def test_margin_equals_best_other_logit_minus_eos_logit_from_generates_raw_logits(smollm):
    trace = compare(smollm, PROMPT, [Variant("baseline")], Settings(max_new_tokens=12))
    ids = torch.tensor([encode_prompt(smollm.tokenizer, PROMPT, use_chat_template=True)])
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                output_logits=True, return_dict_in_generate=True,
                                pad_token_id=smollm.tokenizer.pad_token_id)
    eos = smollm.info.stop_token_ids
    for step, logits in zip(trace.variants[0].steps, out.logits):
        logits = logits[0].float()
        others = logits.clone()
        others[eos] = float("-inf")
        expected = (others.max() - logits[eos].max()).item()
        assert abs(step.eos_margin_raw - expected) < 1e-3
        assert step.eos_margin == step.eos_margin_raw  # no interventions: nothing moved


def test_where_eos_is_chosen_after_interventions_its_margin_is_not_positive(smollm):
    trace = compare(smollm, PROMPT, [Variant("ramp", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.5}}]),
                                     Variant("ban", ["ban_eos"])], Settings(max_new_tokens=80))
    ramp, ban = trace.variants
    assert ramp.stop_reason == "eos"
    last = ramp.steps[-1]
    assert last.eos_margin <= 0 < last.eos_margin_raw  # the ramp, not the model, made EOS win
    assert all(s.eos_margin > 0 for s in ramp.steps[:-1])  # greedy: EOS lost every step before
    assert all(s.eos_margin is None for s in ban.steps)  # banned: no finite distance
    assert "the interventions add" in step_explanation(last) and "enough: EOS wins" in step_explanation(last)


def test_the_sentences_say_what_happened_in_each_column(smollm):
    variants = [Variant("baseline"), Variant("eos_reward", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.5}}]),
                Variant("seed_article", ["seed_article"]), Variant("stops", [{"name": "stop_strings", "params": {"strings": ["\n\n"]}}])]
    trace = compare(smollm, PROMPT, variants, Settings(max_new_tokens=80))
    baseline, ramp, article, stops = describe(trace)
    assert baseline.startswith("baseline hit the 80-token limit; p(EOS) never rose above")
    assert "logits behind the best token" in baseline
    assert ramp.startswith(f"eos_reward stopped by EOS at step {len(trace.variants[1].steps) - 1} right after")
    assert "(a sentence end)" in ramp and "the interventions moved EOS +" in ramp
    assert "(mid-sentence)" in article and "pins the EOS logit to 100" in article
    assert stops.startswith("stops stopped at step") and "stop string '\\n\\n'" in stops


def test_the_story_names_the_minimum_length_and_explains_no_stop_for_a_cancelled_column(tiny):
    from playground.story import describe_variant
    from playground.trace import Trace

    trace = compare(tiny, "Hello", [Variant("min", [{"name": "min_new_tokens", "params": {"n": 3}}]),
                                    Variant("article", ["seed_article"])], Settings(max_new_tokens=5))
    assert "EOS is banned until the minimum length of 3 tokens" in describe_variant(trace, 0)
    article = trace.variants[1]
    article.stop_reason = "cancelled"
    sentence = describe_variant(Trace(trace.model, trace.prompt, trace.settings, [article]), 0)
    assert sentence.startswith("article was cancelled") and "pins the EOS logit" not in sentence
