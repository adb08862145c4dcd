"""The unit tier builds no model and starts no server: the shared model and app fixtures refuse here, and so does
any model built, app launched or app.py started by a test. Such a test belongs in tests/engine or tests/app."""

from __future__ import annotations

import subprocess

import pytest

MOVE = "tests/unit builds no model and starts no server: move this test to tests/engine or tests/app"


def _refuse(*args, **kwargs):
    raise AssertionError(MOVE)


@pytest.fixture(scope="session")
def smollm():
    _refuse()


@pytest.fixture(scope="session")
def adapter_dirs():
    _refuse()


@pytest.fixture(scope="session")
def app_server():
    _refuse()


@pytest.fixture(scope="session")
def public_app_server():
    _refuse()


@pytest.fixture(scope="session")
def shared_app_server():
    _refuse()


@pytest.fixture(autouse=True)
def no_model_no_server(monkeypatch):
    """Whatever the path (a helper, the CLI, app.main), building a transformers model, launching a Gradio app or
    starting app.py / `python -m playground` fails the test with the sentence above."""
    import gradio
    import transformers

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", _refuse)
    monkeypatch.setattr(gradio.Blocks, "launch", _refuse)
    start = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        if isinstance(args, (list, tuple)) and ("app.py" in args or "playground" in args):
            _refuse()
        start(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
