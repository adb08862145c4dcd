"""Learn: guided lessons on the live model. A lesson is data (one YAML file, see docs/teaching.md): a preset
comparison, a question asked before the run, and its answer as a named function of the run's trace
(:mod:`.answers`), so every answer is checked against what the model actually did.

    from playground.lessons import load_lessons, run_to_end
    from playground.models import load_model
    from playground.service import Playground

    lesson = load_lessons()[0]
    result = run_to_end(Playground(load_model()), lesson)
    print(lesson.question.text, result.answer_text(), result.feedback(True))
"""

from .answers import ANSWERS, KINDS, AnswerSpec
from .runner import Result, lesson_run, parse_prediction, run_to_end
from .schema import BUILTIN_DIR, Lesson, LessonError, load_lessons, read_lesson

__all__ = ["ANSWERS", "KINDS", "AnswerSpec", "BUILTIN_DIR", "Lesson", "LessonError", "Result", "lesson_run",
           "load_lessons", "parse_prediction", "read_lesson", "run_to_end"]
