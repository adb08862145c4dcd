"""One rule each: whether a model reference is a local path, and what a chat ``messages`` list must be, decided by
one function for every door, with the same sentence."""

from __future__ import annotations

import json

import pytest

from playground.doctor.core import load_sample
from playground.evaluate.prompt_files import prompt_from_record
from playground.finetune.data import parse_examples
from playground.models import looks_local

PATHS = ["/models/run", "./run", "../run", "~/run", ".cache", "C:\\models\\run", "runs/7/adapter", "model.gguf",
         "c:/models"]
HUB_IDS = ["default", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_a_path_is_told_from_a_hub_id_by_its_spelling_alone(tmp_path):
    assert all(looks_local(p) for p in PATHS) and not any(looks_local(h) for h in HUB_IDS)
    (tmp_path / "gpt2").mkdir()
    assert not looks_local("gpt2")  # a visitor's reference: the disk is not looked at
    assert looks_local(str(tmp_path / "gpt2"), look_on_disk=True)


def _doors(messages) -> list[str]:
    """What Evaluate's prompt sets, the fine-tune data and the doctor's sample say of one ``messages`` line."""
    said = []
    line = json.dumps({"messages": messages})
    try:
        prompt_from_record({"messages": messages}, "line 1")
    except ValueError as error:
        said.append(str(error))
    data = parse_examples(f'{line}\n{{"prompt": "Hi", "response": "Hello."}}\n'.encode(), "jsonl", "data")
    said += [problem.replace("data, ", "") for problem in data.problems]
    return said


@pytest.mark.parametrize("messages, sentence", [
    ([], "line 1: 'messages' must be a non-empty list of {\"role\", \"content\"} objects"),
    ([{"role": "user"}], "line 1: message 1 needs a 'role' (system, user, assistant) and a 'content' string"),
    ([{"role": "tool", "content": "42"}], "line 1: message 1 needs a 'role' (system, user, assistant) and a 'content' string"),
    ([{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}],
     "line 1: a system message may only come first"),
])
def test_a_bad_messages_list_gets_one_sentence_in_every_door(tmp_path, messages, sentence):
    assert _doors(messages) == [sentence, sentence]
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps({"messages": messages}) + "\n")
    with pytest.raises(ValueError) as refused:
        load_sample(sample)
    assert str(refused.value) == sentence.replace("line 1", f"{sample}, line 1")


def test_a_prompt_ends_with_the_users_turn_and_a_lesson_has_the_assistants():
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    answered = [*asked, {"role": "assistant", "content": "Hello."}]
    assert prompt_from_record({"messages": asked}, "line 1").messages == asked
    assert _doors(answered) == ["line 1: the last message must be the user's (the model answers it), got 'assistant'"]
    assert _doors(asked) == ["line 1: 'messages' has no assistant turn to learn from"]
