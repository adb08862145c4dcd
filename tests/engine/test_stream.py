"""/compare streams deltas: every event carries only the steps and text that are new, a client rebuilds the
engine's trace exactly from them, the events survive Gradio's diff, and a text that shrinks is sent as a splice."""

from __future__ import annotations

import json
from playground.engine import Comparison, Settings, Variant, compare
from playground.stream import DeltaStream, TraceBuilder


def assert_no_step_repeats(events: list[dict]) -> None:
    for column in events[0]["columns"]:
        steps = [step["step"] for event in events for step in event["columns"][column]["steps"]]
        assert steps == list(range(len(steps))), f"column {column}: steps {steps[:20]}..."


def test_events_rebuild_the_trace_and_carry_each_step_once(tiny):
    comparison = Comparison(tiny, "Hello", [Variant("free"), Variant("stops", [{"name": "stop_strings", "params": {"strings": ["e"]}}]),
                                            Variant("long", ["ban_eos"])], Settings(max_new_tokens=40, temperature=1.0, seed=2))
    events = list(DeltaStream(comparison).events())
    assert "model" in events[0] and all(c["steps"] == [] for c in events[0]["columns"].values())
    assert not any(e["done"] for e in events[:-1]) and events[-1]["done"]
    assert all(c["steps"] == [] and "summary" in c for c in events[-1]["columns"].values())
    assert_no_step_repeats(events)
    builder = TraceBuilder()
    for event in events:
        builder.apply(event)
    assert builder.trace == comparison.trace.to_dict()
    builder.apply(events[-1])  # the REST stream sends the last event twice: nothing changes
    assert builder.trace == comparison.trace.to_dict()


def test_events_survive_gradios_diff_to_the_client(tiny):
    """gradio_client and the page get each value as edits against the previous one: applying them must give the
    events back (columns whose step lists shrink together once broke gradio's list diff)."""
    from gradio.utils import diff
    from gradio_client.utils import apply_diff

    comparison = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"]), Variant("c")],
                            Settings(max_new_tokens=30))
    stream, events = DeltaStream(comparison), []
    events.append(stream.start())
    for _ in comparison.run():  # a step or more per event, then none: every column's step list shrinks at once
        events.append(stream.update())
    events.append(stream.finish())
    received = json.loads(json.dumps(events[0]))
    for previous, event in zip(events, events[1:]):
        received = apply_diff(received, json.loads(json.dumps(diff(previous, event))))
        assert received == json.loads(json.dumps(event))


def test_a_column_text_that_shrinks_is_sent_as_a_splice(tiny):
    """A stop string that completes trims the visible text: the event says where the new text starts."""
    text = compare(tiny, "Hello", [Variant("free")], Settings(max_new_tokens=25)).variants[0].text
    stop = text[8:14]
    comparison = Comparison(tiny, "Hello", [Variant("stops", [{"name": "stop_strings", "params": {"strings": [stop]}}])],
                            Settings(max_new_tokens=25))
    builder = TraceBuilder()
    for event in DeltaStream(comparison).events():
        builder.apply(event)
    assert builder.trace["variants"][0]["text"] == comparison.trace.variants[0].text
    assert stop not in builder.trace["variants"][0]["text"]
