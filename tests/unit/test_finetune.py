"""The fine-tune lab's inputs: user data files (JSONL and CSV) with bad lines named, and the CLI naming bad input."""

from __future__ import annotations

import pytest

from playground.finetune.data import parse_examples, read_examples


def test_user_data_files_jsonl_and_csv_with_bad_lines_named(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"prompt": "Hi", "response": "Hello."}\nnot json\n{"text": "Plain text."}\n'
                     '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A."}]}\n'
                     '{"prompt": "no response"}\n', encoding="utf-8")
    data = read_examples(jsonl)
    assert len(data.examples) == 3
    assert [p.split(":")[0] for p in data.problems] == ["train.jsonl, line 2", "train.jsonl, line 5"]
    assert "'response' must be a non-empty string" in data.problems[1]
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("prompt,response\nWhat is 2+2?,4.\n", encoding="utf-8")
    assert read_examples(csv_file).examples == [{"prompt": "What is 2+2?", "response": "4."}]
    with pytest.raises(ValueError, match="header row with 'prompt' and 'response'"):
        parse_examples(b"question,answer\na,b\n", "csv", "qa.csv")


def test_cli_names_bad_input(tmp_path, capsys):
    from playground.cli import main

    assert main(["finetune", "--recipe", "correct", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("nonsense\n", encoding="utf-8")
    assert main(["finetune", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl: no usable example (bad.jsonl, line 1: not valid JSON" in capsys.readouterr().err
