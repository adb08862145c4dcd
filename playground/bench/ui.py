"""What reaches the app's clients (the app served by :func:`~playground.bench.common.serve_app`): a
``gradio_client`` consumer against the engine, the REST stream's bytes, eight clients at once against one."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .common import EQUAL_LENGTH_COLUMNS, RAMBLING_PROMPT, _one_thread, _timed

def rest_stream_bytes(url: str, arguments: dict) -> tuple[int, int]:
    """(bytes, steps) of /compare's REST stream — what curl or a JS client gets: POST the call, then read its
    server-sent events to the end."""
    request = urllib.request.Request(f"{url}gradio_api/call/v2/compare", data=json.dumps(arguments).encode(),
                                     headers={"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(request, timeout=60))["event_id"]
    size = steps = 0
    with urllib.request.urlopen(f"{url}gradio_api/call/v2/compare/{event_id}", timeout=600) as response:
        kind = None
        for line in response:
            size += len(line)
            if line.startswith(b"event: "):
                kind = line[7:].strip()
            elif line.startswith(b"data: ") and kind == b"generating":  # "complete" repeats the last event
                for event in json.loads(line[6:]):
                    steps += sum(len(column["steps"]) for column in event["columns"].values())
            elif line.startswith(b"data: ") and kind == b"error":
                raise RuntimeError(f"/compare failed: {line[6:].decode()}")
    return size, steps


def bench_ui(bundle, url: str, new_tokens: int = 96) -> dict:
    """Against the app served at ``url`` (see :func:`serve_app`): what reaches a ``gradio_client`` consumer of
    /compare compared with the engine alone, the bytes of the REST stream for 512 tokens × 4 columns, 8 clients
    at once compared with one, and how often the page's Run handler redraws the live chart."""
    from gradio_client import Client

    from playground.engine import Settings, Variant, compare

    prompt = RAMBLING_PROMPT
    columns = [c for _, c in EQUAL_LENGTH_COLUMNS]
    variants = [Variant(name, interventions) for name, interventions in EQUAL_LENGTH_COLUMNS]
    _one_thread(lambda: compare(bundle, prompt, variants, Settings(max_new_tokens=4)))  # warm-up
    engine_s = _one_thread(lambda: _timed(lambda: compare(bundle, prompt, variants, Settings(max_new_tokens=new_tokens))))

    client = Client(url, verbose=False)
    list(client.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=4))  # warm-up
    submitted = time.perf_counter()
    received, arrivals = 0, []
    for event in client.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=new_tokens):
        arrivals.append(time.perf_counter())
        received += sum(len(column["steps"]) for column in event["columns"].values())
    assert received == 2 * new_tokens, received
    # From the first event (sent as the run starts, before its prefill) to the last: the decode as the client
    # sees it. Connecting and queueing before the first event are reported separately.
    stream_rate = received / (arrivals[-1] - arrivals[0])

    # REST: 4 columns that all run to 512 tokens (EOS banned in each).
    rest_columns = [["ban_eos"], ["ban_eos", "eos_reward"], ["ban_eos", "decay_penalty"], ["ban_eos", "concise_suffix"]]
    rest_bytes, rest_steps = rest_stream_bytes(url, {"prompt": prompt, "columns": rest_columns, "max_new_tokens": 512})
    assert rest_steps == 4 * 512, rest_steps

    # 8 clients submit a 2-column, 64-token run at the same moment, against one such run alone.
    def one_run(own: Client) -> None:
        events = list(own.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=64))
        assert sum(len(column["steps"]) for event in events for column in event["columns"].values()) == 128

    alone_s = _timed(lambda: one_run(client))
    clients = [Client(url, verbose=False) for _ in range(8)]
    barrier = threading.Barrier(8)

    def together(own: Client) -> float:
        barrier.wait()
        return _timed(lambda: one_run(own))

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(together, clients))
    eight_s = time.perf_counter() - started

    return {
        "new_tokens": new_tokens,
        "engine_tokens_per_s": round(2 * new_tokens / engine_s, 2),
        "client_tokens_per_s": round(stream_rate, 2),
        "client_fraction_of_engine": round(stream_rate / (2 * new_tokens / engine_s), 3),  # target >= 0.9
        "seconds_to_first_event": round(arrivals[0] - submitted, 3),
        "events_received": len(arrivals),
        "rest_bytes_512x4": rest_bytes,  # target <= 4 MB
        "rest_bytes_per_token": round(rest_bytes / rest_steps, 1),
        "one_run_64x2_seconds": round(alone_s, 2),
        "eight_runs_64x2_seconds": round(eight_s, 2),
        "concurrent_8_vs_one": round(eight_s / alone_s, 3),  # target <= 2.5
    }
