"""Shared fixtures: the real embedded model (session-wide, cached on disk) and a tiny random Llama."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from playground.models import LoadedModel, ModelInfo, eos_token_ids, load_model, stop_token_ids


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """SmolLM2-135M-Instruct from the embedded GGUF (converted once, then read from the cache)."""
    return load_model()


@pytest.fixture(scope="session")
def tokenizer(smollm):
    return smollm.tokenizer


def make_tiny_llama(tokenizer, seed: int = 0):
    """A random 2-layer Llama with the real vocabulary: fast, and shaped like the real thing."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny(tokenizer) -> LoadedModel:
    model = make_tiny_llama(tokenizer)
    info = ModelInfo(
        name="tiny-random-llama", source="random", num_parameters=model.num_parameters(), dtype="float32",
        device="cpu", context_length=512, eos_token_ids=eos_token_ids(tokenizer, model),
        stop_token_ids=stop_token_ids(tokenizer, model),
        pad_token_id=tokenizer.pad_token_id, has_chat_template=True, load_seconds=0.0,
        vocab_size=len(tokenizer),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (one per test module)."""
    from playwright.sync_api import sync_playwright

    from playground.bench.page import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def stream_compare(client, **kwargs) -> list[dict]:
    """Stream /compare to the end; after each (delta) event, the whole trace so far as rebuilt by TraceBuilder
    (Trace.to_dict's schema) with the event's "done" flag. Raises the app's error, if any."""
    import copy

    from playground.stream import TraceBuilder

    job = client.submit(api_name="/compare", **kwargs)
    builder, states = TraceBuilder(), []
    for event in job:
        builder.apply(event)
        states.append({**copy.deepcopy(builder.trace), "done": event["done"], "event": event})
    job.result()
    return states


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerURL(str):
    """The URL of an app launched for the tests (a str), with the server ``process`` (its ``pid``) and ``log``
    path."""

    pid: int
    log: str
    process: object  # subprocess.Popen


# Variables that switch app.py into public mode or change its model: the launched apps set them explicitly.
_APP_ENV_KEYS = ("SPACE_ID", "PLAYGROUND_PUBLIC", "PLAYGROUND_MODEL")


def _launch_app(*args: str, env: dict | None = None):
    """Start `python app.py --port P *args` and wait until it serves; yields its ServerURL, then stops it."""
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    environment = {k: v for k, v in os.environ.items() if k not in _APP_ENV_KEYS}
    environment.update(env or {})
    log = tempfile.NamedTemporaryFile("w+", prefix="app-", suffix=".log", delete=False)  # a pipe could fill and block
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=root, stdout=log,
                               stderr=subprocess.STDOUT, text=True, env=environment)
    url = ServerURL(f"http://127.0.0.1:{port}/")
    url.pid, url.log, url.process = process.pid, log.name, process
    deadline = time.time() + 300  # a shared, busy machine can take minutes to import torch and transformers
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited early:\n{Path(log.name).read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("app.py did not start serving within 300 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def app_server(smollm):
    """`python app.py` on a free local port with the embedded model; yields its URL (with .pid and .log)."""
    yield from _launch_app()


@pytest.fixture(scope="session")
def public_app_server(smollm):
    """`python app.py --public`, as in the Space: spaces.yaml's caps and allowlist. Its Llama needs a GPU, so
    here it serves the default model with a banner saying so. Yields its URL (with .pid and .log)."""
    yield from _launch_app("--public", env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="session")
def shared_app_server(smollm):
    """`python app.py --host 0.0.0.0`: reachable from other machines, so served with the share policy (the loaded
    model and default only, spaces.yaml's caps, no paths). Driven on 127.0.0.1; yields its URL (.pid, .log)."""
    yield from _launch_app("--host", "0.0.0.0")
