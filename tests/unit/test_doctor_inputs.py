"""What the doctor reads before any model: a training sample (prompt/response, text, conversations, labelled ids)
with a sentence naming the bad line and field, and the CLI's load errors on stderr with exit 2."""

from __future__ import annotations

import pytest

from playground.cli import main as cli_main
from playground.doctor import load_sample


# -- load_sample ----------------------------------------------------------------------------------


def test_load_sample_reads_both_shapes(tmp_path):
    path = tmp_path / "sample.jsonl"
    path.write_text('{"prompt": "Hi?", "response": "Hello."}\n\n{"text": "Q: Hi?\\nA: Hello.</s>"}\n')
    assert load_sample(path) == [{"prompt": "Hi?", "response": "Hello."}, {"text": "Q: Hi?\nA: Hello.</s>"}]


def test_load_sample_reads_conversations_and_labelled_ids(tmp_path):
    path = tmp_path / "sample.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}\n'
                    '{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}\n')
    assert load_sample(path)[1] == {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": broken}\n', r"line 2: not valid JSON"),
    ('{"prompt": "only a prompt"}\n', r"line 1: expected .*got keys \['prompt'\]"),
    ('{"text": "ok"}\n{"prompt": "Hi?", "response": 3}\n', r"line 2: 'response' must be a string"),
    ('["a", "list"]\n', r"line 1: expected a JSON object"),
    ("\n\n", r"no examples"),
    ('{"messages": []}\n', r"line 1: 'messages' must be a non-empty list"),
    ('{"messages": [{"role": "user", "content": "Hi?"}]}\n', r"line 1: 'messages' has no assistant turn"),
    ('{"messages": [{"role": "user"}]}\n',
     r"line 1: message 1 needs a 'role' \(system, user, assistant\) and a 'content' string"),
    ('{"input_ids": [1, 2], "labels": [1]}\n', r"line 1: 'input_ids' has 2 ids but 'labels' has 1"),
    ('{"input_ids": [1, "a"], "labels": [1, 2]}\n', r"line 1: 'input_ids' must be a non-empty list of integers"),
])
def test_load_sample_names_the_bad_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_sample(path)


# -- the CLI -----------------------------------------------------------------------------------------


def test_main_reports_load_errors_on_stderr(tmp_path, capsys):
    assert cli_main(["doctor", "--model", str(tmp_path / "missing-model")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert cli_main(["doctor", "--sample", str(bad)]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err
