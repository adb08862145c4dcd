"""Learn's lessons on the embedded model: every built-in lesson runs, its question and its "now you" step are
answered from the run with an answer of the declared kind; a premise that fails moves to the next prompt and says
so; the app's caps hold; the CLI's ``learn`` subcommand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from playground.cli import main
from playground.lessons import load_lessons, read_lesson, run_to_end
from playground.lessons.runner import request_for
from playground.service import Playground
from playground.space.policy import Policy
from playground.trace import StopReason
from tests.support import write_lesson

BUILTIN = {lesson.id: lesson for lesson in load_lessons()}
TOPICS = ["greedy", "temperature", "truncation", "eos", "limits", "ramp", "article", "lost-eos"]


def of_kind(question, answer, columns: int) -> bool:
    """Whether ``answer`` is an answer of ``question``'s kind (what the page's widgets can show and judge)."""
    kind = question.kind
    if kind == "column":
        return answer is None or (isinstance(answer, int) and 1 <= answer <= columns)
    if kind == "step":
        return answer is None or (isinstance(answer, int) and answer >= 0)
    if kind == "count":
        return isinstance(answer, int) and not isinstance(answer, bool) and answer >= 0
    if kind == "yes_no":
        return isinstance(answer, bool)
    if kind == "longer_shorter":
        return answer in ("longer", "shorter", "same")
    return answer in question.options


# Lessons 5-7 decode 80 tokens in two columns, twice (their point needs the article's long answer): slow.
LONG = {"limits", "ramp", "article"}


@pytest.mark.parametrize("lesson_id", [pytest.param(id_, marks=[pytest.mark.slow] if id_ in LONG else [])
                                       for id_ in TOPICS if id_ != "lost-eos"])
def test_every_builtin_lesson_answers_both_questions_from_the_run(playground, lesson_id):
    lesson = BUILTIN[lesson_id]
    first = run_to_end(playground, lesson)
    columns = len(lesson.columns)
    assert len(first.trace.variants) == columns and all(v.finished for v in first.trace.variants)
    assert of_kind(lesson.question, first.answer, columns), (lesson_id, first.answer)
    assert first.premise_held in (None, True), first.notes  # the lesson's first prompts show its point on SmolLM2
    column = first.trace.variants[first.why["column"] - 1]
    assert 0 <= first.why["step"] < len(column.steps)
    # The feedback says right or wrong against this run's answer, and where to look.
    right = first.feedback(first.answer)
    assert right.startswith("Right") and first.answer_text() in right and f"at step {first.why['step']}" in right
    now = run_to_end(playground, lesson, "now_you", before=first)
    assert of_kind(lesson.now_you.question, now.answer, columns), (lesson_id, now.answer)
    assert now.prompt == first.prompt
    change = lesson.now_you.change
    if change.setting:
        assert now.trace.settings.get(change.setting, change.value) == change.value
    else:
        assert now.trace.variants[change.column - 1].name == change.value


def test_answers_match_what_the_run_shows(playground):
    """Spot checks of answer functions against the trace itself: the EOS lesson's step is the first whose raw
    p(EOS) passes 0.5; on lesson 5's columns with a budget of 10, the column that stops first is "they tie"."""
    limits = run_to_end(playground, BUILTIN["limits"], "now_you", prompt=BUILTIN["limits"].prompts[0])
    lengths = [len(v.steps) for v in limits.trace.variants]
    assert lengths == [10, 10] and limits.answer is None and limits.answer_text() == "no single column (they tie)"
    assert all(v.stop_reason == StopReason.MAX_NEW_TOKENS for v in limits.trace.variants)
    eos = run_to_end(playground, BUILTIN["eos"])
    steps = eos.trace.variants[0].steps
    assert steps[eos.answer].p_eos_raw > 0.5 and all(s.p_eos_raw <= 0.5 for s in steps[:eos.answer])


def test_a_premise_that_fails_moves_to_the_next_prompt_and_says_so(playground, tmp_path):
    path = write_lesson(tmp_path, "premise", {"prompts": ["What can I do in Paris?", "What is the capital of France?"],
                                              "settings": {"max_new_tokens": 12, "temperature": 0}})
    result = run_to_end(playground, read_lesson(path))
    assert result.prompt == "What is the capital of France?" and result.premise_held is True
    assert "'What can I do in Paris?' does not show what this lesson is about" in result.notes[0]
    assert "Trying the lesson's next prompt, 'What is the capital of France?'" in result.notes[0]
    # With no prompt left, it says so and still answers from the run it has.
    path = write_lesson(tmp_path, "premise-last", {"prompts": ["What can I do in Paris?"],
                                                   "settings": {"max_new_tokens": 6}})
    last = run_to_end(playground, read_lesson(path))
    assert last.premise_held is False and "It was the lesson's last prompt" in last.notes[0]
    assert last.answer is None  # p(EOS) never passed 0.5 in this run: "never", read from the run


def test_public_caps_clamp_the_budget_and_refuse_what_cannot_be_clamped(smollm):
    public = Playground(smollm, policy=Policy(public=True, allowed_models=("default",), max_new_tokens=20, max_columns=1))
    settings, columns, notes = request_for(public, BUILTIN["eos"], "question")
    assert settings["max_new_tokens"] == 20
    assert notes == ["This app allows at most 20 new tokens: the lesson asked for 24, so it runs with 20."]
    with pytest.raises(ValueError, match="lesson 5: it compares 2 columns, and this app allows 1"):
        request_for(public, BUILTIN["limits"], "question")
    wide = Playground(smollm, policy=Policy(public=True, allowed_models=("default",)))
    with pytest.raises(ValueError, match="this app does not train for visitors"):
        run_to_end(wide, BUILTIN["lost-eos"])


def test_cli_learn_list_and_one_lesson_as_json(smollm, monkeypatch, capsys):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    assert main(["learn", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(lesson_id in listing for lesson_id in TOPICS)
    assert main(["learn", "--lesson", "1", "--json", "--predict", "yes"]) == 0
    data = json.loads(capsys.readouterr().out)
    question = data["question"]
    assert data["lesson"] == "greedy" and data["explanation"] == BUILTIN["greedy"].explanation
    assert question["kind"] == "yes_no" and isinstance(question["answer"], bool)
    assert question["right"] is question["answer"] and question["feedback"].startswith("Right" if question["answer"] else "Not this time")
    assert isinstance(data["now_you"]["answer"], bool) and data["now_you"]["change"].startswith("Set the temperature to 1")
    assert main(["learn", "--lesson", "12"]) == 2
    assert "no lesson '12'; the lessons are 1 (greedy)" in capsys.readouterr().err


def short_lost_eos(tmp_path: Path, steps: int) -> Path:
    data = yaml.safe_load(Path(BUILTIN["lost-eos"].source).read_text())
    data["adapter"]["steps"] = steps
    data["settings"]["max_new_tokens"] = 8
    data["prompts"] = data["prompts"][:1]
    path = tmp_path / "lost.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def run_lost_eos(smollm, lesson, cache, monkeypatch):
    """Lesson 8's question and "now you" on a fresh service; the adapter is removed afterwards (the model is the
    session's)."""
    monkeypatch.setenv("PLAYGROUND_LESSONS_CACHE", str(cache))
    playground = Playground(smollm)
    try:
        first = run_to_end(playground, lesson)
        now = run_to_end(playground, lesson, "now_you", before=first)
        return playground, first, now
    finally:
        if lesson.adapter.name in smollm.adapters:
            playground.remove_adapter(lesson.adapter.name)


def test_lost_eos_trains_its_adapter_and_answers_from_a_short_run(smollm, tmp_path, monkeypatch):
    """Lesson 8 on a one-step adapter (the full 20 steps: the slow test below): the adapter is trained with the
    project's trainer and cached, the columns run base and adapter, both answers are of their kinds, and the notes
    carry the recipe's supervised tokens and the doctor's finding."""
    lesson = read_lesson(short_lost_eos(tmp_path, steps=1))
    _, first, now = run_lost_eos(smollm, lesson, tmp_path / "cache", monkeypatch)
    assert [v.model for v in first.trace.variants] == ["base", "lost-eos"]
    assert isinstance(first.answer, bool) and now.answer in lesson.now_you.question.options
    assert any(note.startswith("The recipe's supervised tokens") and "</" in note for note in first.notes)
    assert any("The EOS doctor on the examples it trained on" in note and "(problem)" in note for note in first.notes)
    assert list((tmp_path / "cache").iterdir())[0].name.endswith("eos_as_text-1steps-seed0")


@pytest.mark.slow
def test_lost_eos_as_shipped_loses_eos_and_the_stop_string_catches_it(smollm, tmp_path, monkeypatch):
    lesson = BUILTIN["lost-eos"]
    _, first, now = run_lost_eos(smollm, lesson, tmp_path / "cache", monkeypatch)
    assert first.premise_held and first.answer is False  # the fine-tune does not stop by EOS
    assert "</s>" in first.trace.variants[1].text
    assert now.answer == "stop_string"


def test_app_hands_a_teachers_lessons_to_the_learn_tab_as_an_argument(tmp_path, monkeypatch):
    """app.py --lessons DIR: the lessons reach the page through launch() and build_app(), not the environment;
    the Learn tab lists the teacher's lesson after the built-in ones, and its max new tokens is the log slider."""
    import gradio as gr

    import app

    write_lesson(tmp_path / "ok", "mine", {"order": 9, "title": "My lesson"})
    built = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: built.update(config=self.get_config_file()))
    app.main(["--lessons", str(tmp_path / "ok")])
    components = {c["props"].get("elem_id"): c["props"] for c in built["config"]["components"]}
    picked = [value for _, value in components["learn-picker"]["choices"]]
    assert picked[:len(BUILTIN)] == list(BUILTIN) and picked[-1] == "teacher-mine"
    assert not any(key.startswith("PLAYGROUND_LESSONS") and key != "PLAYGROUND_LESSONS_CACHE" for key in os.environ)
    # "Now you" changes max_new_tokens (lesson 5) on the same log-scale slider as Compare and Evaluate.
    assert "learn-change-max_new_tokens-scale" in components
    assert "log scale" in components["learn-change-max_new_tokens"]["label"]
