"""Evaluate over the API: /evaluate streams its progress and then the report, and a closed evaluation stops and
frees its rows within seconds."""

from __future__ import annotations

import pytest


def test_evaluate_api_streams_progress_then_the_report(app_server):
    from gradio_client import Client

    client = Client(app_server, verbose=False)
    job = client.submit(api_name="/evaluate", prompts=["What is the capital of France?", {"prompt": " "}],
                        columns=[[], ["ban_eos"]], max_new_tokens=4)
    events = list(job)
    assert events[0] == {"done": 0, "total": 2, "problems": ["item 2: the prompt is empty; skipped"], "report": None}
    final = events[-1]
    assert final["done"] == 2 and final["report"]["complete"]
    assert [c["column"] for c in final["report"]["summary"]] == ["baseline", "ban_eos"]
    with pytest.raises(Exception, match="sweep: strength takes numbers"):
        client.predict(api_name="/evaluate", prompts="builtin", sweep="strength=x")


def test_a_closed_evaluation_stops_and_frees_its_rows_within_seconds(app_server):
    """Longer prompts (about 300 tokens, so each row's prefill takes a while): once the client cancels, no row joins
    any more, and the rows and KV cache are freed within seconds (before: the 32 rows already admitted were
    prefilled one after another, the KV cache growing, for most of a minute)."""
    import time

    from gradio_client import Client

    client = Client(app_server, verbose=False)
    prompts = [f"Story {i}: " + "the quick brown fox jumps over the lazy dog " * 30 + "Summarise it." for i in range(40)]
    job = client.submit(api_name="/evaluate", prompts=prompts, columns=[[], ["ban_eos"]], max_new_tokens=4)
    deadline = time.time() + 120
    while client.predict(api_name="/info")["kv_in_use_mb"] == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert client.predict(api_name="/info")["active_generations"] == 1, "the evaluation did not start"
    job.cancel()
    closed, held = time.time(), None
    while time.time() - closed < 60:
        info = client.predict(api_name="/info")
        held = {key: info[key] for key in ("active_generations", "rows_in_flight", "rows_waiting", "kv_in_use_mb")}
        if not any(held.values()):
            break
        time.sleep(0.1)
    seconds = time.time() - closed
    print(f"\nfreed {seconds:.1f} s after the cancel: {held}")
    assert not any(held.values()) and seconds < 10
