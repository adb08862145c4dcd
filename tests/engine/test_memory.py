"""The decode loop under memory pressure: a KV budget bounds the batch's padded positions (runs wait their turn and
still decode what they decode alone); an out-of-memory error in a step, a prefill or a merge stops the newest run
with a sentence and frees its cache while the others finish as if nothing happened; a dead loop thread restarts."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
import torch

from playground.decoder import RunStopped, decode_loop, kv_bytes_per_position, peak_positions
from playground.engine import Comparison, Settings, Variant, compare
from playground.models import LoadedModel
from tests.support import Fault, bundle, loop, make_tiny_llama  # noqa: F401 (bundle, loop: the memory tests' fixtures)


def wait_until(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


PROMPTS = ["Hi", "Tell me about the sea.", "Once upon a time, in a land far away, there lived",
           "Why is the sky blue? Explain it to a child in a few short sentences please.", "A", "List three fruits",
           "What can I do in Paris on a rainy Sunday afternoon with two children and a dog?", "Go"]
COLUMNS = [Variant("a", ["ban_eos"]), Variant("b"), Variant("c", ["ban_eos", "eos_reward"]), Variant("d", ["ban_eos"])]


def run(bundle, prompt: str, new: int = 10) -> Comparison:
    return Comparison(bundle, prompt, COLUMNS, Settings(max_new_tokens=new))


def tokens(run_or_trace) -> list[list[int]]:
    trace = getattr(run_or_trace, "trace", run_or_trace)
    return [v.token_ids for v in trace.variants]


def test_bytes_per_position_count_key_value_heads(bundle):
    """The tiny Llama has 4 query heads and 2 key/value heads: the budget counts what its cache really holds."""
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    cache = bundle.model(input_ids=ids, use_cache=True).cache
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert held == kv_bytes_per_position(bundle.model) * ids.numel() == 2 * 2 * 2 * 16 * 4 * ids.numel()


def test_a_tiny_budget_serves_eight_runs_in_turn_with_the_tokens_they_have_alone(bundle, loop):
    alone = [tokens(compare(bundle, p, COLUMNS, Settings(max_new_tokens=10))) for p in PROMPTS]
    runs = [run(bundle, p) for p in PROMPTS]
    largest = max(4 * (r.padded_length + 9) for r in runs)
    loop.kv_budget = int(2.5 * largest) * loop.position_bytes  # a few runs at once, never all eight
    loop.peak_positions = 0
    done = []
    with loop.paused():  # all eight arrive together, when it ends
        for comparison in runs:
            comparison.submit(on_done=done.append)
    wait_until(lambda: any(c.trace.variants[0].status().startswith("waiting for memory") for c in runs))
    wait_until(lambda: len(done) == 8)
    assert [c.error for c in runs] == [None] * 8
    assert [tokens(c) for c in runs] == alone
    assert largest < loop.peak_positions <= loop.budget_positions  # runs shared the batch, within the budget
    assert loop.memory()["rows_waiting"] == 0 and loop.memory()["kv_in_use_mb"] == 0


def test_a_run_that_cannot_fit_alone_is_refused_with_a_sentence_naming_the_limit(bundle, loop):
    loop.kv_budget = 64 * loop.position_bytes
    with pytest.raises(RunStopped, match=r"max_new_tokens: this run needs up to .* MB of KV cache .*kv_budget_mb"):
        list(run(bundle, "Hello there", new=20).run())
    with pytest.raises(ValueError, match="KV budget"):
        loop.check_fits(run(bundle, "Hello there", new=20))


def test_two_models_on_one_device_share_its_budget(bundle, loop):
    """A second checkpoint decodes in a loop of its own, on the same device: its rows take the memory the loaded
    model's rows would. With room for one run, the checkpoint's run waits while the loaded model's decodes (its
    own batch empty), then decodes what it decodes alone."""
    other = LoadedModel(make_tiny_llama(bundle.tokenizer, seed=2), bundle.tokenizer, bundle.info)
    alone = tokens(compare(other, PROMPTS[2], COLUMNS, Settings(max_new_tokens=12)))
    first, second = run(bundle, PROMPTS[3], new=12), run(other, PROMPTS[2], new=12)
    peak = max(peak_positions(c.padded_length, [11] * len(COLUMNS)) for c in (first, second))
    loop.kv_budget = int(1.5 * peak) * loop.position_bytes
    assert decode_loop(other).kv_budget == loop.kv_budget  # one budget for the device
    decoding, release = threading.Event(), threading.Event()

    def hold(module, args, kwargs):  # the loaded model's run stays in the middle of its decode until released
        if kwargs["input_ids"].shape[1] == 1:
            decoding.set()
            release.wait(60)

    handle = bundle.model.register_forward_pre_hook(hold, with_kwargs=True)
    done = []
    try:
        first.submit(on_done=done.append)
        assert decoding.wait(60)
        second.submit(on_done=done.append)
        wait_until(lambda: second.trace.variants[0].status().startswith("waiting for memory"))
        assert second.trace.variants[0].token_ids == [] and decode_loop(other).memory()["kv_in_use_mb"] == 0
    finally:
        release.set()
        handle.remove()
    wait_until(lambda: len(done) == 2)
    assert [first.error, second.error] == [None, None] and tokens(second) == alone


def started_then_joined(bundle, when_fault, first_new=24):
    """A 2-column run decodes; a 2-column run with another prompt joins it; ``when_fault`` arms a Fault."""
    first = Comparison(bundle, "Tell me about the sea.", COLUMNS[:2], Settings(max_new_tokens=first_new))
    newest = Comparison(bundle, "Once upon a time, in a land far away", COLUMNS[2:], Settings(max_new_tokens=12))
    done = threading.Event()
    first.submit(on_done=lambda _: done.set())
    wait_until(lambda: len(first.trace.variants[0].steps) >= 2)
    fault = when_fault()
    try:
        with pytest.raises(RunStopped, match="ran out of memory for this run; the others continue"):
            list(newest.run())
        done.wait(120)
    finally:
        if isinstance(fault, Fault):
            fault.handle.remove()
    return first, newest, fault


@pytest.mark.parametrize("where", ["step", "prefill"])
def test_out_of_memory_stops_the_newest_run_and_frees_its_cache(bundle, loop, where):
    first_alone = tokens(compare(bundle, "Tell me about the sea.", COLUMNS[:2], Settings(max_new_tokens=24)))
    when = (lambda rows, positions: rows == 4 and positions == 1) if where == "step" else \
           (lambda rows, positions: positions > 1)  # the joining run's prefill
    first, newest, fault = started_then_joined(bundle, lambda: Fault(bundle.model, loop, when))
    assert fault.fired
    assert first.error is None and tokens(first) == first_alone
    assert all(v.stop_reason == "cancelled" for v in newest.trace.variants)  # the page still holds its state
    gc.collect()
    assert [ref() for ref in fault.refs] == [None] * len(fault.refs)  # no traceback or page state keeps it alive
    wait_until(lambda: loop.rows_in_flight == 0)
    assert loop.memory()["kv_in_use_mb"] == 0


def test_out_of_memory_while_merging_stops_the_joining_run_and_the_batch_goes_on(bundle, loop, monkeypatch):
    import playground.compat as compat

    first_alone = tokens(compare(bundle, "Tell me about the sea.", COLUMNS[:2], Settings(max_new_tokens=24)))
    pad, calls, refs = compat._left_pad, [], []

    def failing_pad(states, width):  # the 5th call is the second layer's keys: the first layer is merged by then
        calls.append(width)
        refs.append(weakref.ref(states))
        if len(calls) == 5:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return pad(states, width)

    first, newest, _ = started_then_joined(bundle, lambda: monkeypatch.setattr(compat, "_left_pad", failing_pad))
    assert len(calls) == 5
    assert first.error is None and tokens(first) == first_alone  # the merged first layer was put back
    gc.collect()
    assert [ref() for ref in refs[1::2]] == [None, None]  # the joining run's prefilled keys and values are gone


def test_the_decode_thread_restarts_after_it_dies(bundle, loop, monkeypatch):
    take = loop._take_waiting

    def broken():
        monkeypatch.setattr(loop, "_take_waiting", take)  # once
        raise KeyError("injected")

    monkeypatch.setattr(loop, "_take_waiting", broken)
    with pytest.raises(RunStopped, match="decode loop failed"):
        list(run(bundle, "Hi", new=4).run())
    wait_until(lambda: loop._thread is None, 10)
    again = run(bundle, "Hi", new=4)
    assert all(len(v.token_ids) == 4 or v.stop_reason == "eos" for v in list(again.run())[-1].variants)
    assert again.error is None


def test_the_device_check_runs_concurrent_four_column_runs_within_its_budget(bundle, loop):
    from playground.bench.device import device_check, report

    result = device_check("cpu", bundle, runs=(1, 2), new_tokens=3, kv_budget_mb=0.25)
    assert [load["runs"] for load in result["loads"]] == [1, 2]
    assert all(load["all_finished"] and load["tokens_per_s"] > 0 and load["first_token_worst_s"] is not None
               for load in result["loads"])
    assert 0 < result["loads"][1]["kv_peak_mb"] <= result["kv_budget_mb"] == 0.25
    assert "every run finished: True" in report(result)


@pytest.mark.slow
def test_bench_device_cpu_from_the_command_line(capsys):
    from playground.cli import main

    assert main(["bench", "--device", "cpu", "--runs", "1", "2", "--new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in out and out.count("every run finished: True") == 2
