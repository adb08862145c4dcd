"""Shared fixtures: the real embedded model (session-wide, cached on disk) and a tiny random Llama."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from playground.models import LoadedModel, ModelInfo, eos_token_ids, load_model


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
        pad_token_id=tokenizer.pad_token_id, has_chat_template=True, load_seconds=0.0,
        vocab_size=len(tokenizer),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(smollm):
    """`python app.py` on a free local port with the embedded model; yields its URL."""
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    log = tempfile.NamedTemporaryFile("w+", prefix="app-", suffix=".log", delete=False)  # a pipe could fill and block
    # One torch thread: on a 2-core machine the server shares the CPU with the browser or the test process, and
    # two OpenMP threads competing with a busy process run ~10x slower than one.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=root, stdout=log,
                               stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
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
        raise RuntimeError("app.py did not start serving within 120 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
