"""Learn's lesson files: the eight built-in lessons in order, a malformed lesson refused with a sentence naming the
file and the field, a teacher's folder, predictions read by kind, and the teacher's guide's worked example."""

from __future__ import annotations


import pytest

from playground.cli import main
from playground.lessons import KINDS, LessonError, load_lessons, parse_prediction, read_lesson
from tests.support import ROOT, write_lesson

BUILTIN = {lesson.id: lesson for lesson in load_lessons()}
TOPICS = ["greedy", "temperature", "truncation", "eos", "limits", "ramp", "article", "lost-eos"]


def test_eight_builtin_lessons_in_order_with_short_explanations():
    lessons = load_lessons()
    assert [lesson.id for lesson in lessons] == TOPICS
    assert [lesson.order for lesson in lessons] == list(range(1, 9))
    for lesson in lessons:
        assert len(lesson.explanation.split()) <= 150, lesson.id
        assert lesson.question.kind in KINDS and lesson.now_you.question.kind in KINDS
    # The question kinds the issue names are all asked somewhere.
    asked = {lesson.question.kind for lesson in lessons} | {lesson.now_you.question.kind for lesson in lessons}
    assert {"column", "step", "count", "yes_no", "longer_shorter", "choice"} <= asked


@pytest.mark.parametrize("change, drop, sentence", [
    ({"question": {"text": "?", "kind": "step", "answer": {"function": "stop_when"}}}, None,
     "question.answer.function: unknown answer function 'stop_when'"),
    ({"question": {"text": "?", "kind": "yes_no", "answer": {"function": "stop_step", "column": 1}}}, None,
     "question.answer.function: stop_step answers a 'step' question, and this question's kind is 'yes_no'"),
    ({"question": {"text": "?", "kind": "step", "answer": {"function": "stop_step", "column": 3}}}, None,
     "question.answer.column: a column number from 1 to 1"),
    ({"settings": {"temperature": "hot"}}, None, "settings: temperature must be a number, got 'hot'"),
    ({"columns": ["baseline", "eos_rewards"]}, None, "columns: column 2: unknown intervention 'eos_rewards'"),
    ({"explanation": "word " * 151}, None, "explanation: 151 words; keep it to 150"),
    (None, "goal", "goal: give it as text (it is missing)"),
    ({"why": {"column": 1, "step": "stop", "stage": "raw", "text": "p(EOS) was {p_eos} and {nonsense}"}}, None,
     "why.text: unknown field(s) {nonsense}"),
    ({"now_you": {"change": {"setting": "temprature", "value": 1, "says": "x"},
                  "question": {"text": "?", "kind": "yes_no", "answer": {"function": "stops_by_eos", "column": 1}}}},
     None, "now_you.change.setting: one of the run settings"),
])
def test_a_malformed_lesson_is_refused_naming_the_file_and_field(tmp_path, change, drop, sentence):
    write_lesson(tmp_path, "broken", change, drop)
    with pytest.raises(LessonError) as error:
        load_lessons([tmp_path])
    assert str(error.value).startswith("lesson broken.yaml: ") and sentence in str(error.value)


def test_a_teachers_folder_adds_its_lessons_and_broken_yaml_is_named(tmp_path, capsys):
    write_lesson(tmp_path / "ok", "mine", {"order": 9, "title": "My lesson"})
    assert [lesson.id for lesson in load_lessons([tmp_path / "ok"])][-1] == "teacher-mine"
    assert main(["learn", "--list", "--lessons", str(tmp_path / "ok")]) == 0
    assert "teacher-mine" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "oops.yaml").write_text("id: x\ntitle: [unclosed\n")
    assert main(["learn", "--list", "--lessons", str(tmp_path / "bad")]) == 2
    assert "error: lesson oops.yaml: not valid YAML at line" in capsys.readouterr().err


def test_predictions_are_read_by_kind_with_a_sentence():
    eos, limits = BUILTIN["eos"], BUILTIN["limits"]
    assert parse_prediction(eos.question, "7", 1) == 7 and parse_prediction(eos.question, "never", 1) is None
    assert parse_prediction(limits.question, "2", 2) == 2 and parse_prediction(limits.question, "tie", 2) is None
    assert parse_prediction(eos.now_you.question, "max_new_tokens", 1) == "max_new_tokens"
    with pytest.raises(ValueError, match="prediction must be a whole number"):
        parse_prediction(eos.question, "soon", 1)
    with pytest.raises(ValueError, match="prediction must be a column number from 1 to 2"):
        parse_prediction(limits.question, "5", 2)


def test_the_teachers_guide_worked_example_is_a_valid_lesson(tmp_path):
    guide = (ROOT / "docs" / "teaching.md").read_text()
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "weak-ramp.yaml").write_text(example)
    lesson = read_lesson(tmp_path / "weak-ramp.yaml")
    assert lesson.id == "weak-ramp" and lesson.columns == ("baseline", "eos_reward")
    assert lesson.settings_with(lesson.now_you.change)[0]["strength"] == 16
