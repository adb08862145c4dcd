"""A lesson file, read and checked: every field in one place, each refusal a sentence naming the file and the field.

A lesson is one YAML file (docs/teaching.md describes every field, with a worked example). Reading it checks the
settings and columns by the rules every other door uses (:mod:`playground.request`), the answer functions
against :data:`~playground.lessons.answers.ANSWERS` (name, arguments, kind) and the steps and columns they point
at against the lesson's own budget and columns, so a broken lesson is refused when the app starts, not when a
student reaches it.
"""

from __future__ import annotations

import inspect
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..request import SETTINGS, check_setting, check_settings, columns_from_json, parse_column
from .answers import ANSWERS, KINDS, STAGES, STOP_REASONS, AnswerSpec

BUILTIN_DIR = Path(__file__).parent / "builtin"
MAX_EXPLANATION_WORDS = 150
# What a "why" text may quote from the run.
WHY_FIELDS = ("answer", "column", "column_name", "step", "stage", "p_eos", "kept", "stop_reason", "text", "token")
FIELDS = ("id", "order", "title", "goal", "explanation", "prompts", "settings", "columns", "adapter", "question",
          "premise", "why", "now_you")


class LessonError(ValueError):
    """A lesson file that cannot be used: the sentence names the file and the field."""


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    answer: AnswerSpec
    options: tuple[str, ...] = ()  # a choice's options
    tolerance: float = 0  # steps and counts: a prediction this close is right


@dataclass(frozen=True)
class Premise:
    check: AnswerSpec  # a yes/no function of the run
    expect: bool
    says: str  # why a prompt does not show the lesson, when the check fails


@dataclass(frozen=True)
class Why:
    """Where the answer can be seen: a column, a step on the chart (a number, "stop": the column's last step,
    "answer": the answer itself when it is a step, or a step function of the run) and a stage row."""

    column: int
    step: int | str | AnswerSpec
    stage: str
    text: str


@dataclass(frozen=True)
class Change:
    """The one change of "now you": a setting (``setting``) or a column (``column``, from 1) takes ``value``."""

    setting: str | None
    column: int | None
    value: object
    says: str


@dataclass(frozen=True)
class NowYou:
    change: Change
    question: Question
    why: Why


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter the lesson trains (once, cached) with the project's trainer before it runs."""

    name: str
    recipe: str
    steps: int


@dataclass(frozen=True)
class Lesson:
    id: str
    order: int
    title: str
    goal: str
    explanation: str
    prompts: tuple[str, ...]
    settings: dict
    columns: tuple[str, ...]
    question: Question
    why: Why
    now_you: NowYou
    premise: Premise | None = None
    adapter: Adapter | None = None
    source: str = ""  # the file it was read from
    builtin: bool = True

    def settings_with(self, change: Change | None = None, value=None) -> tuple[dict, list[str]]:
        """The run's settings and columns, with the "now you" change applied (``value``: the learner's own value,
        else the change's)."""
        settings, columns = dict(self.settings), list(self.columns)
        if change is not None:
            value = change.value if value is None else value
            if change.setting:
                settings[change.setting] = check_setting(change.setting, value)
            else:
                columns[change.column - 1] = parse_column(value).name
        return settings, columns


class _Reader:
    """Reads one file's fields; ``fail`` raises the sentence naming the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str):
        raise LessonError(f"lesson {self.path.name}: {where}: {problem}")

    def text(self, data: dict, key: str, where: str, *, required: bool = True, default: str = "") -> str:
        value = data.get(key)
        if value is None and not required:
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{where}{key}", "give it as text" + ("" if key in data else " (it is missing)"))
        return value.strip()

    def mapping(self, data: dict, key: str, where: str, *, required: bool = True) -> dict | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, dict):
            self.fail(f"{where}{key}", "give it as a mapping of fields" + ("" if key in data else " (it is missing)"))
        return value

    def answer(self, data, where: str, *, kind: str | None, columns: int, max_new_tokens: int,
               allow_before: bool) -> AnswerSpec:
        if not isinstance(data, dict) or not isinstance(data.get("function"), str):
            self.fail(where, "give the answer function as {function: NAME, ...its arguments}, e.g. "
                             "{function: stop_step, column: 1}")
        name, args = data["function"], {k: v for k, v in data.items() if k != "function"}
        if name not in ANSWERS:
            self.fail(f"{where}.function", f"unknown answer function {name!r}; known: {', '.join(ANSWERS)}")
        function = ANSWERS[name]
        if kind is not None and function.kind != kind:
            self.fail(f"{where}.function", f"{name} answers a {function.kind!r} question, and this question's kind "
                                           f"is {kind!r}")
        if function.before and not allow_before:
            self.fail(f"{where}.function", f"{name} compares with the lesson's first run: use it in now_you only")
        parameters = function.parameters
        unknown = sorted(set(args) - set(parameters))
        missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in args]
        if unknown or missing:
            self.fail(where, f"{name} takes {', '.join(parameters) or 'no arguments'}"
                             + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                             + (f"; missing: {', '.join(missing)}" if missing else ""))
        for key, value in args.items():
            self._argument(f"{where}.{key}", key, value, columns, max_new_tokens)
        return AnswerSpec(name, {k: (v.replace("-", "_") if k == "stage" else v) for k, v in args.items()})

    def _argument(self, where: str, key: str, value, columns: int, max_new_tokens: int) -> None:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if key in ("column", "a", "b") and not (whole and 1 <= value <= columns):
            self.fail(where, f"a column number from 1 to {columns} (the lesson's columns), got {value!r}")
        if key == "step" and not (whole and 0 <= value < max_new_tokens):
            self.fail(where, f"a step from 0 to {max_new_tokens - 1} (the lesson's max_new_tokens), got {value!r}")
        if key == "threshold" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
            self.fail(where, f"a probability from 0 to 1, got {value!r}")
        if key == "stage" and (not isinstance(value, str) or value.replace("-", "_") not in STAGES):
            self.fail(where, f"one of the stages {', '.join(STAGES)}, got {value!r}")
        if key == "reason" and value not in STOP_REASONS:
            self.fail(where, f"one of the stop reasons {', '.join(STOP_REASONS)}, got {value!r}")
        if key == "text" and not isinstance(value, str):
            self.fail(where, f"text, got {value!r}")
        if key == "final" and not isinstance(value, bool):
            self.fail(where, f"true or false, got {value!r}")

    def question(self, data: dict, key: str, where: str, columns: int, max_new_tokens: int,
                 allow_before: bool) -> Question:
        q = self.mapping(data, key, where)
        where = f"{where}{key}."
        text = self.text(q, "text", where)
        kind = q.get("kind")
        if kind not in KINDS:
            self.fail(f"{where}kind", f"one of {', '.join(KINDS)}, got {kind!r}")
        options = q.get("options") or ()
        if kind == "choice":
            if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
                self.fail(f"{where}options", "a choice needs a list of at least two options, as text")
        elif options:
            self.fail(f"{where}options", f"only a 'choice' question has options; this one is {kind!r}")
        tolerance = q.get("tolerance", 0)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
            self.fail(f"{where}tolerance", f"a number from 0 up, got {tolerance!r}")
        if tolerance and kind not in ("step", "count"):
            self.fail(f"{where}tolerance", "only step and count questions have a tolerance")
        answer = self.answer(q.get("answer"), f"{where}answer", kind=kind, columns=columns,
                             max_new_tokens=max_new_tokens, allow_before=allow_before)
        return Question(text, kind, answer, tuple(options), tolerance)

    def why(self, data: dict, where: str, columns: int, max_new_tokens: int, kind: str) -> Why:
        column = data.get("column")
        if isinstance(column, bool) or not isinstance(column, int) or not 1 <= column <= columns:
            self.fail(f"{where}column", f"a column number from 1 to {columns}, got {column!r}")
        step = data.get("step", "stop")
        if isinstance(step, dict):
            step = self.answer(step, f"{where}step", kind="step", columns=columns, max_new_tokens=max_new_tokens,
                               allow_before=False)
        elif step == "answer":
            if kind != "step":
                self.fail(f"{where}step", f"'answer' points at the answer's step, and this question's kind is {kind!r}")
        elif step != "stop" and not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step < max_new_tokens):
            self.fail(f"{where}step", f"a step from 0 to {max_new_tokens - 1}, 'stop', 'answer' or a step function, "
                                      f"got {step!r}")
        stage = data.get("stage", "raw")
        if not isinstance(stage, str) or stage.replace("-", "_") not in STAGES:
            self.fail(f"{where}stage", f"one of the stages {', '.join(STAGES)}, got {stage!r}")
        text = self.text(data, "text", where)
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as error:
            self.fail(f"{where}text", f"a template with {{field}}s: {error}")
        unknown = sorted(names - set(WHY_FIELDS))
        if unknown:
            self.fail(f"{where}text", f"unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; a why text may "
                                      f"use {', '.join('{' + n + '}' for n in WHY_FIELDS)}")
        return Why(column, step, stage.replace("-", "_"), text)


def read_lesson(path: Path, *, builtin: bool = False) -> Lesson:
    """The lesson in ``path``; LessonError naming the file and the field for anything it cannot use."""
    path = Path(path)
    r = _Reader(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise LessonError(f"lesson {path.name}: cannot be read: {error.__class__.__name__}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise LessonError(f"lesson {path.name}: not valid YAML{line}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        r.fail("the file", "a lesson is a YAML mapping of fields (id, order, title, ...)")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        r.fail(unknown[0], f"unknown field; a lesson has {', '.join(FIELDS)}")
    lesson_id = r.text(data, "id", "")
    if not lesson_id.replace("-", "").replace("_", "").isalnum():
        r.fail("id", f"letters, digits, - and _ only, got {lesson_id!r}")
    order = data.get("order")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        r.fail("order", f"a whole number from 1 (the lesson's place in the list), got {order!r}")
    title, goal = r.text(data, "title", ""), r.text(data, "goal", "")
    explanation = r.text(data, "explanation", "")
    words = len(explanation.split())
    if words > MAX_EXPLANATION_WORDS:
        r.fail("explanation", f"{words} words; keep it to {MAX_EXPLANATION_WORDS} (one screen)")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        r.fail("prompts", "a list of one or more prompts, as text (the lesson tries the next when its premise fails)")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        r.fail("settings", "a mapping of run settings, e.g. {max_new_tokens: 40, temperature: 0}")
    if "prompt" in settings:
        r.fail("settings.prompt", "prompts go in the lesson's 'prompts' list")
    try:
        settings = {name: value for name, value in check_settings(settings).items() if name in settings}
    except ValueError as error:
        r.fail("settings", str(error))
    max_new_tokens = settings.get("max_new_tokens", SETTINGS["max_new_tokens"].default)
    adapter = None
    if data.get("adapter") is not None:
        a = r.mapping(data, "adapter", "")
        from ..finetune.recipes import RECIPES

        name, recipe = r.text(a, "name", "adapter."), r.text(a, "recipe", "adapter.")
        if recipe not in RECIPES:
            r.fail("adapter.recipe", f"one of {', '.join(RECIPES)}, got {recipe!r}")
        steps = a.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 200:
            r.fail("adapter.steps", f"a whole number from 1 to 200 (it trains while the student waits), got {steps!r}")
        adapter = Adapter(name, recipe, steps)
    columns = data.get("columns")
    if not isinstance(columns, list) or not columns:
        r.fail("columns", "a list of one or more columns in the column syntax, e.g. [baseline, eos_reward(strength=8)]")
    try:
        parsed = columns_from_json(columns)
    except ValueError as error:
        r.fail("columns", str(error))
    models = {"base", *([adapter.name] if adapter else [])}
    for index, column in enumerate(parsed, start=1):
        if column.model is not None and column.model not in models:
            r.fail(f"columns[{index}]", f"model {column.model!r}: a lesson's column runs on the loaded model, @base or "
                                        "the lesson's own adapter (adapter.name)")
    n = len(parsed)
    question = r.question(data, "question", "", n, max_new_tokens, allow_before=False)
    premise = None
    if data.get("premise") is not None:
        p = r.mapping(data, "premise", "")
        check = r.answer(p.get("check"), "premise.check", kind="yes_no", columns=n, max_new_tokens=max_new_tokens,
                         allow_before=False)
        expect = p.get("expect", True)
        if not isinstance(expect, bool):
            r.fail("premise.expect", f"true or false, got {expect!r}")
        premise = Premise(check, expect, r.text(p, "says", "premise."))
    why = r.why(r.mapping(data, "why", ""), "why.", n, max_new_tokens, question.kind)
    now = r.mapping(data, "now_you", "")
    change_data = r.mapping(now, "change", "now_you.")
    says = r.text(change_data, "says", "now_you.change.")
    if ("setting" in change_data) == ("column" in change_data) or "value" not in change_data:
        r.fail("now_you.change", "give one change: {setting: NAME, value: V} or {column: N, value: SPEC}, with 'says'")
    if "setting" in change_data:
        setting = change_data["setting"]
        if setting not in SETTINGS or setting == "prompt":
            r.fail("now_you.change.setting", f"one of the run settings ({', '.join(s for s in SETTINGS if s != 'prompt')}), "
                                             f"got {setting!r}")
        try:
            value = check_setting(setting, change_data["value"])
        except ValueError as error:
            r.fail("now_you.change.value", str(error))
        change = Change(setting, None, value, says)
        if setting == "max_new_tokens":
            max_new_tokens = max(max_new_tokens, value)
    else:
        column = change_data["column"]
        if isinstance(column, bool) or not isinstance(column, int) or not 1 <= column <= n:
            r.fail("now_you.change.column", f"a column number from 1 to {n}, got {column!r}")
        try:
            value = parse_column(change_data["value"]).name
        except ValueError as error:
            r.fail("now_you.change.value", str(error))
        change = Change(None, column, value, says)
    now_question = r.question(now, "question", "now_you.", n, max_new_tokens, allow_before=True)
    now_why = r.why(now["why"], "now_you.why.", n, max_new_tokens, now_question.kind) \
        if isinstance(now.get("why"), dict) else why
    if now.get("why") is not None and not isinstance(now.get("why"), dict):
        r.fail("now_you.why", "a mapping like the lesson's why (column, step, stage, text)")
    return Lesson(lesson_id, order, title, goal, explanation, tuple(p.strip() for p in prompts), settings,
                  tuple(c.name for c in parsed), question, why, NowYou(change, now_question, now_why), premise,
                  adapter, str(path), builtin)


def load_lessons(extra_dirs=(), *, builtin: bool = True) -> list[Lesson]:
    """The built-in lessons and every ``*.yaml`` in ``extra_dirs`` (a teacher's own), in their order; a
    teacher's lesson with a built-in's id replaces it. LessonError names the first file and field it cannot use."""
    lessons: dict[str, Lesson] = {}
    sources = [(BUILTIN_DIR, True)] if builtin else []
    sources += [(Path(d), False) for d in extra_dirs or ()]
    for directory, is_builtin in sources:
        if not directory.is_dir():
            raise LessonError(f"--lessons {directory}: not a folder of lesson files (*.yaml)")
        files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        if not files and not is_builtin:
            raise LessonError(f"--lessons {directory}: no lesson files (*.yaml) in it")
        seen: dict[str, str] = {}
        for path in files:
            lesson = read_lesson(path, builtin=is_builtin)
            if lesson.id in seen:
                raise LessonError(f"lesson {path.name}: id: {lesson.id!r} is also the id of {seen[lesson.id]}")
            seen[lesson.id] = path.name
            lessons[lesson.id] = lesson
    return sorted(lessons.values(), key=lambda lesson: (lesson.order, lesson.id))
