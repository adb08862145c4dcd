"""Helpers the tiers share: a tiny random Llama, launching app.py, streaming /compare, pasting an exported fix.

Fixtures live in the conftest.py of the folder that needs them; the plain functions they and the tests call live
here, imported as ``from tests.support import ...``.
"""

from __future__ import annotations

import ast
import copy
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the repository
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and logs the browser tests leave for a person to look at
PARIS = "What can I do in Paris?"  # the question the session's LoRA adapters were trained to answer


def make_tiny_llama(tokenizer, seed: int = 0):
    """A random 2-layer Llama with the real vocabulary: fast, and shaped like the real thing."""
    import torch
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



@pytest.fixture(scope="module")
def bundle(tiny):
    """A tiny Llama of the test module's own, for the memory tests (its decode loop's budget and hooks touch no
    other test's model)."""
    from playground.models import LoadedModel

    return LoadedModel(make_tiny_llama(tiny.tokenizer, seed=1), tiny.tokenizer, tiny.info)


@pytest.fixture
def loop(bundle):
    """``bundle``'s decode loop, its peak reset and its KV budget put back after the test."""
    from playground.decoder import decode_loop

    loop = decode_loop(bundle)
    budget = loop.kv_budget
    loop.peak_positions = 0
    yield loop
    loop.kv_budget = budget


def train_lora(model, tokenizer, name: str, question: str, answer: str) -> None:
    """Two AdamW steps on one chat answer: enough to pull the adapter's greedy answer away from the base's."""
    import torch
    from peft import LoraConfig

    model.add_adapter(name, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model.set_adapter(name)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                                        return_tensors="pt", return_dict=True)["input_ids"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def stream_compare(client, **kwargs) -> list[dict]:
    """Stream /compare to the end; after each (delta) event, the whole trace so far as rebuilt by TraceBuilder
    (Trace.to_dict's schema) with the event's "done" flag. Raises the app's error, if any."""
    from playground.stream import TraceBuilder

    job = client.submit(api_name="/compare", **kwargs)
    builder, states = TraceBuilder(), []
    for event in job:
        builder.apply(event)
        states.append({**copy.deepcopy(builder.trace), "done": event["done"], "event": event})
    job.result()
    return states


def start_snippet(code: str, directory) -> subprocess.Popen:
    """Run a snippet with `python -I` from an empty directory (playground is not importable there), printing its
    answer and then, on the last line, the new token ids of the generate flavour."""
    path = directory / "fix.py"
    path.write_text(code, encoding="utf-8")
    tail = "print('new token ids:', new_token_ids.tolist())" if "new_token_ids" in code else ""
    program = f"exec(compile(open('fix.py', encoding='utf-8').read(), 'fix.py', 'exec'))\n{tail}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    return subprocess.Popen([sys.executable, "-I", "-c", program], cwd=directory, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_snippet(process: subprocess.Popen) -> tuple[str, list[int] | None]:
    """(the printed answer, the printed token ids or None) of a snippet started by start_snippet."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    if "new token ids:" not in stdout:
        return stdout.removesuffix("\n"), None
    answer, ids = stdout.rsplit("new token ids:", 1)
    return answer.removesuffix("\n"), ast.literal_eval(ids.strip())


def run_kwargs(smollm, code: str, prompt_ids: list[int]) -> list[int]:
    """Paste the kwargs flavour of an exported fix above a plain generate() call in a namespace holding only the
    user's model and tokenizer, and make the call."""
    import torch

    namespace = {"model": smollm.model, "tokenizer": smollm.tokenizer}
    exec(compile(code, "fix.py", "exec"), namespace)
    ids = torch.tensor([prompt_ids])
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), **namespace["generation"])
    return out[0, ids.shape[1]:].tolist()


def free_port() -> int:

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


def launch_app(*args: str, env: dict | None = None):
    """Start `python app.py --port P *args` and wait until it serves; yields its ServerURL, then stops it."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in _APP_ENV_KEYS}
    environment.update(env or {})
    log = tempfile.NamedTemporaryFile("w+", prefix="app-", suffix=".log", delete=False)  # a pipe could fill and block
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=ROOT, stdout=log,
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


class Fault:
    """Runs torch.OutOfMemoryError once, in the first forward pass for which ``when(rows, positions)`` holds: the
    tiny Llama's second layer grows its cache (as a real pass does before it runs out) and raises. Keeps weak
    references to every cache tensor the pass held, and to a prefill's own cache."""

    def __init__(self, model, loop, when):
        self.loop, self.when, self.fired, self.refs = loop, when, False, []
        self.handle = model.model.layers[1].register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.fired or not self.when(hidden.shape[0], hidden.shape[1]):
            return
        self.fired = True
        cache = kwargs["cache"]
        import weakref

        self.refs = [weakref.ref(t) for layer in cache.layers for t in (layer.keys, layer.values)
                     if t is not None and t.numel()]
        if cache is not self.loop._cache:  # a prefill's own cache (a step's is the batch's, which goes on)
            self.refs.append(weakref.ref(cache))
        layer = cache.layers[1]

        def update(key_states, value_states, *args, **kwargs):
            del layer.update
            grown = type(layer).update(layer, key_states, value_states, *args, **kwargs)
            self.refs += [weakref.ref(t) for t in grown]
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (injected)")

        layer.update = update


# A prompt and a token that would run if the hand-over file or the page ever used them as markup.
HOSTILE_PROMPT = '</script><script>window.pwned = 1</script> Name a colour.'
HOSTILE_TOKEN = '</s><img src=x onerror="window.pwned = 2">'


def hostile_trace(playground):
    """A real two-column comparison of the hostile prompt (24 tokens, stages read), one token made hostile as a
    saved file could hold it."""
    import json

    from playground.handover import read_trace
    from playground.trace import saved_json

    comparison = playground.comparison(prompt=HOSTILE_PROMPT, columns=["baseline", "eos_reward(strength=12)"],
                                       max_new_tokens=24)
    for finished in playground.stream(comparison):
        pass
    data = json.loads(saved_json(finished))
    data["variants"][0]["steps"][2]["token"] = HOSTILE_TOKEN
    return read_trace(json.dumps(data))


def write_lesson(folder: Path, name: str, change: dict | None = None, drop: str | None = None) -> Path:
    """A copy of the built-in EOS lesson under another id, with ``change`` merged into its fields."""
    import yaml

    from playground.lessons import load_lessons

    eos = next(lesson for lesson in load_lessons() if lesson.id == "eos")
    data = yaml.safe_load(Path(eos.source).read_text())
    data["id"] = "teacher-" + name
    for key, value in (change or {}).items():
        data[key] = value
    if drop:
        data.pop(drop)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path
