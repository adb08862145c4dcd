"""/compare streams deltas over HTTP: a long run rebuilds the engine's trace, a slow reader gets the final state
while the decode runs at its own pace, and a bad trace id gets a sentence."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import Client

from playground.engine import Settings, Variant, compare
from playground.stream import TraceBuilder
from tests.support import stream_compare

RAMBLING = "What can I do in Paris?"


def without_timing(trace: dict) -> dict:
    """A trace dict without wall-clock fields (two runs never take the same time)."""
    trace = json.loads(json.dumps(trace))
    for variant in trace["variants"]:
        for key in ("wall_seconds", "tokens_per_second"):
            variant["summary"].pop(key)
    return trace


def assert_no_step_repeats(events: list[dict]) -> None:
    for column in events[0]["columns"]:
        steps = [step["step"] for event in events for step in event["columns"][column]["steps"]]
        assert steps == list(range(len(steps))), f"column {column}: steps {steps[:20]}..."


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


@pytest.mark.slow  # 45 s; test_events_rebuild_the_trace_and_carry_each_step_once covers the rebuild on the tiny model
def test_a_long_run_streamed_through_compare_rebuilds_the_engine_trace(client, smollm):
    kwargs = dict(prompt=RAMBLING, columns=[["ban_eos"], ["eos_reward"], ["concise_suffix"]], max_new_tokens=160,
                  reward_start_ratio=0.5, strength=12)
    states = stream_compare(client, **kwargs)
    events = [state["event"] for state in states]
    assert len(events) >= 5
    assert_no_step_repeats(events)
    final = states[-1]
    # The same settings in this process (same code, one thread each): every step, every column, bit for bit.
    variants = [Variant(" + ".join(c), [{"name": n, "params": {"reward_start_ratio": 0.5, "strength": 12} if n == "eos_reward" else {}}
                                        for n in c]) for c in kwargs["columns"]]
    engine = compare(smollm, RAMBLING, variants, Settings(max_new_tokens=160))
    rebuilt = {k: final[k] for k in ("model", "prompt", "settings", "variants")}
    assert len(rebuilt["variants"][0]["steps"]) == 160
    assert without_timing(rebuilt)["variants"] == without_timing(engine.to_dict())["variants"]
    # ... and the whole trace, offered at the end, is the same thing.
    whole = client.predict(events[-1]["trace_id"], False, api_name="/trace")
    assert whole == rebuilt


def test_a_slow_reader_gets_the_final_state_while_the_decode_runs_at_its_own_pace(client, app_server):
    job = client.submit(api_name="/compare", prompt=RAMBLING, columns=[["ban_eos"], []], max_new_tokens=48)
    events = iter(job)
    builder = TraceBuilder()
    builder.apply(next(events))
    # The reader is away: the server decodes the whole run meanwhile (nothing waits for the reader).
    deadline = time.time() + 120
    while client.predict(api_name="/info")["active_generations"] and time.time() < deadline:
        time.sleep(0.2)
    info = client.predict(api_name="/info")
    assert info["active_generations"] == 0 and info["rows_in_flight"] == 0
    for event in events:
        time.sleep(0.05)
        builder.apply(event)
    assert builder.done
    assert len(builder.trace["variants"][0]["token_ids"]) == 48
    assert builder.trace["variants"][0]["summary"]["stop_reason"] == "max_new_tokens"


def test_bad_trace_id_gets_a_sentence(client):
    with pytest.raises(Exception, match="trace_id"):
        client.predict("no-such-trace", False, api_name="/trace")
