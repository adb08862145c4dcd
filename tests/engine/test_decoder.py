"""The shared decode loop: runs from different requests share one batch, join and leave between steps, and still
decode exactly what they decode alone; a slow reader never slows the decode; a model load waits for rows in flight."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from playground.decoder import MAX_ROWS, decode_loop
from playground.engine import Comparison, Settings, Variant, compare, run_all
from playground.prompts import encode_prompt
from playground.service import Playground


def greedy_generate(bundle, prompt: str, n: int) -> list[int]:
    ids = torch.tensor([encode_prompt(bundle.tokenizer, prompt)])
    out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                pad_token_id=bundle.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def wait_until(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_runs_joining_mid_way_keep_greedy_parity_with_generate(smollm):
    """A long run is decoding; two runs with other prompt lengths join it mid-way and leave before it ends.
    Every run's tokens equal plain generate()'s: the padding and the merged cache change nothing."""
    long_prompt = "List every country in Europe with its capital, one per line, and say what each is known for."
    first = Comparison(smollm, long_prompt, [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos", "concise_suffix"])],
                       Settings(max_new_tokens=60))
    joiners = [Comparison(smollm, "Say hi.", [Variant("a")], Settings(max_new_tokens=12)),
               Comparison(smollm, "What can I do in Paris?", [Variant("a")], Settings(max_new_tokens=20))]
    done = []
    first.submit(on_done=done.append)
    wait_until(lambda: len(first.trace.variants[0].steps) >= 3)
    for comparison in joiners:
        comparison.submit(on_done=done.append)
    wait_until(lambda: len(done) == 3)
    assert done[-1] is first  # the joiners finished while the first run was still decoding: they shared its batch
    for comparison in (first, *joiners):
        variant = comparison.trace.variants[0]
        expected = greedy_generate(smollm, comparison.trace.prompt, comparison.settings.max_new_tokens)
        assert variant.token_ids == expected[: len(variant.token_ids)], comparison.trace.prompt
    assert len(first.trace.variants[0].token_ids) == 60


def test_columns_with_the_same_prompt_are_prefilled_once(smollm):
    """Columns that differ only in their interventions share their prompt: the run prefills it once (the prompt
    with concise_suffix's request is another), and each column still decodes what it decodes alone."""
    prompt = "What can I do in Paris?"
    columns = [Variant("a"), Variant("b", ["ban_eos"]), Variant("c", ["concise_suffix"]), Variant("d", ["eos_reward"])]
    prefills = []

    def note(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] > 1:  # a prefill: every prompt position at once
            prefills.append(hidden.shape[0])

    hook = smollm.model.model.layers[0].register_forward_pre_hook(note, with_kwargs=True)
    try:
        together = compare(smollm, prompt, columns, Settings(max_new_tokens=16))
    finally:
        hook.remove()
    assert prefills == [2]
    assert together.variants[0].token_ids == greedy_generate(smollm, prompt, 16)[:len(together.variants[0].token_ids)]
    for column, variant in zip(columns[1:], together.variants[1:]):
        assert variant.token_ids == compare(smollm, prompt, [column], Settings(max_new_tokens=16)).variants[0].token_ids


def test_run_all_bounds_the_rows_and_each_run_decodes_as_it_does_alone(tiny):
    """Sampled runs (each row has its own seeded generator) through run_all, three rows at a time: the same
    tokens as each run alone, every comparison yielded once, never more than max_rows rows in flight."""
    settings = [Settings(max_new_tokens=8 + 4 * k, temperature=1.0, seed=k) for k in range(5)]
    prompts = ["Hello", "Once upon a time", "A", "Tell me about the sea and the sky", "Why?"]

    def variants(k):  # one or two rows each
        return [Variant("a", ["ban_eos"]), Variant("b")] if k % 2 else [Variant("a", ["ban_eos"])]

    alone = [compare(tiny, prompts[k], variants(k), settings[k]) for k in range(5)]
    comparisons = [Comparison(tiny, prompts[k], variants(k), settings[k]) for k in range(5)]
    loop, seen, in_flight = decode_loop(tiny), [], []
    for comparison in run_all(comparisons, max_rows=3):
        in_flight.append(loop.rows_in_flight)
        seen.append(comparison)
    assert sorted(map(id, seen)) == sorted(map(id, comparisons))
    assert max(in_flight) <= 3
    for comparison, reference in zip(comparisons, alone):
        assert [v.token_ids for v in comparison.trace.variants] == [v.token_ids for v in reference.variants]


def test_a_slow_reader_does_not_slow_the_decode_and_gets_the_final_state(tiny):
    comparison = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"])], Settings(max_new_tokens=40))
    yields = 0
    for trace in comparison.run():
        yields += 1
        if yields == 1:
            wait_until(lambda: comparison.done)  # the reader is away; the rows decode to the end without it
    assert yields == 2  # the first step, then everything else at once: the finished trace
    assert [len(v.token_ids) for v in trace.variants] == [40, 40]
    assert [v.token_ids for v in trace.variants] == [v.token_ids for v in compare(
        tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"])], Settings(max_new_tokens=40)).variants]


def test_cancel_and_close_stop_rows_whether_decoding_or_waiting(tiny):
    waiting = Comparison(tiny, "Hello", [Variant("a")], Settings(max_new_tokens=30))
    waiting.cancel()  # cancelled before it joined: it never decodes
    trace = list(waiting.run())[-1]
    assert trace.variants[0].stop_reason == "cancelled" and trace.variants[0].steps == []

    loop = decode_loop(tiny)
    loop.max_rows = 1  # a full batch: the next run waits for room
    try:
        running = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=400))
        queued = Comparison(tiny, "Hi", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=400))
        stream = running.run()
        next(stream)
        queued.submit()
        queued.cancel()  # cancelled while it waits behind a full batch: it leaves without waiting for room
        wait_until(lambda: queued.done, 30)
        assert not running.done and queued.trace.variants[0].steps == []
        stream.close()  # a closed page: its rows leave the batch
        assert running.done and running.trace.variants[0].stop_reason == "cancelled"
    finally:
        loop.max_rows = MAX_ROWS
    wait_until(lambda: loop.rows_in_flight == 0, 10)


def test_a_failing_run_fails_alone_and_the_loop_keeps_serving(tiny):
    broken = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=20))
    healthy = Comparison(tiny, "Hi there", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=20))

    def fail(*args):
        raise RuntimeError("a processor broke")

    broken.choose = fail
    finished = threading.Event()
    healthy.submit(on_done=lambda _: finished.set())
    with pytest.raises(RuntimeError, match="a processor broke"):
        list(broken.run())
    finished.wait(60)
    assert len(healthy.trace.variants[0].token_ids) == 20
    assert len(compare(tiny, "Hello", [Variant("a")], Settings(max_new_tokens=3)).variants[0].steps) >= 1


def test_a_model_load_waits_for_the_rows_in_flight(smollm):
    playground = Playground(smollm)
    comparison = playground.comparison("What can I do in Paris?", [["ban_eos"]], max_new_tokens=24, temperature=0,
                                       top_p=1, top_k=0, seed=0, reward_start_ratio=0.8, strength=12)
    reader = threading.Thread(target=lambda: list(playground.stream(comparison)))
    reader.start()
    wait_until(lambda: len(comparison.trace.variants[0].steps) >= 2)
    playground.load("default")
    assert comparison.done  # the load began after the run ended, which it did on its own
    assert comparison.trace.variants[0].stop_reason == "max_new_tokens"
    assert playground.bundle is not smollm
    reader.join(30)


def test_runs_on_a_sliding_window_model_arriving_together_decode_as_alone(tokenizer):
    """A sliding-window cache is not a plain growing cache: the loop does not merge it (runs take turns)."""
    from transformers import MistralConfig, MistralForCausalLM

    from playground.models import LoadedModel, ModelInfo, eos_token_ids, stop_token_ids

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, sliding_window=8, pad_token_id=tokenizer.pad_token_id)).eval()
    info = ModelInfo(name="tiny-sliding", source="random", num_parameters=0, dtype="float32", device="cpu",
                     context_length=512, eos_token_ids=eos_token_ids(tokenizer, model),
                     stop_token_ids=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
                     has_chat_template=True, load_seconds=0.0, vocab_size=len(tokenizer))
    bundle = LoadedModel(model, tokenizer, info)
    prompts = ["Hello", "Once upon a time there was", "Why?"]
    alone = [compare(bundle, p, [Variant("a", ["ban_eos"])], Settings(max_new_tokens=16)).variants[0].token_ids
             for p in prompts]
    together, done = [Comparison(bundle, p, [Variant("a", ["ban_eos"])], Settings(max_new_tokens=16)) for p in prompts], []
    loop = decode_loop(bundle)
    with loop.paused():  # all three are waiting when it ends: they arrive together, before it knows the cache
        for comparison in together:
            comparison.submit(on_done=done.append)
    wait_until(lambda: len(done) == 3)
    assert [c.trace.variants[0].token_ids for c in together] == alone


def test_columns_sharing_a_prompt_on_a_model_with_convolution_states_decode_as_alone(tokenizer):
    """A cache that holds convolution states besides keys and values (LFM2, like Mamba or Qwen3-Next's linear
    attention): the prompt prefilled once still gives each column its own copy, a column that stops early leaves
    the batch (its rows of those states with it), and each decodes as alone."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    from playground.models import LoadedModel, ModelInfo, eos_token_ids, stop_token_ids

    torch.manual_seed(0)
    model = Lfm2ForCausalLM(Lfm2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, layer_types=["conv", "full_attention"],
        pad_token_id=tokenizer.pad_token_id)).eval()
    info = ModelInfo(name="tiny-conv", source="random", num_parameters=0, dtype="float32", device="cpu",
                     context_length=512, eos_token_ids=eos_token_ids(tokenizer, model),
                     stop_token_ids=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
                     has_chat_template=True, load_seconds=0.0, vocab_size=len(tokenizer))
    bundle = LoadedModel(model, tokenizer, info)
    columns = [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos", "eos_reward"]),
               Variant("c", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.2, "strength": 100}}])]
    settings = Settings(max_new_tokens=12, temperature=1.0, seed=3)
    together = compare(bundle, "Hello there", columns, settings)
    assert [v.stop_reason for v in together.variants] == ["max_new_tokens", "max_new_tokens", "eos"]
    alone = [compare(bundle, "Hello there", [column], settings).variants[0].token_ids for column in columns]
    assert [v.token_ids for v in together.variants] == alone and len(set(alone[0])) > 3
