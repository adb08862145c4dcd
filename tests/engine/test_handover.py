"""Hand it over (issue 34): compare writes the one-file HTML page, and a damaged or foreign file is refused with
a sentence."""

from __future__ import annotations

import json
import re

import pytest

from playground.handover import read_trace
from playground.trace import saved_json
from tests.support import HOSTILE_PROMPT


def test_compare_writes_the_html_file(smollm, monkeypatch, tmp_path, capsys):
    from playground.cli import main

    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    out = tmp_path / "out.html"
    assert main(["compare", "--prompt", "Say hi.", "--max-new-tokens", "6", "--html", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    trace = read_trace(out.read_bytes())
    assert [v.name for v in trace.variants] == ["baseline", "eos_reward"] and len(trace.variants[0].steps) == 6
    assert all(len(step.stages) >= 2 for step in trace.variants[1].steps)  # the inspector's stages are in it
    page = out.read_text(encoding="utf-8")
    assert 'id="fix-1"' in page and "/root" not in page and str(tmp_path) not in page  # no host path


def test_a_damaged_or_foreign_file_is_refused_with_a_sentence(hostile):
    text = saved_json(hostile)
    data = json.loads(text)
    cases = [
        (text[:-40], "damaged JSON"),
        (b'{"prompt": "' + b"a" * 50 * 1024 * 1024 + b'"}', "50.0 MB is more than this app reads (32 MB at most)"),
        (json.dumps({**data, "schema_version": 2}), "schema_version: this trace follows schema 2"),
        (json.dumps({**data, "variants": [{**data["variants"][0], "steps": "many"}]}), "variants[0].steps must be a list"),
        (json.dumps({**data, "settings": {**data["settings"], "evil": 1}}), "'evil' is not a setting"),
        (json.dumps({**data, "variants": [{**data["variants"][0], "interventions": [{"name": "rm_rf"}]}]}), "rm_rf"),
        (json.dumps({**data, "variants": [{**data["variants"][0], "name": f"c{i}"} for i in range(17)]}),
         "a trace holds 16 at most"),
        ("<!DOCTYPE html><p>a page</p>", "holds no trace"),
        (b"\xff\xfe\x00", "not text"),
    ]
    for content, sentence in cases:
        with pytest.raises(ValueError, match=re.escape(sentence)):
            read_trace(content)
    # A file without a version (the CLI's --json, /trace) is read as this one.
    assert read_trace(hostile.to_json(stages=True)).prompt == HOSTILE_PROMPT
