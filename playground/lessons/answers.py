"""The answers a lesson may ask for, each a named function of the run's trace: a lesson names one (and its
arguments) instead of writing its answer down, so the answer stays true on any model, seed and setting.

Each function takes the :class:`~playground.trace.Trace` first and returns an answer of one *kind*:

========== =====================================================================
kind       the answer
========== =====================================================================
column     a column number (from 1), or None: several columns tie
step       a step number (from 0, as on the chart), or None: never
count      a whole number
yes_no     True or False
longer_shorter  "longer", "shorter" or "same"
choice     one of the question's ``options`` (e.g. a stop reason)
========== =====================================================================

Columns are numbered from 1, in the lesson's order. A function marked ``before`` also gets the lesson's first
run (it compares the "now you" run with it).

    >>> from playground.trace import StepRecord, Trace, VariantTrace
    >>> step = lambda i, p: StepRecord(i, 5, "a", p, p, 0.9, 0.9, 1.0, 1.0, [])
    >>> trace = Trace("m", "hi", {}, [VariantTrace("baseline", [], 3, steps=[step(0, 0.1), step(1, 0.7)],
    ...                                            stop_reason="eos")])
    >>> call(AnswerSpec("first_step_p_eos_above", {"column": 1, "threshold": 0.5}), trace)
    1
    >>> ANSWERS["stops_by_eos"].kind
    'yes_no'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from ..trace import StopReason, Trace, VariantTrace

KINDS = ("column", "step", "count", "yes_no", "longer_shorter", "choice")
# The pipeline's stage names as the inspector's stage table shows them ("top-p" is accepted for "top_p").
STAGES = ("raw", "interventions", "temperature", "top_k", "top_p", "min_p", "typical_p")
STOP_REASONS = [reason.value for reason in StopReason]
SENTENCE_END = (".", "!", "?", "…", '."', '!"', '?"', ".)", ")")


@dataclass(frozen=True)
class AnswerFunction:
    name: str
    kind: str
    function: Callable
    before: bool  # it also reads the lesson's first run

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        """Its arguments after the trace (and ``before``)."""
        return {name: p for name, p in inspect.signature(self.function).parameters.items()
                if name not in ("trace", "before")}

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.function) or ""


@dataclass(frozen=True)
class AnswerSpec:
    """A lesson's reference to an answer function: its name and arguments (``column``, ``step``... as written)."""

    name: str
    args: dict = field(default_factory=dict)

    def __hash__(self):
        return hash((self.name, tuple(sorted(self.args.items()))))

    @property
    def function(self) -> AnswerFunction:
        return ANSWERS[self.name]

    def text(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


ANSWERS: dict[str, AnswerFunction] = {}


def answer(kind: str):
    """Register an answer function of ``kind`` under its own name."""
    def register(function):
        before = "before" in inspect.signature(function).parameters
        ANSWERS[function.__name__] = AnswerFunction(function.__name__, kind, function, before)
        return function
    return register


class AnswerError(ValueError):
    """The run cannot answer the question (e.g. a column stopped before the step asked about): a sentence."""


def call(spec: AnswerSpec, trace: Trace, before: Trace | None = None):
    """The answer ``spec`` gives on ``trace`` (``before``: the lesson's first run, for the functions that read it)."""
    function = spec.function
    if function.before:
        if before is None:
            raise AnswerError(f"{spec.name} compares with the lesson's first run, which has not run yet")
        return function.function(trace, before=before, **spec.args)
    return function.function(trace, **spec.args)


def _column(trace: Trace, column: int) -> VariantTrace:
    if not 1 <= column <= len(trace.variants):
        raise AnswerError(f"the run has {len(trace.variants)} column(s), not a column {column}")
    return trace.variants[column - 1]


def _step(trace: Trace, column: int, step: int):
    variant = _column(trace, column)
    if not 0 <= step < len(variant.steps):
        raise AnswerError(f"column {column} ({variant.name}) stopped after {len(variant.steps)} tokens, before "
                          f"step {step}")
    return variant.steps[step]


def _stage(trace: Trace, column: int, step: int, stage: str):
    name = stage.replace("-", "_")
    for record in _step(trace, column, step).stages:
        if record.name == name or (name == "generation config" and record.name.startswith("generation config")):
            return record
    raise AnswerError(f"step {step} of column {column} has no {stage!r} stage in this run (a stage that is off, "
                      "or greedy decoding, which skips the sampling stages)")


# -- which column ---------------------------------------------------------------------------------------------


@answer("column")
def column_that_stops_first(trace: Trace) -> int | None:
    """The column that generated the fewest tokens; None when the shortest columns tie."""
    lengths = [len(v.steps) for v in trace.variants]
    shortest = min(lengths)
    return lengths.index(shortest) + 1 if lengths.count(shortest) == 1 else None


# -- which step -----------------------------------------------------------------------------------------------


@answer("step")
def first_step_p_eos_above(trace: Trace, column: int, threshold: float, final: bool = False) -> int | None:
    """The first step at which the column's p(EOS) is above ``threshold`` (the model's own, or after the
    interventions and sampling with ``final``); None: never."""
    for s in _column(trace, column).steps:
        if (s.p_eos if final else s.p_eos_raw) > threshold:
            return s.step
    return None


@answer("step")
def stop_step(trace: Trace, column: int) -> int:
    """The column's last step (the one it stopped at)."""
    return len(_column(trace, column).steps) - 1


@answer("step")
def first_difference(trace: Trace, a: int, b: int) -> int | None:
    """The first step at which columns ``a`` and ``b`` chose different tokens; None: they never differ."""
    return next((x.step for x, y in zip(_column(trace, a).steps, _column(trace, b).steps) if x.token_id != y.token_id),
                None)


@answer("step")
def first_step_not_top(trace: Trace, column: int) -> int | None:
    """The first step at which the column did not choose the model's most likely token (raw); None: it always did."""
    for s in _column(trace, column).steps:
        if not _is_top(s):
            return s.step
    return None


def _is_top(s) -> bool:
    best = max(s.top_k, key=lambda t: t.p_raw, default=None)
    return best is None or best.token_id == s.token_id


# -- how many -------------------------------------------------------------------------------------------------


@answer("count")
def kept_tokens_at(trace: Trace, column: int, step: int, stage: str) -> int:
    """How many tokens still have a non-zero probability after ``stage`` at ``step`` (the stage table's count)."""
    return int(_stage(trace, column, step, stage).kept)


@answer("count")
def tokens_generated(trace: Trace, column: int) -> int:
    """How many tokens the column generated (its EOS included)."""
    return len(_column(trace, column).steps)


# -- yes or no ------------------------------------------------------------------------------------------------


@answer("yes_no")
def stops_by_eos(trace: Trace, column: int) -> bool:
    """Whether the column stopped because the model chose EOS."""
    return _column(trace, column).stop_reason == StopReason.EOS


@answer("yes_no")
def stop_reason_is(trace: Trace, column: int, reason: str) -> bool:
    """Whether the column stopped for ``reason`` (eos, max_new_tokens, stop_string, repetition)."""
    return _column(trace, column).stop_reason == reason


@answer("yes_no")
def p_chosen_above(trace: Trace, column: int, step: int, threshold: float) -> bool:
    """Whether the token chosen at ``step`` had a raw probability above ``threshold``."""
    return _step(trace, column, step).p_chosen_raw > threshold


@answer("yes_no")
def always_top_choice(trace: Trace, column: int) -> bool:
    """Whether the column chose the model's most likely token (raw) at every step."""
    return all(_is_top(s) for s in _column(trace, column).steps)


@answer("yes_no")
def stage_sharpens(trace: Trace, column: int, step: int, stage: str) -> bool:
    """Whether ``stage`` made the most likely token at ``step`` more likely than it was before the stage."""
    stages = list(_step(trace, column, step).stages)
    target = _stage(trace, column, step, stage)
    index = next(i for i, s in enumerate(stages) if s is target or s == target)
    before, after = stages[index - 1] if index else stages[0], target
    return bool(after.top and before.top and after.top[0][2] > before.top[0][2] + 1e-6)


@answer("yes_no")
def ends_at_sentence_end(trace: Trace, column: int) -> bool:
    """Whether the column's text ends a sentence (., !, ? or …, perhaps before a quote or bracket)."""
    return _column(trace, column).text.rstrip().endswith(SENTENCE_END)


@answer("yes_no")
def text_contains(trace: Trace, column: int, text: str) -> bool:
    """Whether the column's text contains ``text``."""
    return text in _column(trace, column).text


# -- a choice -------------------------------------------------------------------------------------------------


@answer("choice")
def stop_reason(trace: Trace, column: int) -> str:
    """Why the column stopped: eos, max_new_tokens, stop_string, repetition (cancelled, timeout: from outside)."""
    reason = _column(trace, column).stop_reason
    return str(reason) if reason is not None else "running"


# -- longer or shorter ----------------------------------------------------------------------------------------


def _compare(a: int, b: int) -> str:
    return "longer" if a > b else "shorter" if a < b else "same"


@answer("longer_shorter")
def longer_or_shorter(trace: Trace, a: int, b: int) -> str:
    """Whether column ``a`` generated more tokens than column ``b`` ("longer"), fewer ("shorter") or as many."""
    return _compare(len(_column(trace, a).steps), len(_column(trace, b).steps))


@answer("longer_shorter")
def longer_or_shorter_than_before(trace: Trace, before: Trace, column: int) -> str:
    """Whether the column generated more tokens in this run than in the lesson's first run ("longer"), fewer
    ("shorter") or as many."""
    return _compare(len(_column(trace, column).steps), len(_column(before, column).steps))


# -- judging a prediction -------------------------------------------------------------------------------------


def shown_answer(kind: str, value, column_names: list[str] | None = None) -> str:
    """An answer as a sentence fragment: "column 2 (eos_reward)", "step 12", "yes", "never"."""
    if kind == "column":
        if value is None:
            return "no single column (they tie)"
        name = column_names[value - 1] if column_names and 0 < value <= len(column_names) else None
        return f"column {value}" + (f" ({name})" if name else "")
    if kind == "step":
        return "never" if value is None else f"step {value}"
    if kind == "yes_no":
        return "yes" if value else "no"
    if kind == "longer_shorter":
        return "the same length" if value == "same" else str(value)
    return str(value)


def judge(kind: str, prediction, actual, tolerance: float = 0) -> bool:
    """Whether ``prediction`` matches the run's answer (steps and counts within ``tolerance``)."""
    if kind in ("step", "count") and prediction is not None and actual is not None:
        return abs(prediction - actual) <= tolerance
    return prediction == actual
