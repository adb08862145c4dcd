"""Strangers type anything, several at once: the app in public mode (as in the Space), driven through
gradio_client. Bad input gets a sentence naming the field and the server keeps serving the same model; eight
clients at once get what they would get alone; a cancelled run stops decoding; memory does not creep.

The public app serves the default model here (spaces.yaml's Llama needs a GPU) with spaces.yaml's caps:
512 new tokens, 1024 prompt tokens, 4 columns, 4 stop strings of at most 32 characters.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.support import stream_compare

RAMBLING = "What can I do in Paris?"
MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(public_app_server):
    return Client(public_app_server, verbose=False)


def compare(client, **kwargs) -> list[dict]:
    """Stream /compare to the end; return the trace rebuilt after every event (raises AppError with the server's
    message)."""
    return stream_compare(client, **kwargs)


def assert_still_serving(client) -> None:
    info = client.predict(api_name="/info")
    assert info["model"] == MODEL and info["reference"] == "default"
    final = compare(client, prompt="Hi", columns=[[]], max_new_tokens=2)[-1]
    assert final["done"] and final["model"] == MODEL and len(final["variants"][0]["token_ids"]) == 2


def assert_clear(message: str, field: str) -> None:
    assert field in message, message
    assert "Traceback" not in message and 'File "' not in message, message


# (what a client sends to /compare, the field the message must name)
BAD_COMPARE = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "  \n\t  "}, "prompt"),
    ({"prompt": "x" * 200_000}, "prompt"),
    ({"prompt": "word " * 1500}, "prompt"),  # under the character guard, over 1024 tokens
    ({"prompt": None}, "prompt"),
    ({"prompt": "Hi", "system_prompt": "y" * 100_000}, "system_prompt"),
    ({"prompt": "Hi", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "Hi", "max_new_tokens": -1}, "max_new_tokens"),
    ({"prompt": "Hi", "max_new_tokens": 10**9}, "max_new_tokens"),
    ({"prompt": "Hi", "max_new_tokens": 513}, "max_new_tokens"),  # the Space's cap, not the engine's 2048
    ({"prompt": "Hi", "max_new_tokens": "many"}, "max_new_tokens"),
    ({"prompt": "Hi", "temperature": -1}, "temperature"),
    ({"prompt": "Hi", "temperature": 1e9}, "temperature"),
    ({"prompt": "Hi", "top_p": 0}, "top_p"),
    ({"prompt": "Hi", "top_p": 2}, "top_p"),
    ({"prompt": "Hi", "top_k": -5}, "top_k"),
    ({"prompt": "Hi", "seed": -1}, "seed"),
    ({"prompt": "Hi", "reward_start_ratio": -0.1}, "reward_start_ratio"),
    ({"prompt": "Hi", "reward_start_ratio": 1.5}, "reward_start_ratio"),
    ({"prompt": "Hi", "strength": 1e9}, "strength"),
    ({"prompt": "Hi", "columns": [["stop_strings"]], "stop_strings": ""}, "stop_strings"),
    ({"prompt": "Hi", "columns": [["stop_strings"]], "stop_strings": "x" * 100_000}, "stop_strings"),
    ({"prompt": "Hi", "stop_strings": "a,b,c,d,e"}, "stop_strings"),
    ({"prompt": "Hi", "stop_strings": ["not", "text"]}, "stop_strings"),
    ({"prompt": "Hi", "columns": [["no_such_intervention"]]}, "intervention"),
    ({"prompt": "Hi", "columns": [[], [], [], [], []]}, "columns"),
    ({"prompt": "Hi", "columns": 5}, "columns"),
]

# (reference, adapter, trust_remote_code) sent to /load_model, the field the message must name
BAD_LOAD = [
    (("no-such-org/no-such-model", "", False), "model"),
    (("gpt2", "", False), "model"),
    (("/etc", "", False), "model"),
    (("./playground", "", False), "model"),
    (("../../root/.cache", "", False), "model"),
    (("", "", False), "model"),
    (("meta-llama/Llama-2-7b-chat-hf", "", False), "model"),  # allowed, but needs a GPU this app lacks
    (("default", "", True), "trust_remote_code"),
    (("default", "someone/lora", False), "adapter"),
]


@pytest.mark.parametrize("kwargs, field", BAD_COMPARE, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_COMPARE)])
def test_bad_compare_input_gets_a_sentence_naming_the_field(client, kwargs, field):
    with pytest.raises(AppError) as error:
        compare(client, **kwargs)
    assert_clear(str(error.value), field)
    assert_still_serving(client)


@pytest.mark.parametrize("args, field", BAD_LOAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_LOAD)])
def test_bad_load_request_is_refused_server_side(client, args, field):
    with pytest.raises(AppError) as error:
        client.predict(*args, api_name="/load_model")
    assert_clear(str(error.value), field)
    assert_still_serving(client)


def raw_call(url: str, api_name: str, body: str) -> str:
    """Gradio's HTTP API without gradio_client (which cannot send NaN: it is not JSON); returns the event stream."""
    post = urllib.request.Request(f"{url}gradio_api/call/{api_name}", data=body.encode(),
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=60) as response:
        return response.read().decode()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_temperature_gets_a_sentence(public_app_server, client, value):
    # prompt, columns, max_new_tokens, temperature, top_p, top_k, seed, ratio, strength, stops, min_new, template,
    # system, repetition_penalty, no_repeat_ngram_size, min_p, typical_p, branches: the positional route needs all
    stream = raw_call(public_app_server, "compare",
                      f'{{"data": ["Hi", null, 8, {value}, 1.0, 0, 0, 0.5, 12, "\\\\n\\\\n", 32, true, "", 1.0, 0, 0.0, 1.0, null]}}')
    assert "event: error" in stream
    message = json.loads(stream.split("event: error\ndata: ", 1)[1].splitlines()[0])["error"]
    assert_clear(message, "temperature")
    assert "finite" in message
    assert_still_serving(client)


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": "x" * 200_000}, "prompt"),  # no prompt cap locally: the context window still bounds it
    ({"prompt": "Hi", "columns": [["stop_strings"]], "stop_strings": "x" * 100_000}, "stop_strings"),
    ({"prompt": "Hi", "columns": [[]] * 9}, "columns"),
    ({"prompt": "Hi", "max_new_tokens": 10**9}, "max_new_tokens"),
])
def test_local_app_refuses_what_would_hang_it(app_server, kwargs, field):
    """Without public mode the owner may load anything, but a huge stop string or prompt still gets a sentence."""
    local = Client(app_server, verbose=False)
    with pytest.raises(AppError) as error:
        compare(local, **kwargs)
    assert_clear(str(error.value), field)
    assert compare(local, prompt="Hi", columns=[[]], max_new_tokens=2)[-1]["done"]


@pytest.mark.parametrize("prompt", [
    "Réponds en français 🇫🇷 — 😀🎉 Explain emoji: 👩‍👩‍👧‍👦",
    "مرحبا، كيف حالك؟ שלום, מה שלומך?",  # right-to-left scripts
    "Hi\x00 there\x07\x1b[31m red\x7f \u202eevil\u202c\ufeff",  # NUL, bell, ANSI escape, RTL override, BOM
])
def test_unusual_text_works(client, prompt):
    final = compare(client, prompt=prompt, columns=[[], ["eos_reward"]], max_new_tokens=6, system_prompt="Be brief 🙂")[-1]
    assert final["done"] and final["prompt"] == prompt
    assert all(len(v["token_ids"]) >= 1 for v in final["variants"])


def request(seed: int) -> dict:
    return {"prompt": "Tell me a very short story about a cat.", "columns": [[], ["eos_reward"]], "max_new_tokens": 16,
            "temperature": 1.0, "top_p": 0.95, "seed": seed, "reward_start_ratio": 0.5}


@pytest.mark.slow  # 23 s; concurrent runs keeping their own tokens are also covered by test_memory and test_adapters
def test_eight_clients_streaming_at_once_get_what_each_gets_alone(public_app_server, client):
    alone = {seed: compare(client, **request(seed))[-1] for seed in range(8)}
    # Sampling with different seeds gives different stories, so matching outputs mean something.
    assert len({tuple(final["variants"][0]["token_ids"]) for final in alone.values()}) >= 4

    barrier = threading.Barrier(8)

    def one(seed: int) -> tuple[list[dict], float]:
        own = Client(public_app_server, verbose=False)
        barrier.wait()  # all eight submit together
        started = time.perf_counter()
        updates = compare(own, **request(seed))
        return updates, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    wall = time.perf_counter() - started
    print(f"\n8 clients at once: all done in {wall:.1f} s (each waited/streamed "
          f"{min(r[1] for r in results):.1f}-{max(r[1] for r in results):.1f} s)")
    for seed, (updates, _) in enumerate(results):
        final = updates[-1]
        assert final["done"] and len(updates) >= 1
        for got, want in zip(final["variants"], alone[seed]["variants"]):
            assert got["token_ids"] == want["token_ids"], f"seed {seed}, column {got['name']}"
        assert [v["text"] for v in final["variants"]] == [v["text"] for v in alone[seed]["variants"]]
    assert_still_serving(client)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def resident_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def test_cancel_mid_stream_stops_decoding_and_the_next_run_works(public_app_server, client):
    pid = public_app_server.pid
    job = client.submit(api_name="/compare", prompt=RAMBLING, columns=[["ban_eos"], []], max_new_tokens=400)
    deadline = time.time() + 60
    while len(job.outputs()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert client.predict(api_name="/info")["active_generations"] == 1
    job.cancel()
    # The server counts comparisons whose decode loop is still open; a cancel closes it within one step.
    deadline = time.time() + 30
    while client.predict(api_name="/info")["active_generations"] and time.time() < deadline:
        time.sleep(0.05)
    assert client.predict(api_name="/info")["active_generations"] == 0
    # And nothing is computing in the background: a decoding thread would burn ~1-2 CPU seconds per second.
    before = cpu_seconds(pid)
    time.sleep(1.0)
    idle = cpu_seconds(pid) - before
    print(f"\nserver CPU over 1 s after the cancel: {idle:.2f} s")
    assert idle < 0.5
    assert sum(len(next(iter(event["columns"].values()))["steps"]) for event in job.outputs()) < 400
    final = compare(client, prompt="Say hi.", columns=[[]], max_new_tokens=8)[-1]
    assert final["done"] and final["variants"][0]["stop_reason"] in ("eos", "max_new_tokens")


@pytest.mark.slow  # a soak: 50 runs
def test_fifty_runs_do_not_grow_resident_memory(public_app_server, client):
    pid = public_app_server.pid
    prompts = ["What can I do in Paris?", "Write a haiku about the sea.", "Name three colours.", "Say hi."]

    def run(i: int) -> None:
        final = compare(client, prompt=f"{prompts[i % 4]} ({i})", columns=[[], ["eos_reward"]], max_new_tokens=6,
                        temperature=0.7, seed=i)[-1]
        assert final["done"]

    for i in range(5):  # warm-up: first-call allocations (tokenizer caches, thread pools) are not growth
        run(i)
    before = resident_mb(pid)
    for i in range(50):
        run(100 + i)
    after = resident_mb(pid)
    growth = (after - before) / before
    print(f"\nserver RSS over 50 runs: {before:.1f} MB -> {after:.1f} MB ({100 * growth:+.2f} %)")
    assert growth < 0.10
