"""The real app, launched with the embedded model on a local port, driven through gradio_client."""

from __future__ import annotations

import json
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


def test_a_closed_doctor_stops_within_seconds(client, app_server, tmp_path):
    """The doctor's checks run behind a generator handler: when its client leaves (job.cancel(), as a closed page),
    the examination stops within a layer of its forward pass instead of running on in the "model" group
    (before: a plain function, which Gradio cannot stop). Long examples: the teacher-forced probe takes a while."""
    from gradio_client import handle_file

    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(json.dumps({"prompt": f"Question {i}: " + "why is the sky blue at noon? " * 40,
                                          "response": "Because of Rayleigh scattering in the air. " * 25}) + "\n"
                              for i in range(64)), encoding="utf-8")
    job = client.submit(handle_file(str(sample)), api_name="/doctor")
    deadline = time.time() + 120
    while client.predict(api_name="/info")["active_examinations"] == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert client.predict(api_name="/info")["active_examinations"] == 1, "the doctor did not start"
    time.sleep(1)  # into its checks
    job.cancel()
    closed = time.time()
    while client.predict(api_name="/info")["active_examinations"] and time.time() - closed < 60:
        time.sleep(0.1)
    seconds = time.time() - closed
    print(f"\nthe doctor stopped {seconds:.1f} s after the cancel")
    assert client.predict(api_name="/info")["active_examinations"] == 0 and seconds < 10  # a layer of a forward pass at most
    assert "doctor stopped: its client left" in Path(app_server.log).read_text(), "it finished instead of stopping"
