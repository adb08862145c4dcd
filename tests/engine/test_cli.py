"""`python -m playground compare` on the embedded model: the JSON schema, the side-by-side view, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from playground.cli import main


def test_compare_json_has_baseline_and_a_stop_string_column(smollm, monkeypatch, capsys):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    code = main(["compare", "--prompt", "What can I do in Paris?", "--max-new-tokens", "80",
                 "--intervention", "stop_strings", "--stop-string", "\\n\\n", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "SmolLM2-135M-Instruct" and data["settings"]["max_new_tokens"] == 80
    baseline, stops = data["variants"]
    assert baseline["name"] == "baseline" and baseline["stop_reason"] == "max_new_tokens"
    # The shell's "\n\n" (backslash, n) is the paragraph break the answer reaches around step 67.
    assert stops["stop_reason"] == "stop_string" and stops["stop_detail"] == "\n\n"
    assert stops["text"].endswith("paradise.") and "\n\n" not in stops["text"]
    assert baseline["text"].startswith(stops["text"])
    step = stops["steps"][0]
    assert {"step", "token_id", "token", "p_eos_raw", "p_eos", "top_k"} <= set(step)


def test_compare_prints_columns_side_by_side(smollm, monkeypatch, capsys):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    assert main(["compare", "--prompt", "What can I do in Paris?", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("baseline"))
    assert "│ eos_reward" in header
    assert "hit max new tokens (8)" in out


def test_compare_refuses_bad_input_with_a_sentence_and_exit_2():
    result = subprocess.run([sys.executable, "-m", "playground", "compare", "--prompt", "Hi", "--max-new-tokens", "0"],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                            timeout=120)
    assert result.returncode == 2
    assert "error: max_new_tokens must be between 1 and" in result.stderr
    assert "Traceback" not in result.stderr
