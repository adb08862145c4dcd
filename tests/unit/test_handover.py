"""Hand it over (issue 34): app.py refuses to open a damaged file before loading a model."""

from __future__ import annotations

import pytest


def test_app_refuses_to_open_a_damaged_file_before_loading_a_model(tmp_path, monkeypatch, capsys):
    import app

    monkeypatch.setattr("playground.cli.load_from_args", lambda args: pytest.fail("the model was loaded"))
    (tmp_path / "bad.json").write_text('{"model": "m", "prompt": ', encoding="utf-8")
    with pytest.raises(SystemExit, match="--open .*bad.json: trace file: damaged JSON"):
        app.main(["--open", str(tmp_path / "bad.json")])
