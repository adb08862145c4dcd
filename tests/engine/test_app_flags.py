"""app.py's flags: what reaches Gradio's launch (share, host, port, auth, the queue's and the uploads' bounds in
public and local mode), and the flags it refuses with a sentence. app.main runs for real, loading the embedded
model; only Blocks.launch is replaced, so nothing serves."""

from __future__ import annotations

import pytest

from playground.space.config import load_config


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture
def launched(monkeypatch):
    """Run app.main without serving: capture what reaches Blocks.launch and the queue's size."""
    import gradio as gr

    seen = {}

    def fake_launch(self, **kwargs):
        seen.update(kwargs, queue_max_size=self._queue.max_size)

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    for variable in ("SPACE_ID", "PLAYGROUND_PUBLIC", "PLAYGROUND_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    return seen


def test_app_flags_reach_launch(launched):
    """--share/--host/--port are handed to Gradio's launch (the share tunnel itself cannot be reached here)."""
    import app

    app.main(["--share", "--host", "0.0.0.0", "--port", "7999"])
    assert launched["share"] is True
    assert launched["server_name"] == "0.0.0.0" and launched["server_port"] == 7999


def test_share_and_auth_reach_launch(launched):
    import app

    app.main(["--share", "--auth", "ann:s3cr:et"])
    assert launched["share"] is True and launched["auth"] == ("ann", "s3cr:et")
    assert launched["server_name"] is None  # Gradio's default / env
    # A share link serves strangers: public mode's caps (tests/test_security.py checks the rest of its policy).
    caps = load_config().caps
    assert launched["queue_max_size"] == caps["queue_size"]
    assert launched["max_file_size"] == caps["max_upload_mb"] * 1024 * 1024
    assert launched["state_session_capacity"] == caps["max_sessions"]


def test_a_local_app_bounds_only_uploads(launched):
    import app

    from playground.handover import MAX_TRACE_MB

    app.main([])
    assert launched["queue_max_size"] is None and "state_session_capacity" not in launched
    # A trace file to open (the doctor's sample checks its own 1 MB, in every mode).
    assert launched["max_file_size"] == MAX_TRACE_MB * 1024 * 1024


def test_auth_must_be_user_colon_password(launched, capsys):
    import app

    with pytest.raises(SystemExit):
        app.main(["--auth", "annonly"])
    assert "--auth must be USER:PASSWORD" in capsys.readouterr().err


def test_public_flag_bounds_queue_and_uploads(launched, config):
    import app

    app.main(["--public"])
    assert launched["queue_max_size"] == config.caps["queue_size"]
    assert launched["max_file_size"] == config.caps["max_upload_mb"] * 1024 * 1024
    assert launched["state_session_capacity"] == config.caps["max_sessions"]
    assert launched["auth"] is None and launched["share"] is False


def test_public_mode_refuses_trust_remote_code(launched, monkeypatch):
    import app

    monkeypatch.setenv("SPACE_ID", "someone/eos")  # inside a Space, public mode is on without --public
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--trust-remote-code"])
    assert "cannot be used in public mode" in str(exit_info.value)
    assert launched == {}


def test_app_refuses_a_missing_model_with_a_sentence(capsys):
    import app

    with pytest.raises(SystemExit) as exit_info:
        app.main(["--model", "/no/such/model"])
    assert "No such file or directory" in str(exit_info.value)
