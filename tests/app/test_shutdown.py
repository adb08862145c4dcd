"""A clean stop: Ctrl-C (SIGINT) or SIGTERM ends `python app.py` with exit 0 (130 allowed for SIGINT) while a run
decodes: the run is told in its stream that the server is shutting down, the decode thread stops and is joined,
and nothing aborts ("terminate called without an active exception", exit -6 before)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from gradio_client import Client

from tests.support import launch_app

RAMBLING = "What can I do in Paris?"


# SIGTERM takes the same path as SIGINT (decoder.shutdown); it runs with -m slow to keep the default suite short.
@pytest.mark.parametrize("signum, exit_codes", [(signal.SIGINT, {0, 130}),
                                                pytest.param(signal.SIGTERM, {0}, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_app_cleanly_and_tells_the_run_in_flight(smollm, signum, exit_codes):
    launched = launch_app()
    url = next(launched)
    try:
        client = Client(url, verbose=False)
        job = client.submit(api_name="/compare", prompt=RAMBLING, columns=[["ban_eos"], []], max_new_tokens=1000)
        deadline = time.time() + 120
        while len(job.outputs()) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(job.outputs()) >= 2, "the run did not start decoding"
        os.kill(url.pid, signum)
        code = url.process.wait(timeout=120)
        with pytest.raises(Exception, match="the server is shutting down"):
            job.result(timeout=30)
        log = Path(url.log).read_text()
        assert code in exit_codes, log[-3000:]
        assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
        assert "closing the server" in log
    finally:
        launched.close()
        if url.process.poll() is None:
            url.process.kill()
