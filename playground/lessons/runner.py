"""Running a lesson on the loaded model: its preset within the app's caps, the premise checked on the run (the
next prompt when it fails, said in a sentence), the answer read from the trace, and the feedback on a prediction.

:func:`lesson_run` is a generator the page and the CLI both read: it yields a sentence (a note: a premise that
failed, a cap applied, the adapter training), each run's comparison (as it starts) and its
:class:`~playground.trace.Trace` while it decodes, and last a :class:`Result`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import Comparison, SplitComparison
from ..trace import Trace
from .answers import AnswerError, call, judge, shown_answer, stop_step
from .schema import Lesson, Question, Why

PARTS = ("question", "now_you")
_training = threading.Lock()  # one lesson adapter trains at a time; a second learner waits for it, then reuses it


@dataclass
class Result:
    """One finished run of a lesson's question (``part`` "question") or of its "now you" step."""

    lesson: Lesson
    part: str
    question: Question
    prompt: str
    trace: Trace
    answer: object
    notes: list[str] = field(default_factory=list)
    premise_held: bool | None = None  # None: the lesson has no premise (or this is "now you")
    why: dict = field(default_factory=dict)  # column (from 1), step, stage and the sentence

    @property
    def column_names(self) -> list[str]:
        return [v.name for v in self.trace.variants]

    def answer_text(self) -> str:
        return shown_answer(self.question.kind, self.answer, self.column_names)

    def right(self, prediction) -> bool:
        return judge(self.question.kind, prediction, self.answer, self.question.tolerance)

    def feedback(self, prediction) -> str:
        """Right or not, the run's answer, and where to see why."""
        kind = self.question.kind
        if prediction is None or prediction == "":
            verdict = "You made no prediction."
        else:
            close = f" (within {self.question.tolerance:g})" if self.question.tolerance else ""
            verdict = (f"Right{close}: you said {shown_answer(kind, prediction, self.column_names)}." if self.right(prediction)
                       else f"Not this time: you said {shown_answer(kind, prediction, self.column_names)}.")
        return f"{verdict} This run's answer: {self.answer_text()}. {self.why['text']}"

    def to_dict(self, prediction=None) -> dict:
        data = {"lesson": self.lesson.id, "part": self.part, "question": self.question.text, "kind": self.question.kind,
                "options": list(self.question.options), "answer": self.answer, "answer_text": self.answer_text(),
                "answer_function": self.question.answer.text(), "prompt": self.prompt,
                "premise_held": self.premise_held, "notes": self.notes, "why": self.why,
                "columns": [v.summary() for v in self.trace.variants]}
        if prediction is not None:
            data.update(prediction=prediction, right=self.right(prediction), feedback=self.feedback(prediction))
        return data


def parse_prediction(question: Question, value, columns: int):
    """A learner's prediction as the answer's type (None: none made); ValueError naming "prediction" otherwise.

    >>> from playground.lessons.answers import AnswerSpec
    >>> parse_prediction(Question("?", "step", AnswerSpec("stop_step", {"column": 1})), "12", 2)
    12
    """
    kind = question.kind
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower()
    if kind in ("step", "count"):
        if kind == "step" and text == "never":
            return None
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"prediction must be a whole number{' (or never)' if kind == 'step' else ''}, "
                             f"got {str(value)[:40]!r}") from None
        if number != int(number) or number < 0:
            raise ValueError(f"prediction must be a whole number from 0, got {str(value)[:40]!r}")
        return int(number)
    if kind == "column":
        if text in ("tie", "none", "same step"):
            return None
        match = re.fullmatch(r"(?:column\s*)?(\d+)(?:\b.*)?", text)
        if not match or not 1 <= int(match.group(1)) <= columns:
            raise ValueError(f"prediction must be a column number from 1 to {columns} (or tie), got {str(value)[:40]!r}")
        return int(match.group(1))
    if kind == "yes_no":
        if text in ("yes", "y", "true"):
            return True
        if text in ("no", "n", "false"):
            return False
        raise ValueError(f"prediction must be yes or no, got {str(value)[:40]!r}")
    if kind == "longer_shorter":
        if text in ("longer", "shorter", "same"):
            return text
        raise ValueError(f"prediction must be longer, shorter or same, got {str(value)[:40]!r}")
    if str(value).strip() not in question.options:
        raise ValueError(f"prediction must be one of {', '.join(question.options)}, got {str(value)[:40]!r}")
    return str(value).strip()


def request_for(playground, lesson: Lesson, part: str, value=None) -> tuple[dict, list[str], list[str]]:
    """The run's settings and columns within the app's caps, and a sentence per cap applied. A lesson with more
    columns than the app allows is refused with a sentence (its questions are about those columns)."""
    policy = playground.policy
    settings, columns = lesson.settings_with(lesson.now_you.change if part == "now_you" else None, value)
    notes = []
    asked = settings.get("max_new_tokens", 80)
    if asked > policy.max_new_tokens:
        settings["max_new_tokens"] = policy.max_new_tokens
        notes.append(f"This app allows at most {policy.max_new_tokens} new tokens: the lesson asked for {asked}, so "
                     f"it runs with {policy.max_new_tokens}.")
    if len(columns) > policy.max_columns:
        raise ValueError(f"lesson {lesson.order}: it compares {len(columns)} columns, and this app allows "
                         f"{policy.max_columns}")
    return settings, columns, notes


def adapter_dir(playground, lesson: Lesson) -> Path:
    """Where the lesson's adapter is kept once trained ($PLAYGROUND_LESSONS_CACHE, else ~/.cache/eos-playground)."""
    root = Path(os.environ.get("PLAYGROUND_LESSONS_CACHE") or Path.home() / ".cache" / "eos-playground" / "lessons")
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", playground.bundle.info.name)
    a = lesson.adapter
    return root / f"{model}-{a.recipe}-{a.steps}steps-seed0"


def prepare(playground, lesson: Lesson) -> Iterator[str]:
    """Load the lesson's adapter beside the loaded model, training it first when it is not cached; yields a
    sentence per training step. ValueError (a sentence) when this app may not train or add adapters."""
    a = lesson.adapter
    if a is None or a.name in playground.bundle.adapters:
        return
    policy = playground.policy
    if policy.public:
        raise ValueError(f"lesson {lesson.order}: it trains a small adapter ({a.recipe}, {a.steps} steps) on the "
                         "loaded model, and this app does not train for visitors: run the playground yourself "
                         "(python app.py) for this lesson")
    out = adapter_dir(playground, lesson)
    with _training:
        if not out.exists():
            from ..finetune.data import builtin_data
            from ..finetune.train import FineTune, TrainConfig
            from ..models import load_model
            from ..finetune.recipes import recipe_named

            yield (f"Training the lesson's adapter once: recipe {a.recipe} ({recipe_named(a.recipe).description}), "
                   f"{a.steps} steps on a copy of {playground.bundle.info.name}…")
            copy = load_model(playground.reference, **policy.options_for(playground.reference, playground.load_options))
            config = TrainConfig(recipe=a.recipe, steps=a.steps, batch_size=4, lora_r=8, lora_alpha=16,
                                 max_length=128, seed=0)
            job = FineTune(copy, builtin_data(), config, out, base_reference=playground.reference)
            for progress in job.run():
                yield f"Training the lesson's adapter ({a.recipe}): {progress.line()}"
            del copy, job
        if a.name not in playground.bundle.adapters:
            playground.add_adapter(f"{a.name}={out}")


def adapter_findings(playground, lesson: Lesson) -> list[str]:
    """For a lesson with an adapter: what its recipe supervised at the end of the first example, and the EOS
    doctor's finding on the examples it was trained on (written beside the adapter)."""
    if lesson.adapter is None:
        return []
    from ..doctor import load_sample
    from ..doctor.core import Context
    from ..doctor.data import check_sample_ends_with_eos
    from ..supervision import to_text, tokens_of

    from ..finetune.data import builtin_data
    from ..finetune.recipes import collated_example, end_token_id, recipe_named

    recipe = recipe_named(lesson.adapter.recipe)
    tokenizer = playground.bundle.tokenizer
    fed = collated_example(tokenizer, builtin_data(conversations=recipe.conversations).examples[0], recipe)
    ends = {end_token_id(tokenizer), *playground.bundle.info.eos_token_ids}
    tail = to_text(tokens_of(tokenizer, fed["input_ids"], fed["labels"], ends)[-8:])
    # The examples as trained, written beside the adapter (for this recipe: the rendered text, "</s>" typed in).
    sample = load_sample(adapter_dir(playground, lesson) / "training_data.jsonl")
    finding = check_sample_ends_with_eos(Context(playground.bundle, sample, max_length=128))
    return [f"The recipe's supervised tokens at the end of the first training example (a token is followed by "
            f"[its label], ⏹ marks an end token): {tail}",
            f"The EOS doctor on the examples it trained on — {finding.title} ({finding.status}): {finding.found}"]


def why_of(lesson_why: Why, trace: Trace, answer, kind: str, before: Trace | None = None) -> dict:
    """Where to look: the column (from 1), the step on the chart, the stage row, and the why sentence filled in
    from the run."""
    column = lesson_why.column
    variant = trace.variants[column - 1]
    last = len(variant.steps) - 1
    step = lesson_why.step
    if step == "stop":
        step = stop_step(trace, column)
    elif step == "answer":
        step = answer if answer is not None else last
    elif not isinstance(step, int):
        try:
            step = call(step, trace, before)
        except AnswerError:
            step = None
        step = last if step is None else step
    step = max(0, min(step, last))
    record = variant.steps[step] if variant.steps else None
    stage = next((s for s in record.stages if s.name == lesson_why.stage), None) if record else None
    fields = {"answer": shown_answer(kind, answer, [v.name for v in trace.variants]), "column": column,
              "column_name": variant.name, "step": step, "stage": lesson_why.stage.replace("_", "-"),
              "p_eos": f"{record.p_eos_raw:.3g}" if record else "-", "kept": stage.kept if stage else "-",
              "stop_reason": str(variant.stop_reason).replace("_", " "), "text": variant.text.strip()[-80:],
              "token": repr(record.token) if record else "-"}
    shown_stage = (f"the '{lesson_why.stage.replace('_', '-')}' row" if stage is not None
                   else f"the stage table (this run has no '{lesson_why.stage}' stage)")
    return {"column": column, "step": step, "stage": lesson_why.stage, "stage_found": stage is not None,
            "text": lesson_why.text.format(**fields) + f" See column {column} at step {step} on the chart, and "
                                                        f"{shown_stage} in the inspector."}


def lesson_run(playground, lesson: Lesson, part: str = "question", *, prompt: str | None = None,
               before: Result | None = None, value=None) -> Iterator[str | Comparison | SplitComparison | Trace | Result]:
    """Run the lesson's question (``part="question"``: each of its prompts in turn until the premise holds) or its
    "now you" step (on ``before``'s prompt, with the change's ``value`` or the learner's own). Yields notes
    (sentences), each run's comparison then its traces, then the :class:`Result`. ValueError (a sentence) when the app's caps refuse it."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    settings, columns, notes = request_for(playground, lesson, part, value)
    yield from notes
    yield from prepare(playground, lesson)
    question = lesson.question if part == "question" else lesson.now_you.question
    prompts = list(lesson.prompts) if part == "question" and prompt is None else \
        [prompt or (before.prompt if before else lesson.prompts[0])]
    name = playground.bundle.info.name
    for index, text in enumerate(prompts):
        comparison = playground.comparison(prompt=text, columns=columns, **settings)
        yield comparison  # before its traces: a reader of the running trace holds its lock
        trace = comparison.trace
        for trace in playground.stream(comparison):
            yield trace
        held = None
        if part == "question" and lesson.premise is not None:
            try:
                held = call(lesson.premise.check, trace) == lesson.premise.expect
            except AnswerError:
                held = False
            if not held:
                more = index + 1 < len(prompts)
                note = (f"On {name}, the prompt {text!r} does not show what this lesson is about: "
                        f"{lesson.premise.says}." + (f" Trying the lesson's next prompt, {prompts[index + 1]!r}."
                                                     if more else " It was the lesson's last prompt, so the answer below "
                                                                  "is still read from this run, but the lesson's point "
                                                                  "may not show on this model."))
                notes.append(note)
                yield note
                if more:
                    continue
        break
    before_trace = before.trace if before is not None else None
    try:
        answer = call(question.answer, trace, before_trace)
    except AnswerError as error:
        raise ValueError(f"lesson {lesson.order}: this run cannot answer the question: {error}") from None
    why = why_of(lesson.why if part == "question" else lesson.now_you.why, trace, answer, question.kind, before_trace)
    if part == "question":
        notes += adapter_findings(playground, lesson)
    yield Result(lesson, part, question, text, trace, answer, notes, held, why)


def run_to_end(playground, lesson: Lesson, part: str = "question", **options) -> Result:
    """The lesson's :class:`Result`, decoding without showing the steps (the CLI and the tests)."""
    result = None
    for item in lesson_run(playground, lesson, part, **options):
        if isinstance(item, Result):
            result = item
    return result
