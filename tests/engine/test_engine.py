"""The side-by-side engine: parity with generate(), batching, streaming, cancellation, telemetry, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from tests.support import make_tiny_llama
from playground.engine import Comparison, Settings, Variant, compare
from playground.interventions import build_interventions, parse_interventions
from playground.models import LoadedModel, ModelInfo, eos_token_ids, stop_token_ids
from playground.prompts import encode_prompt

PARIS = "What can I do in Paris?"


def generate_reference(bundle, prompt, n, interventions=(), **kwargs):
    """Plain transformers generate() on the same prompt ids, with the same interventions."""
    ids = torch.tensor([encode_prompt(bundle.tokenizer, prompt)])
    built = build_interventions(parse_interventions(list(interventions)), tokenizer=bundle.tokenizer,
                                eos_token_ids=bundle.info.eos_token_ids, max_new_tokens=n, prompt_length=ids.shape[1])
    out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                logits_processor=built.logits_processors, return_dict_in_generate=True,
                                output_logits=True, output_scores=True, pad_token_id=bundle.tokenizer.pad_token_id,
                                **kwargs)
    return ids, out


def test_greedy_baseline_matches_generate_tokens_and_raw_p_eos(smollm):
    n = 40
    trace = compare(smollm, PARIS, [Variant("baseline")], Settings(max_new_tokens=n))
    ids, out = generate_reference(smollm, PARIS, n, do_sample=False)
    expected = out.sequences[0, ids.shape[1]:].tolist()
    variant = trace.variants[0]
    assert variant.token_ids == expected
    assert variant.stop_reason == "max_new_tokens"
    eos = smollm.info.eos_token_ids
    expected_p_eos = [torch.softmax(logits[0].float(), -1)[eos].sum().item() for logits in out.logits]
    assert [s.p_eos_raw for s in variant.steps] == pytest.approx(expected_p_eos, rel=1e-4, abs=1e-7)
    assert variant.text == smollm.tokenizer.decode(expected)


def test_batched_and_left_padded_rows_match_their_solo_generate(smollm):
    """Baseline shares a batch with a longer (concise-suffix) prompt: padding must not change its tokens."""
    n = 30
    trace = compare(smollm, PARIS, [Variant("baseline"), Variant("concise", ["concise_suffix"])], Settings(max_new_tokens=n))
    base, concise = trace.variants
    assert concise.prompt_tokens > base.prompt_tokens  # so the baseline row really was left-padded
    ids, out = generate_reference(smollm, PARIS, n, do_sample=False)
    assert base.token_ids == out.sequences[0, ids.shape[1]:].tolist()
    suffix = build_interventions(parse_interventions(["concise_suffix"]), tokenizer=smollm.tokenizer,
                                 eos_token_ids=[2], max_new_tokens=n, prompt_length=None).prompt_suffix
    ids2, out2 = generate_reference(smollm, PARIS + suffix, n, do_sample=False)
    generated = out2.sequences[0, ids2.shape[1]:].tolist()
    assert concise.token_ids == generated[: len(concise.token_ids)]


def test_sampled_final_distribution_matches_generate_scores(smollm):
    """At several steps, the engine's final distribution equals generate()'s processed scores for that prefix."""
    n = 24
    settings = Settings(max_new_tokens=n, temperature=0.8, top_k=40, top_p=0.9, seed=3)
    interventions = [{"name": "eos_reward", "params": {"reward_start_ratio": 0.25}}]
    trace = compare(smollm, PARIS, [Variant("ramp", interventions)], settings)
    variant = trace.variants[0]
    prompt_ids = encode_prompt(smollm.tokenizer, PARIS)
    checked = 0
    for step in (0, 5, 10, len(variant.steps) - 1):
        prefix = torch.tensor([prompt_ids + variant.token_ids[:step]])
        built = build_interventions(parse_interventions(interventions), tokenizer=smollm.tokenizer,
                                    eos_token_ids=[2], max_new_tokens=n, prompt_length=len(prompt_ids))
        out = smollm.model.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=1, do_sample=True,
                                    temperature=0.8, top_k=40, top_p=0.9, logits_processor=built.logits_processors,
                                    return_dict_in_generate=True, output_scores=True, pad_token_id=2)
        probs = torch.softmax(out.scores[0][0].float(), -1)
        record = variant.steps[step]
        for top in record.top_k:
            assert top.p == pytest.approx(probs[top.token_id].item(), abs=1e-5)
        assert record.p_eos == pytest.approx(probs[2].item(), abs=1e-6)
        checked += 1
    assert checked == 4
    assert variant.steps[-1].p_eos > variant.steps[0].p_eos  # the ramp really raised p(EOS) late in the run


def test_same_seed_gives_same_samples_and_identical_columns_agree(tiny):
    settings = Settings(max_new_tokens=20, temperature=1.0, seed=7)
    first = compare(tiny, "Hello there", [Variant("a"), Variant("b")], settings)
    second = compare(tiny, "Hello there", [Variant("a")], Settings(max_new_tokens=20, temperature=1.0, seed=7))
    assert first.variants[0].token_ids == first.variants[1].token_ids == second.variants[0].token_ids
    assert first.variants[1].diverges_at is None
    other = compare(tiny, "Hello there", [Variant("a")], Settings(max_new_tokens=20, temperature=1.0, seed=8))
    assert other.variants[0].token_ids != first.variants[0].token_ids


def test_rows_finish_independently_and_report_why(tiny):
    # The article's processor pins EOS to 100 from the first step: an unsure (random) model stops at once.
    trace = compare(tiny, "Hello", [Variant("baseline", ["ban_eos"]), Variant("forced", ["seed_article"])], Settings(max_new_tokens=12))
    base, stopped = trace.variants
    assert stopped.stop_reason == "eos" and len(stopped.steps) == 1
    assert stopped.diverges_at == 0
    assert base.stop_reason == "max_new_tokens" and len(base.token_ids) == 12
    assert "EOS" in stopped.status() and "max new tokens" in base.status()


def test_stop_string_is_trimmed_and_never_shown_partially(tiny):
    trace = compare(tiny, "Hello", [Variant("free")], Settings(max_new_tokens=25))
    text = trace.variants[0].text
    stop = text[8:14]  # a multi-token stretch the model is known to write
    assert len(stop.strip()) >= 2
    trace = compare(tiny, "Hello", [Variant("stops", [{"name": "stop_strings", "params": {"strings": [stop]}}])],
                    Settings(max_new_tokens=25))
    variant = trace.variants[0]
    assert variant.stop_reason == "stop_string" and variant.stop_detail == stop
    assert stop not in variant.text and text.startswith(variant.text)


def test_streaming_yields_as_rows_advance_and_cancel_stops_within_one_step(tiny):
    comparison = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"])],
                            Settings(max_new_tokens=200))
    seen = []
    for trace in comparison.run():
        seen.append(len(trace.variants[0].steps))
        if len(seen) == 3:
            comparison.cancel()
            at_cancel = len(trace.variants[0].steps)
    assert seen == sorted(seen) and seen[0] >= 1 and len(set(seen[:3])) == 3  # every yield brings new steps
    assert all(v.stop_reason == "cancelled" for v in trace.variants)
    assert len(trace.variants[0].steps) <= at_cancel + 1


def test_closing_the_stream_marks_running_rows_cancelled(tiny):
    comparison = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=400))
    stream = comparison.run()
    next(stream)
    next(stream)
    stream.close()
    assert comparison.trace.variants[0].stop_reason == "cancelled"


def test_timeout_guard(tiny):
    trace = compare(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=400, timeout_seconds=1e-4))
    assert trace.variants[0].stop_reason == "timeout"
    assert len(trace.variants[0].steps) < 400


def test_telemetry_is_consistent(tiny):
    trace = compare(tiny, "Hello", [Variant("sampled")], Settings(max_new_tokens=6, temperature=0.7, top_k=20, top_p=0.8))
    for record in trace.variants[0].steps:
        assert [s.name for s in record.stages] == ["raw", "interventions", "temperature", "top_k", "top_p"]
        assert record.stages[0].p_eos == pytest.approx(record.p_eos_raw)
        assert record.stages[-1].p_eos == pytest.approx(record.p_eos)
        assert record.stages[3].kept <= 20 and record.stages[4].kept <= record.stages[3].kept
        assert len(record.top_k) == 10
        assert sum(t.p for t in record.top_k) <= 1 + 1e-5
        assert record.token_id in [t for t, _, p in record.stages[-1].top if p > 0] or record.stages[-1].kept > 10
        assert 0 <= record.entropy <= record.entropy_raw + 1e-4  # truncation and T<1 only sharpen


def test_trace_exports_follow_the_cli_schema(tiny):
    trace = compare(tiny, "Hello", [Variant("baseline"), Variant("r", ["eos_reward"])], Settings(max_new_tokens=5))
    data = json.loads(trace.to_json())
    assert set(data) == {"model", "prompt", "settings", "variants"}
    for variant in data["variants"]:
        assert {"name", "interventions", "text", "token_ids", "stop_reason", "steps"} <= set(variant)
        step = variant["steps"][0]
        assert {"step", "token_id", "token", "p_eos_raw", "p_eos", "top_k"} <= set(step)
        assert {"token_id", "token", "p_raw", "p"} <= set(step["top_k"][0])
        assert len(variant["steps"]) == len(variant["token_ids"])
    lines = trace.to_csv().strip().splitlines()
    assert len(lines) == 1 + sum(len(v.steps) for v in trace.variants)


@pytest.mark.parametrize("prompt, settings, variants, field", [
    ("   ", Settings(), [Variant("a")], "prompt"),
    ("Hi", Settings(max_new_tokens=0), [Variant("a")], "max_new_tokens"),
    ("Hi", Settings(max_new_tokens=10**9), [Variant("a")], "max_new_tokens"),
    ("Hi", Settings(temperature=-1), [Variant("a")], "temperature"),
    ("Hi", Settings(temperature=float("nan")), [Variant("a")], "temperature"),
    ("Hi", Settings(top_p=0), [Variant("a")], "top_p"),
    ("Hi", Settings(top_p=2), [Variant("a")], "top_p"),
    ("Hi", Settings(top_k=-5), [Variant("a")], "top_k"),
    ("Hi", Settings(seed=-1), [Variant("a")], "seed"),
    ("Hi", Settings(), [Variant("a", [{"name": "eos_reward", "params": {"reward_start_ratio": 1.5}}])], "reward_start_ratio"),
    ("Hi", Settings(), [Variant("a", ["no_such_thing"])], "no_such_thing"),
    ("Hi", Settings(), [Variant("a"), Variant("a")], "unique"),
    ("word " * 600, Settings(max_new_tokens=10), [Variant("a")], "context window"),
])
def test_bad_input_is_refused_with_the_field_named(tiny, prompt, settings, variants, field):
    with pytest.raises(ValueError, match=field):
        Comparison(tiny, prompt, variants, settings)


@pytest.mark.slow
def test_the_rambling_patient_runs_300_tokens_and_a_late_ramp_ends_it(smollm):
    late = {"name": "eos_reward", "params": {"reward_start_ratio": 0.8}}
    trace = compare(smollm, PARIS, [Variant("baseline"), Variant("ramp", [late])], Settings(max_new_tokens=300))
    base, ramp = trace.variants
    assert base.stop_reason == "max_new_tokens" and len(base.token_ids) == 300
    assert ramp.stop_reason == "eos" and 240 <= len(ramp.token_ids) < 300  # ratio 0.8: starts at 240
    assert ramp.token_ids[:240] == base.token_ids[:240]


def test_short_raw_prompt_matches_generate_bit_for_bit(smollm):
    """A 5-token prompt without the chat template: prefill and decode both take generate()'s numbers."""
    prompt, n = "The capital of France is", 12
    ids = torch.tensor([encode_prompt(smollm.tokenizer, prompt, use_chat_template=False)])
    assert ids.shape[1] <= 16
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                return_dict_in_generate=True, output_logits=True, pad_token_id=2)
    trace = compare(smollm, prompt, [Variant("baseline")], Settings(max_new_tokens=n, use_chat_template=False))
    variant = trace.variants[0]
    assert variant.token_ids == out.sequences[0, ids.shape[1]:].tolist()[: len(variant.token_ids)]
    expected = [torch.softmax(logits[0].float(), -1)[2].item() for logits in out.logits]
    assert [s.p_eos_raw for s in variant.steps] == expected[: len(variant.steps)]  # exactly, not approximately


def test_a_run_resumed_on_other_threads_keeps_working(tiny):
    """Gradio advances a streaming handler on whichever worker thread is free; every step must work there."""
    from concurrent.futures import ThreadPoolExecutor

    comparison = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"])], Settings(max_new_tokens=8))
    stream = comparison.run()
    pools = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
    resumed, trace = 0, None
    try:
        while True:  # a yield whenever rows advanced (several steps at once if the loop ran ahead), then the last
            try:
                trace = pools[resumed % 2].submit(next, stream).result()
            except StopIteration:
                break
            resumed += 1
    finally:
        for pool in pools:
            pool.shutdown()
    assert resumed >= 2 and [len(v.token_ids) for v in trace.variants] == [8, 8]
    assert not torch.is_inference_mode_enabled()


def test_step_texts_add_up_to_the_column_text(tiny):
    """Each step shows the text it added; bytes of a split character wait for the token that completes it."""
    trace = compare(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=60, temperature=1.0, seed=1))
    variant = trace.variants[0]
    joined = "".join(s.token for s in variant.steps)
    assert variant.text.startswith(joined) and len(variant.text) - len(joined) <= 1
    assert "\ufffd" not in joined.rstrip("\ufffd") or "\ufffd" in variant.text
    for step in variant.steps:
        assert step.p_chosen == next((t.p for t in step.top_k if t.token_id == step.token_id), step.p_chosen)
        assert 0 < step.p_chosen <= 1


def test_the_model_generation_config_applies_as_in_generate(tokenizer):
    """A model whose generation config penalises repeats decodes in a column exactly as generate() decodes it."""
    model = make_tiny_llama(tokenizer, seed=3)
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 2
    info = ModelInfo(name="tiny", source="random", num_parameters=0, dtype="float32", device="cpu",
                     context_length=512, eos_token_ids=eos_token_ids(tokenizer, model),
                     stop_token_ids=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
                     has_chat_template=True, load_seconds=0.0, vocab_size=len(tokenizer))
    trace = compare(LoadedModel(model, tokenizer, info), "Hello", [Variant("baseline")], Settings(max_new_tokens=30))
    ids = torch.tensor([encode_prompt(tokenizer, "Hello")])
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    variant = trace.variants[0]
    assert variant.token_ids == expected[: len(variant.token_ids)]
    assert [s.name for s in variant.steps[0].stages[1:3]] == ["repetition_penalty", "no_repeat_ngram"]
    bigrams = list(zip(variant.token_ids, variant.token_ids[1:]))
    assert len(bigrams) == len(set(bigrams))  # no repeated bigram, as the generation config demands
