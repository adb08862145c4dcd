"""What a comparison recorded: per variant, per step, the chosen token and the distributions around it.

Plain dataclasses, JSON- and CSV-exportable, so a trace can be saved from the UI, printed by the CLI and
read back by scripts. ``Trace.to_dict()`` follows the CLI's ``--json`` schema.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class StopReason(enum.StrEnum):
    """Why a column stopped, the one list of them: the engine records one, the trace and the API carry it, the
    page's chart marks it (page.js gets the labels and markers from the server: ``playground.ui.PAGE_CONFIG``) and
    Evaluate counts them. A str, so JSON, CSV and a trace read back from a file hold the bare value."""

    EOS = "eos"  # the model chose an end-of-sequence token
    MAX_NEW_TOKENS = "max_new_tokens"  # the token budget ran out
    STOP_STRING = "stop_string"  # the answer completed a stop string (stop_detail says which)
    REPETITION = "repetition"  # the repetition stop saw the same n-gram loop
    CANCELLED = "cancelled"  # stopped from outside: by the person, or the decode loop ending the run
    TIMEOUT = "timeout"  # stopped from outside: the app's time limit

    @property
    def label(self) -> str:
        """How the page names it: "max new tokens"."""
        return self.value.replace("_", " ")


# Stopped from outside, not by the model or an intervention.
INTERRUPTED = frozenset({StopReason.CANCELLED, StopReason.TIMEOUT})


# A finished column's status line per stop reason ({last}: its last step, counted from 0 as on the charts; {n}: the
# tokens it generated; {detail}: the stop string).
STATUS = {
    StopReason.EOS: "stopped by EOS at step {last}",
    StopReason.MAX_NEW_TOKENS: "hit max new tokens ({n})",
    StopReason.STOP_STRING: "stop string {detail!r} at step {last}",
    StopReason.REPETITION: "repetition loop at step {last}",
    StopReason.CANCELLED: "cancelled after {n} tokens",
    StopReason.TIMEOUT: "timed out after {n} tokens",
}
# A regular expression (Python's and JavaScript's) that matches a finished column's status line and no running one:
# what a page driver waits for.
FINISHED_STATUS = "|".join(re.escape(line.split("{")[0].rstrip(" (")) for line in STATUS.values())


@dataclass
class TopToken:
    token_id: int
    token: str
    p_raw: float  # softmax of the model's raw logits (T=1)
    p: float  # probability under the final sampling distribution


@dataclass
class Stage:
    """The distribution after one stage of the pipeline raw → generation config (repetition penalty, no-repeat
    n-grams...) → interventions → temperature → top-k → top-p → min-p → typical-p."""

    name: str
    p_eos: float
    kept: int  # tokens left with non-zero probability
    top: list[tuple[int, str, float]]  # (token_id, token, probability), most likely first
    note: str = ""  # what the stage did at this step, e.g. "min-p 0.05 kept 12 of 49152 tokens, ..."


class LazyStages(Sequence):
    """A step's stage table, built from the numbers the decode kept the first time something reads it (the
    inspector, ``--stages``, /trace with stages); decoding never builds the tables nobody looks at."""

    def __init__(self, build: Callable[[], list[Stage]]):
        self._build, self._stages = build, None

    def _table(self) -> list[Stage]:
        if self._stages is None:  # two readers at once both build the same table; either is kept
            self._stages = self._build()
        return self._stages

    def __getitem__(self, index):
        return self._table()[index]

    def __len__(self) -> int:
        return len(self._table())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._table())


@dataclass
class StepRecord:
    step: int
    token_id: int
    token: str
    p_eos_raw: float
    p_eos: float
    p_chosen_raw: float  # the chosen token's probability under the raw and the final distribution
    p_chosen: float
    entropy_raw: float
    entropy: float
    top_k: list[TopToken]
    stages: Sequence[Stage] = field(default_factory=list)  # a LazyStages while decoding
    # Distance to stopping, in logits: best non-EOS logit − best EOS logit, from the raw logits and after the
    # interventions. Positive: EOS trails by that much; ≤ 0: EOS is the top choice. None: EOS is banned (−inf).
    eos_margin_raw: float | None = None
    eos_margin: float | None = None

    def to_dict(self, stages: bool = False) -> dict:
        data = {
            "step": self.step, "token_id": self.token_id, "token": self.token, "p_eos_raw": self.p_eos_raw,
            "p_eos": self.p_eos, "p_chosen_raw": self.p_chosen_raw, "p_chosen": self.p_chosen,
            "entropy_raw": self.entropy_raw, "entropy": self.entropy,
            "eos_margin_raw": self.eos_margin_raw, "eos_margin": self.eos_margin,
            "top_k": [{"token_id": t.token_id, "token": t.token, "p_raw": t.p_raw, "p": t.p} for t in self.top_k],
        }
        if stages:
            data["stages"] = [{"name": s.name, "note": s.note, "p_eos": s.p_eos, "kept": s.kept,
                               "top": [{"token_id": i, "token": tok, "p": p} for i, tok, p in s.top]} for s in self.stages]
        return data


def first_difference(ids: Sequence[int], base: Sequence[int]) -> int | None:
    """The first step whose token differs between ``ids`` and ``base`` (None: none, as far as both go).

    >>> first_difference([1, 2, 3], [1, 2, 4]), first_difference([1, 2], [1, 2, 3])
    (2, None)
    """
    return next((step for step, (a, b) in enumerate(zip(ids, base)) if a != b), None)


@dataclass
class VariantTrace:
    name: str
    interventions: list[dict]
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: StopReason | None = None  # a plain str when read back from JSON: StopReason compares equal
    stop_detail: str | None = None  # e.g. which stop string
    wall_seconds: float = 0.0
    diverges_at: int | None = None  # first step whose token differs from the first variant's
    branch_of: tuple[int, int] | None = None  # a branch: (parent's column number from 1, fork step)
    waiting: str | None = field(default=None, compare=False)  # why it has not started yet (set by the decode loop)
    model: str = "base"  # the column's model: "base", a loaded adapter's name or a second checkpoint's
    model_note: str | None = None  # e.g. why this column's forward passes are not shared with other models'
    # False: this column's rows get forward passes of their own, not the batch's shared with the loaded model's
    # other columns (a second checkpoint's column, an adapter PEFT cannot mix)
    shared_forward: bool = True

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def tokens_per_second(self) -> float:
        return len(self.steps) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def status(self) -> str:
        """One line a person reads: how this column is doing or why it stopped."""
        n = len(self.steps)
        if self.stop_reason is None:
            if self.waiting and not n:
                return self.waiting
            return f"running · {n} tokens" + (f" · {self.model_note}" if self.model_note else "")
        speed = f" · {self.tokens_per_second:.1f} tok/s"
        return (STATUS[self.stop_reason].format(last=n - 1, n=n, detail=self.stop_detail) + speed
                + (f" · {self.model_note}" if self.model_note else ""))

    def to_dict(self, stages: bool = False) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "model_note": self.model_note,
            "shared_forward": self.shared_forward,
            "interventions": self.interventions,
            "prompt_tokens": self.prompt_tokens,
            "text": self.text,
            "token_ids": list(self.token_ids),
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "branch_of": self._branch_dict(),
            "steps": [step.to_dict(stages) for step in self.steps],
            "summary": self.summary(),
        }

    def summary(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "generated_tokens": len(self.steps),
            "wall_seconds": round(self.wall_seconds, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "diverges_at": self.diverges_at,
            "branch_of": self._branch_dict(),
        }

    def _branch_dict(self) -> dict | None:
        return None if self.branch_of is None else {"column": self.branch_of[0], "step": self.branch_of[1]}


@dataclass
class Trace:
    model: str
    prompt: str
    settings: dict
    variants: list[VariantTrace]

    def to_dict(self, stages: bool = False) -> dict:
        """The ``--json`` schema; per-stage distributions only when asked (they are large).

        Built by hand rather than with ``dataclasses.asdict``: the app streams this after every step, and
        ``asdict`` deep-copies every nested record, which costs more than the decoding step itself.
        """
        return {"model": self.model, "prompt": self.prompt, "settings": dict(self.settings),
                "variants": [variant.to_dict(stages) for variant in self.variants]}

    def with_branches(self, branches: Trace) -> Trace:
        """This trace with the columns of ``branches`` (decoded from it, with its settings) appended. The
        columns are shared, not copied, so it follows a branch run that is still decoding; a branch's
        ``diverges_at`` is recomputed against this trace's first column, as for every other column."""
        base = self.variants[0].token_ids
        for variant in branches.variants:
            variant.diverges_at = first_difference(variant.token_ids, base)
        return Trace(self.model, self.prompt, self.settings, [*self.variants, *branches.variants])

    def without_branch(self, index: int) -> Trace:
        """This trace without the branch at ``index`` (from 0) and the branches made from it; the branches after
        it keep their parents (``branch_of`` renumbered). Raises ValueError if that column is not a branch."""
        if not 0 <= index < len(self.variants) or self.variants[index].branch_of is None:
            raise ValueError(f"column {index + 1} is not a branch: only branches can be removed")
        removed, kept, numbers = {index + 1}, [], {}  # old column number (from 1) -> new one
        for number, variant in enumerate(self.variants, start=1):
            if number in removed or (variant.branch_of is not None and variant.branch_of[0] in removed):
                removed.add(number)
                continue
            numbers[number] = len(kept) + 1
            if variant.branch_of is not None:
                variant = dataclasses.replace(variant, branch_of=(numbers[variant.branch_of[0]], variant.branch_of[1]))
            kept.append(variant)
        return Trace(self.model, self.prompt, self.settings, kept)

    def to_json(self, stages: bool = False, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(stages=stages), ensure_ascii=False, indent=indent)

    def to_csv(self) -> str:
        """One row per variant per step; top-k as ``token_id:p`` pairs."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["variant", "model", "step", "token_id", "token", "p_chosen", "p_eos_raw", "p_eos", "eos_margin_raw",
                         "eos_margin", "entropy_raw", "entropy", "top_k"])
        for variant in self.variants:
            for s in variant.steps:
                top = " ".join(f"{t.token_id}:{t.p:.4g}" for t in s.top_k)
                margins = ["" if m is None else f"{m:.4f}" for m in (s.eos_margin_raw, s.eos_margin)]
                writer.writerow([variant.name, variant.model, s.step, s.token_id, s.token, f"{s.p_chosen:.6g}", f"{s.p_eos_raw:.6g}",
                                 f"{s.p_eos:.6g}", *margins, f"{s.entropy_raw:.4f}", f"{s.entropy:.4f}", top])
        return out.getvalue()


# -- reading a saved trace back ---------------------------------------------------------------------------------
# A saved trace (the page's trace JSON, an exported HTML file) says which schema it follows; one without the field
# (the CLI's --json, /trace) is read as this version. Another version is refused, never guessed at.
SCHEMA_VERSION = 1


def saved_json(trace: Trace) -> str:
    """The trace as a file keeps it: every stage of every step, and the schema version it follows."""
    return json.dumps({"schema_version": SCHEMA_VERSION, **trace.to_dict(stages=True)}, ensure_ascii=False)


class _Reader:
    """Reads one saved trace's fields, each checked for its type; a bad one is a ValueError naming where it is
    ("variants[1].steps[3].p_eos must be a number, got 'x'")."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise ValueError(f"{where or 'the trace'} must be a JSON object, got {type(data).__name__}")
        self.data, self.where = data, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kinds: tuple, *, default=..., optional: bool = False):
        if key not in self.data:
            if default is not ...:
                return default
            raise ValueError(f"{self._name(key)} is missing")
        value = self.data[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            wanted = {str: "text", int: "a whole number", float: "a number", list: "a list", dict: "an object",
                      bool: "true or false"}
            raise ValueError(f"{self._name(key)} must be {wanted.get(kinds[-1], kinds[-1].__name__)}, "
                             f"got {json.dumps(value)[:40] if _plain(value) else type(value).__name__}")
        return value

    def number(self, key: str, *, optional: bool = False) -> float | None:
        value = self.get(key, (int, float), optional=optional, default=None if optional else ...)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{self._name(key)} must be a finite number, got {value}")
        return None if value is None else float(value)

    def whole(self, key: str, **options) -> int:
        return self.get(key, (int,), **options)

    def items(self, key: str, *, default=...) -> list[_Reader]:
        return [_Reader(item, f"{self._name(key)}[{index}]") for index, item in enumerate(self.get(key, (list,), default=default))]


def _plain(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _top_k(item: _Reader) -> TopToken:
    return TopToken(item.whole("token_id"), item.get("token", (str,)), item.number("p_raw"), item.number("p"))


def _stage(item: _Reader) -> Stage:
    return Stage(item.get("name", (str,)), item.number("p_eos"), item.whole("kept"),
                 [(top.whole("token_id"), top.get("token", (str,)), top.number("p")) for top in item.items("top")],
                 item.get("note", (str,), default=""))


def _step(item: _Reader, index: int) -> StepRecord:
    step = item.whole("step")
    if step != index:
        raise ValueError(f"{item.where}.step must be {index} (steps count from 0, in order), got {step}")
    return StepRecord(step, item.whole("token_id"), item.get("token", (str,)), item.number("p_eos_raw"),
                      item.number("p_eos"), item.number("p_chosen_raw"), item.number("p_chosen"),
                      item.number("entropy_raw"), item.number("entropy"), [_top_k(t) for t in item.items("top_k")],
                      [_stage(s) for s in item.items("stages", default=[])],
                      item.number("eos_margin_raw", optional=True), item.number("eos_margin", optional=True))


def _variant(item: _Reader) -> VariantTrace:
    steps = [_step(step, index) for index, step in enumerate(item.items("steps"))]
    token_ids = [int(i) for i in item.get("token_ids", (list,))]
    if token_ids != [s.token_id for s in steps]:
        raise ValueError(f"{item.where}.token_ids must be the steps' token ids, one per step")
    reason = item.get("stop_reason", (str,), optional=True)
    if reason is not None and reason not in set(StopReason):
        raise ValueError(f"{item.where}.stop_reason must be one of {', '.join(StopReason)} or null, got {reason[:40]!r}")
    interventions = item.get("interventions", (list,))
    if not all(isinstance(i, (str, dict)) for i in interventions):
        raise ValueError(f"{item.where}.interventions must be a list of intervention names or objects")
    branch = item.get("branch_of", (dict,), optional=True)
    if branch is not None:
        branch = _Reader(branch, f"{item.where}.branch_of")
        branch = (branch.whole("column"), branch.whole("step"))
    summary = item.get("summary", (dict,), optional=True, default=None) or {}
    seconds = summary.get("wall_seconds", 0.0)
    diverges = summary.get("diverges_at")
    return VariantTrace(
        item.get("name", (str,)), interventions, item.whole("prompt_tokens"), token_ids, item.get("text", (str,)),
        steps, None if reason is None else StopReason(reason), item.get("stop_detail", (str,), optional=True, default=None),
        float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) else 0.0,
        diverges if isinstance(diverges, int) and not isinstance(diverges, bool) else None, branch,
        model=item.get("model", (str,), default="base"), model_note=item.get("model_note", (str,), optional=True, default=None),
        shared_forward=item.get("shared_forward", (bool,), default=True))


def trace_from_dict(data) -> Trace:
    """A saved trace (:func:`saved_json`, the CLI's ``--json``, /trace) read back, every field checked: a file
    from another schema version or with a field of the wrong kind is a ValueError that names it. Only the
    fields' kinds are checked here; what the settings and interventions mean is checked where they are used."""
    root = _Reader(data, "")
    version = root.get("schema_version", (int,), default=SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version: this trace follows schema {version}; this playground reads schema "
                         f"{SCHEMA_VERSION} only")
    variants = [_variant(item) for item in root.items("variants")]
    if not variants:
        raise ValueError("variants: the trace has no columns")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError("variants: two columns have the same name")
    for number, variant in enumerate(variants, start=1):
        if variant.branch_of is not None and not (1 <= variant.branch_of[0] < number
                                                  and 0 <= variant.branch_of[1] < len(variant.steps)):
            raise ValueError(f"variants[{number - 1}].branch_of must name an earlier column and one of this column's steps")
    settings = root.get("settings", (dict,))
    if not all(isinstance(key, str) and _plain(value) for key, value in settings.items()):
        raise ValueError("settings must map each setting's name to a number, text, true/false or null")
    return Trace(root.get("model", (str,)), root.get("prompt", (str,)), dict(settings), variants)
