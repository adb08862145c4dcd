"""What the bench's parts share: the prompt and the equal-length columns they decode, timing helpers, and the
app served in its own process (:func:`serve_app`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

APP = Path(__file__).resolve().parents[2] / "app.py"
RAMBLING_PROMPT = "What can I do in Paris?"
# Baseline and the ramp, both with EOS banned (a boost cannot undo a ban), so every run has the same length.
EQUAL_LENGTH_COLUMNS = (("baseline", ["ban_eos"]), ("eos_reward", ["ban_eos", "eos_reward"]))


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _one_thread(call):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return call()
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def serve_app(timeout: float = 180):
    """``python app.py`` on a free local port, in its own process with one torch thread; yields its URL.

    A separate process, so the server's decode thread and its streaming (HTTP, JSON) are not slowed by this
    process's client or its GIL; one thread (OMP_NUM_THREADS=1), because on a 2-core machine a decode on both
    cores would fight the streaming and the client for them, and a ratio would then measure that contention
    rather than what streaming costs. The engine reference is measured with one thread too.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], cwd=APP.parent, env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py exited early:\n{log.read()}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"app.py did not serve within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
