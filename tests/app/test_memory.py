"""The decode loop under memory pressure, seen over the API: a run stopped by out-of-memory reaches the client as
a sentence."""

from __future__ import annotations

import pytest

from tests.support import Fault, bundle, loop  # noqa: F401 (bundle, loop: the memory tests' fixtures)


@pytest.mark.slow
def test_the_api_shows_a_run_stopped_by_out_of_memory_as_a_sentence(bundle, loop):
    """In-process app (the fault is injected into its model): /compare fails with the sentence, /info says so."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.support import free_port
    from playground.service import Playground
    from playground.ui import build_app

    playground = Playground(bundle, "tiny")
    demo = build_app(playground)
    demo.queue()
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    fault = Fault(bundle.model, loop, lambda rows, positions: positions > 1)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError, match="ran out of memory for this run; the others continue"):
            client.predict("Hello", [["ban_eos"]], 8, api_name="/compare")
        fault.handle.remove()
        assert client.predict(api_name="/info")["kv_in_use_mb"] == 0
        events = list(client.submit("Hello", [["ban_eos"]], 8, api_name="/compare"))
        assert events[-1]["done"]
    finally:
        fault.handle.remove()
        demo.close()
