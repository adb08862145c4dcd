"""The real app, launched with the embedded model on a local port, driven through gradio_client."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client

from tests.support import stream_compare

RAMBLING = "What can I do in Paris?"


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def run_compare(client, **kwargs):
    """Stream /compare to the end; the trace rebuilt after every event."""
    return stream_compare(client, **kwargs)


def test_compare_streams_updates_and_ramp_stops_no_later_than_baseline(client):
    updates = run_compare(client, prompt=RAMBLING, columns=[[], ["eos_reward"]], max_new_tokens=80,
                          reward_start_ratio=0.5, strength=12)
    assert len(updates) >= 5  # streamed, not one final blob
    assert not updates[0]["done"] and updates[-1]["done"]
    final = updates[-1]
    baseline, ramp = final["variants"]
    for variant in final["variants"]:
        assert len(variant["steps"]) == len(variant["token_ids"]) > 0
    assert baseline["stop_reason"] == "max_new_tokens"  # SmolLM2 rambles on this prompt
    assert ramp["stop_reason"] == "eos"
    assert 40 <= len(ramp["token_ids"]) < len(baseline["token_ids"])  # ramp starts at step 40
    assert ramp["summary"]["diverges_at"] is not None
    # Intermediate updates grow step by step.
    lengths = [len(u["variants"][0]["steps"]) for u in updates]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_cancel_stops_a_stream_and_the_next_run_works(client):
    job = client.submit(api_name="/compare", prompt=RAMBLING, columns=[["ban_eos"]], max_new_tokens=400)
    deadline = time.time() + 60
    while len(job.outputs()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert len(job.outputs()) >= 3
    job.cancel()
    deadline = time.time() + 30  # the server's rows leave the batch within a step of the cancel
    while client.predict(api_name="/info")["rows_in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    assert client.predict(api_name="/info")["rows_in_flight"] == 0
    assert sum(len(next(iter(event["columns"].values()))["steps"]) for event in job.outputs()) < 400
    updates = run_compare(client, prompt="Say hi.", columns=[[]], max_new_tokens=8)
    assert updates[-1]["done"] and len(updates[-1]["variants"][0]["token_ids"]) > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "Hi", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "Hi", "temperature": -1}, "temperature"),
    ({"prompt": "Hi", "top_p": 2}, "top_p"),
    ({"prompt": "Hi", "reward_start_ratio": 1.5}, "reward_start_ratio"),
    ({"prompt": "Hi", "columns": [["no_such_thing"]]}, "no_such_thing"),
])
def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        run_compare(client, **kwargs)
    assert run_compare(client, prompt="Hi", columns=[[]], max_new_tokens=3)[-1]["done"]


def test_load_model_failure_keeps_the_current_model(client):
    with pytest.raises(Exception, match="No such file or directory"):
        client.predict("/nonexistent/model/dir", "", api_name="/load_model")
    final = run_compare(client, prompt="Hi", columns=[[]], max_new_tokens=3)[-1]
    assert final["model"] == "SmolLM2-135M-Instruct"


def test_doctor_endpoint_reports_on_the_loaded_model(client):
    report = client.predict(None, api_name="/doctor")
    assert "**0 problem(s), 1 warning(s)" in report  # SmolLM2's only finding: pad == EOS
    assert "### ⚠️ Pad token is the same id as EOS — warning" in report
    assert "label of the end token after the answer became -100" in report


def test_the_start_log_names_app_py_s_share_flag(app_server):
    log = Path(app_server.log).read_text()
    assert "Running on local URL:  http://" in log and "python app.py --share" in log
    assert "share=True" not in log  # Gradio's own advice, for a script calling launch()
