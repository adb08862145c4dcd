"""Evaluate stop interventions over a prompt set: which fix stops this model best, in numbers.

Every (prompt, seed, column) becomes one single-row :class:`~playground.engine.Comparison`, and all of them go
through :func:`~playground.engine.run_all`, which decodes many comparisons together (rows join as others leave).
One row per comparison gives the shared loop the finest unit to pack, keeps a column's tokens independent of the
other columns (a lone row reproduces ``generate()`` exactly), lets a sweep have more cells than a comparison has
variants, and lets a multi-turn prompt be rendered per column. Each finished row is reduced to a
:class:`RowResult` at once (its per-step telemetry is dropped), and :class:`Report` turns rows into rates.

    >>> from playground.models import load_model
    >>> from playground.engine import Settings, Variant
    >>> from playground.evaluate import Evaluation, builtin_prompts
    >>> bundle = load_model()
    >>> evaluation = Evaluation(bundle, builtin_prompts(), [Variant("baseline"), Variant("eos_reward", ["eos_reward"])],
    ...                         Settings(max_new_tokens=64))
    >>> for done in evaluation.run():  # doctest: +SKIP
    ...     print(f"{done}/{evaluation.total}")
    >>> evaluation.report().summary()[1]["eos_rate"]  # doctest: +SKIP

Metrics, per column (rates come with 95 % Wilson intervals):

* EOS / limit / stop-string rate: share of rows that stopped with EOS, at ``max_new_tokens``, at a stop string.
* loop rate: rows stopped by ``repetition_stop``, or whose tokens hold a block of 1–32 tokens repeated at least
  3 times back to back over at least 16 tokens.
* mid-sentence rate: rows whose text (trailing spaces removed, closing quotes/brackets ignored) does not end with
  ``. ! ? …`` (or their CJK forms) or a closing code fence; an empty answer counts as mid-sentence.
* clean-stop rate (the sweep's score): rows that stopped with EOS right after a sentence end.
* length: generated tokens, EOS not counted; mean, median and p90 (linear interpolation between ranks).
* NLL per token: mean of ``-log p_raw(chosen token)`` over those tokens, all rows pooled, where ``p_raw`` is the
  raw model's softmax (temperature 1, before any processor): how far the column bent what the model would say.
* tokens/s: the column's generated tokens (EOS included) ÷ the summed wall time of its rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Comparison, Settings, Variant, run_all
from .interventions import Intervention, default_params, ends_sentence, parse_interventions
from .request import DEFAULTS, SETTINGS, Column, format_column, parse_bool, resolve
from .jsonlines import loads_line
from .models import LoadedModel
from .prompts import encode_prompt
from .space.policy import check_encodable
from .trace import VariantTrace

BUILTIN_PROMPTS = Path(__file__).resolve().parent / "data" / "prompts.jsonl"
MAX_FILE_BYTES = 1_000_000  # a prompt file larger than this is read up to this size (the rest is reported)
MAX_PROMPTS = 1000
MAX_PROMPT_CHARS = 20_000
MAX_SEEDS = 16
# Every mode: a sweep has at most this many cells (columns: the baseline and one per cell), counted before any
# cell is built, and its text at most MAX_SWEEP_CHARS; an evaluation decodes at most MAX_ROWS rows
# (prompts × columns × seeds), each a comparison built up front.
MAX_SWEEP_CELLS = 64
MAX_SWEEP_CHARS = 2000
MAX_ROWS = 10_000
# Public mode: prompts × columns × seeds × max_new_tokens may not exceed this many tokens per evaluation.
PUBLIC_TOKEN_BUDGET = 32_768
Z_95 = 1.959963984540054
LOOP_MIN_TOKENS = 16
LOOP_MAX_PERIOD = 32
STOP_REASONS = ("eos", "max_new_tokens", "stop_string", "repetition", "timeout")
RATES = ("eos", "limit", "stop_string", "loop", "mid_sentence", "clean_stop")
SWEEPABLE = tuple(default_params("eos_reward"))
BEST_CELL_RULE = ("the highest clean-stop rate (EOS right after a sentence end); ties go to the longest mean "
                  "length, i.e. the setting that cuts answers the least")
ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------------------------------------------------------
# Prompts


@dataclass
class Prompt:
    """One prompt of a set: a chat (``messages``, the last one the user's) and where it came from."""

    messages: list[dict]
    where: str = ""  # "line 3" of the user's file, "item 2" of an API list, "builtin 5"
    category: str | None = None

    @property
    def text(self) -> str:
        """The user's last turn: what Compare would take as its prompt."""
        return self.messages[-1]["content"]

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages[0]["role"] == "system" else None

    @property
    def history(self) -> list[dict]:
        """The turns before the last user turn, without a leading system message."""
        return [m for m in self.messages[:-1] if m["role"] != "system"]

    def to_dict(self) -> dict:
        data = {"where": self.where, "text": self.text}
        if self.system is not None or self.history:
            data["messages"] = self.messages
        if self.category:
            data["category"] = self.category
        return data


@dataclass
class PromptSet:
    """Prompts that can run, and one sentence per input that cannot (naming its line)."""

    prompts: list[Prompt]
    problems: list[str] = field(default_factory=list)
    source: str = ""


def prompt_from_record(record, where: str, max_chars: int = MAX_PROMPT_CHARS) -> Prompt:
    """A Prompt from ``{"prompt": str}``, ``{"messages": [{"role", "content"}...]}`` or a bare string; ValueError
    naming ``where`` otherwise. Other keys are ignored (``category`` is kept)."""
    if isinstance(record, str):
        record = {"prompt": record}
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with a 'prompt' string or a 'messages' list, got {type(record).__name__}")
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise ValueError(f"{where}: 'prompt' must be a string, got {type(record['prompt']).__name__}")
        messages = [{"role": "user", "content": record["prompt"]}]
    elif "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
        for index, message in enumerate(messages):
            if (not isinstance(message, dict) or message.get("role") not in ROLES
                    or not isinstance(message.get("content"), str)):
                raise ValueError(f"{where}: message {index + 1} needs a 'role' ({', '.join(ROLES)}) and a 'content' string")
        if messages[-1]["role"] != "user":
            raise ValueError(f"{where}: the last message must be the user's (the model answers it), got {messages[-1]['role']!r}")
        if any(m["role"] == "system" for m in messages[1:]):
            raise ValueError(f"{where}: a system message may only come first")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        found = ", ".join(sorted(map(str, record))) or "none"
        raise ValueError(f"{where}: needs a 'prompt' string or a 'messages' list; found keys: {found}")
    if not messages[-1]["content"].strip():
        raise ValueError(f"{where}: the prompt is empty")
    for index, message in enumerate(messages):
        check_encodable(message["content"], f"{where}: {'the prompt' if len(messages) == 1 else f'message {index + 1}'}")
    length = sum(len(m["content"]) for m in messages)
    if length > max_chars:
        raise ValueError(f"{where}: the prompt is {length} characters; at most {max_chars} are accepted")
    category = record.get("category")
    return Prompt(messages, where, category if isinstance(category, str) else None)


def _decoded_lines(data: bytes, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; a line that is not UTF-8 is reported and skipped."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            yield number, raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            problems.append(f"line {number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                            "skipped — save the file as UTF-8")


def parse_prompts(data: bytes, kind: str, *, max_prompts: int = MAX_PROMPTS, max_chars: int = MAX_PROMPT_CHARS,
                  source: str = "") -> PromptSet:
    """Prompts from a file's bytes: ``kind`` is "jsonl" (``prompt`` or ``messages`` per line), "csv" (a
    ``prompt`` column) or "text" (one prompt per line). Bad lines are reported by line number and skipped."""
    if kind not in ("jsonl", "csv", "text"):
        raise ValueError(f"kind must be jsonl, csv or text, got {kind!r}")
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark (Excel writes one)
    problems: list[str] = []
    prompts: list[Prompt] = []
    if not data.strip():
        return PromptSet([], ["line 1: the file is empty — put one prompt per line"], source)

    def add(record, where: str) -> None:
        try:
            prompts.append(prompt_from_record(record, where, max_chars))
        except ValueError as error:
            problems.append(f"{error}; skipped")

    if kind == "csv":
        lines = _decoded_lines(data, problems)
        position = {"line": 0}

        def track():
            for number, text in lines:
                position["line"] = number
                yield text

        reader = csv.reader(track())
        try:
            header = next(reader)
        except StopIteration:
            header = []
        columns = [name.strip().lower() for name in header]
        if "prompt" not in columns:
            found = ", ".join(repr(h) for h in header) or "nothing"
            problems.append(f"line {position['line'] or 1}: the CSV header needs a 'prompt' column; found {found}")
            return PromptSet([], problems, source)
        column = columns.index("prompt")
        try:
            for row in reader:
                where = f"line {position['line']}"
                if not any(cell.strip() for cell in row):
                    continue
                if column >= len(row) or not row[column].strip():
                    problems.append(f"{where}: the 'prompt' cell is empty; skipped")
                    continue
                add(row[column], where)
        except csv.Error as error:
            problems.append(f"line {position['line']}: not valid CSV ({error}); the rest of the file is skipped")
    else:
        for number, text in _decoded_lines(data, problems):
            if not text.strip():
                continue
            where = f"line {number}"
            if kind == "text":
                add(text, where)
                continue
            try:
                record = loads_line(text)
            except ValueError as error:
                problems.append(f"{where}: {error}; skipped")
                continue
            add(record, where)
    if len(prompts) > max_prompts:
        problems.append(f"{prompts[max_prompts].where}: more than {max_prompts} prompts; this one and the rest are skipped")
        del prompts[max_prompts:]
    if not prompts and not problems:
        problems.append("line 1: the file holds no prompt")
    return PromptSet(prompts, problems, source)


def file_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(suffix, "text")


def read_prompts(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_prompts: int = MAX_PROMPTS,
                 max_chars: int = MAX_PROMPT_CHARS) -> PromptSet:
    """Prompts from a file (format from its extension: .jsonl/.json, .csv, anything else one prompt per line).

    A file over ``max_bytes`` is read up to the last whole line within the cap, and the first line left out is
    named. ValueError when the file cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise ValueError(f"prompts: cannot read {str(path)!r}: {error.strerror or error}") from None
    cut = None
    if len(data) > max_bytes:
        data = data[:max_bytes]
        data = data[: data.rfind(b"\n") + 1]
        cut = data.count(b"\n") + 1
    prompts = parse_prompts(data, file_kind(path), max_prompts=max_prompts, max_chars=max_chars, source=path.name)
    if cut is not None:
        prompts.problems.append(f"line {cut}: the file is over the cap of {max_bytes:,} bytes; lines from {cut} on "
                                "were not read")
    return prompts


def builtin_prompts() -> PromptSet:
    """The set shipped with the package: open questions that ramble, short answers, yes/no, lists, code, poems,
    other languages and multi-turn chats."""
    prompts = parse_prompts(BUILTIN_PROMPTS.read_bytes(), "jsonl", source="builtin")
    for index, prompt in enumerate(prompts.prompts, start=1):
        prompt.where = f"builtin {index}"
    return prompts


def prompts_from_items(items: Sequence, *, max_prompts: int = MAX_PROMPTS, max_chars: int = MAX_PROMPT_CHARS) -> PromptSet:
    """Prompts sent by a program: a list of strings or ``{"prompt"}`` / ``{"messages"}`` objects."""
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"prompts must be \"builtin\" or a list of strings or {{\"prompt\"/\"messages\"}} objects, "
                         f"got {type(items).__name__}")
    prompts, problems = [], []
    for number, item in enumerate(items, start=1):
        try:
            prompts.append(prompt_from_record(item, f"item {number}", max_chars))
        except ValueError as error:
            problems.append(f"{error}; skipped")
    if len(prompts) > max_prompts:
        problems.append(f"{prompts[max_prompts].where}: more than {max_prompts} prompts; this one and the rest are skipped")
        del prompts[max_prompts:]
    if not items:
        problems.append("prompts: the list is empty")
    return PromptSet(prompts, problems, "request")


# ---------------------------------------------------------------------------------------------------------------
# Sweeps


def _sweep_value(key: str, text: str):
    text = text.strip()
    if key in ("at_boundary", "force_at_end"):
        return parse_bool(text, f"sweep: {key}")
    if key == "schedule":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"sweep: {key} takes numbers, got {text!r}") from None


@dataclass
class Sweep:
    """A grid of ``eos_reward`` settings: parameter → values, in the order given. Each cell is one column."""

    grid: dict[str, list]

    @classmethod
    def parse(cls, specs: Sequence[str] | str, max_cells: int = MAX_SWEEP_CELLS) -> Sweep:
        """From ``["reward_start_ratio=0.3,0.5", "strength=4,8", "at_boundary=true,false"]`` (or one space-separated
        string). The number of cells is checked (at most ``max_cells``) before any cell is built; every cell is
        validated like any eos_reward setting."""
        shape = "sweep: write PARAMETER=V1,V2,... items, e.g. \"reward_start_ratio=0.3,0.5 strength=4,8\""
        if not isinstance(specs, (str, list, tuple)) or not all(isinstance(spec, str) for spec in specs):
            raise ValueError(shape)
        length = len(specs) if isinstance(specs, str) else sum(len(spec) + 1 for spec in specs)
        if length > MAX_SWEEP_CHARS:
            raise ValueError(f"sweep is {length} characters long; at most {MAX_SWEEP_CHARS} are read "
                             f"(a sweep has at most {max_cells} cells)")
        if isinstance(specs, str):
            specs = specs.split()
        counts = [len({v.strip() for v in spec.partition("=")[2].split(",") if v.strip()}) for spec in specs]
        if math.prod(counts) > max_cells:
            raise ValueError(f"sweep: {' × '.join(map(str, counts))} = {math.prod(counts):,} cells; at most {max_cells} "
                             "(each cell is one column of every prompt): give fewer values")
        grid: dict[str, list] = {}
        for spec in specs:
            key, sep, values = spec.partition("=")
            key = key.strip()
            if not sep or not values.strip():
                raise ValueError(f"sweep: write PARAMETER=V1,V2,... (e.g. strength=4,8,12), got {spec!r}")
            if key not in SWEEPABLE:
                raise ValueError(f"sweep: {key!r} is not an eos_reward parameter; sweepable: {', '.join(SWEEPABLE)}")
            if key in grid:
                raise ValueError(f"sweep: {key} is given twice")
            grid[key] = list(dict.fromkeys(_sweep_value(key, v) for v in values.split(",") if v.strip()))
        if not grid:
            raise ValueError("sweep: give at least one PARAMETER=V1,V2,...")
        sweep = cls(grid)
        for cell in sweep.cells():
            try:
                parse_interventions([{"name": "eos_reward", "params": cell}])
            except ValueError as error:
                raise ValueError(f"sweep: {error}") from None
        return sweep

    def cells(self) -> list[dict]:
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def variants(self, base: Variant) -> list[Variant]:
        """Baseline, then one column per cell: ``base``'s interventions with eos_reward's parameters set by the
        cell, named by its column spec (``eos_reward(strength=4)+stop_strings``)."""
        items = parse_interventions(list(base.interventions))
        if not any(item.name == "eos_reward" for item in items):
            raise ValueError("sweep: the swept column must include eos_reward")
        variants = [Variant("baseline", [], model=base.model)]
        for cell in self.cells():
            column = [Intervention(i.name, {**i.params, **cell}) if i.name == "eos_reward" else i for i in items]
            name = format_column(Column(tuple(Intervention(i.name, cell if i.name == "eos_reward" else {}) for i in items),
                                        base.model))
            variants.append(Variant(name, column, model=base.model))
        return variants

    def to_dict(self) -> dict:
        return {"grid": {key: list(values) for key, values in self.grid.items()}}


# ---------------------------------------------------------------------------------------------------------------
# Per-row measurements


def has_loop(token_ids: Sequence[int], min_tokens: int = LOOP_MIN_TOKENS, max_period: int = LOOP_MAX_PERIOD) -> bool:
    """Does a block of 1..max_period tokens repeat at least 3 times back to back, covering at least min_tokens?"""
    n = len(token_ids)
    for period in range(1, min(max_period, n // 3) + 1):
        run = 0  # consecutive positions i with ids[i] == ids[i - period]
        for i in range(period, n):
            run = run + 1 if token_ids[i] == token_ids[i - period] else 0
            if run >= 2 * period and run + period >= min_tokens:
                return True
    return False


@dataclass
class RowResult:
    """One (prompt, column, seed) decoded: what a report needs of its trace."""

    prompt: int  # index into the report's prompts
    column: int  # index into the report's columns
    seed: int
    text: str
    stop_reason: str
    stop_detail: str | None
    length: int  # generated tokens, EOS not counted
    steps: int  # generated tokens, EOS counted
    nll: float  # sum over the `length` tokens of -log p_raw(chosen)
    wall_seconds: float
    ends_sentence: bool
    loops: bool

    @property
    def clean_stop(self) -> bool:
        return self.stop_reason == "eos" and self.ends_sentence

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "column": self.column, "seed": self.seed, "text": self.text,
                "stop_reason": self.stop_reason, "stop_detail": self.stop_detail, "length": self.length,
                "nll_per_token": round(self.nll / self.length, 4) if self.length else None,
                "ends_sentence": self.ends_sentence, "loops": self.loops, "clean_stop": self.clean_stop,
                "wall_seconds": round(self.wall_seconds, 4)}


def row_result(variant: VariantTrace, *, prompt: int, column: int, seed: int) -> RowResult:
    """Reduce a finished column's trace to its row."""
    kept = variant.steps[:-1] if variant.stop_reason == "eos" else variant.steps
    ids = [s.token_id for s in kept]
    return RowResult(
        prompt=prompt, column=column, seed=seed, text=variant.text, stop_reason=variant.stop_reason,
        stop_detail=variant.stop_detail, length=len(kept), steps=len(variant.steps),
        nll=sum(-math.log(max(s.p_chosen_raw, 1e-45)) for s in kept), wall_seconds=variant.wall_seconds,
        ends_sentence=ends_sentence(variant.text), loops=variant.stop_reason == "repetition" or has_loop(ids),
    )


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95 % by default); (0, 1) when there is nothing to go on."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1), interpolating linearly between the two nearest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate(successes: int, n: int) -> dict:
    low, high = wilson_interval(successes, n)
    return {"rate": successes / n if n else None, "count": successes, "low": low, "high": high}


def column_summary(name: str, rows: Sequence[RowResult]) -> dict:
    """Every metric of one column over its rows (see the module docstring for the definitions)."""
    n = len(rows)
    lengths = [r.length for r in rows]
    tokens = sum(lengths)
    wall = sum(r.wall_seconds for r in rows)
    counts = {
        "eos": sum(r.stop_reason == "eos" for r in rows),
        "limit": sum(r.stop_reason == "max_new_tokens" for r in rows),
        "stop_string": sum(r.stop_reason == "stop_string" for r in rows),
        "loop": sum(r.loops for r in rows),
        "mid_sentence": sum(not r.ends_sentence for r in rows),
        "clean_stop": sum(r.clean_stop for r in rows),
    }
    return {
        "column": name,
        "rows": n,
        **{f"{key}_rate": rate(count, n) for key, count in counts.items()},
        "stop_reasons": {reason: sum(r.stop_reason == reason for r in rows) for reason in STOP_REASONS},
        "mean_length": tokens / n if n else None,
        "median_length": percentile(lengths, 0.5),
        "p90_length": percentile(lengths, 0.9),
        "nll_per_token": sum(r.nll for r in rows) / tokens if tokens else None,
        "tokens_per_second": sum(r.steps for r in rows) / wall if wall > 0 else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# The export issue's snippet


def fix_code(variant: Variant, settings: Settings, *, prompt: Prompt, model_reference: str,
             reveal_paths: bool = True) -> str:
    """Runnable code that applies one column's interventions in the user's own ``generate()`` call."""
    from .export import export_code

    return export_code(parse_interventions(list(variant.interventions)), model_reference=model_reference,
                       prompt=prompt.text, system_prompt=prompt.system or settings.system_prompt,
                       use_chat_template=settings.use_chat_template, max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                       seed=settings.seed, kind="generate", repetition_penalty=settings.repetition_penalty,
                       no_repeat_ngram_size=settings.no_repeat_ngram_size, min_p=settings.min_p,
                       typical_p=settings.typical_p, reveal_paths=reveal_paths)


# ---------------------------------------------------------------------------------------------------------------
# Report


@dataclass
class Report:
    """What an evaluation found; complete=False when it was cancelled (then only finished rows count)."""

    model: str
    model_reference: str
    settings: dict
    seeds: list[int]
    prompts: list[Prompt]
    columns: list[Variant]
    rows: list[RowResult]
    problems: list[str]
    sweep: Sweep | None = None
    complete: bool = True
    wall_seconds: float = 0.0
    expected_rows: int = 0
    reveal_paths: bool = True  # False: the best cell's code names the model's hub id, never a host path

    def rows_of(self, column: int) -> list[RowResult]:
        return [r for r in self.rows if r.column == column]

    def summary(self) -> list[dict]:
        return [{**column_summary(v.name, self.rows_of(i)), "model": v.model} for i, v in enumerate(self.columns)]

    def models(self) -> list[dict] | None:
        """With columns on several models (``base`` and adapters): per model, its column that stops cleanest
        (clean-stop rate, then shorter), best model first; None when every column uses one model."""
        best: dict[str, dict] = {}
        for summary in self.summary():
            rate = summary["clean_stop_rate"]["rate"]
            if rate is None:
                continue
            key = (rate, -(summary["mean_length"] or 0))
            if summary["model"] not in best or key > best[summary["model"]]["key"]:
                best[summary["model"]] = {"model": summary["model"], "column": summary["column"], "key": key,
                                          "clean_stop_rate": summary["clean_stop_rate"],
                                          "mean_length": summary["mean_length"]}
        if len({v.model for v in self.columns}) < 2:
            return None
        ranked = sorted(best.values(), key=lambda m: m["key"], reverse=True)
        return [{k: v for k, v in m.items() if k != "key"} for m in ranked]

    def sweep_cells(self) -> list[dict]:
        """Per sweep cell: its parameters, clean-stop rate, mean length and limit rate (baseline excluded)."""
        if self.sweep is None:
            return []
        cells = []
        for index, cell in enumerate(self.sweep.cells(), start=1):
            summary = column_summary(self.columns[index].name, self.rows_of(index))
            cells.append({"column": index, "params": cell, "name": self.columns[index].name,
                          "clean_stop_rate": summary["clean_stop_rate"], "mean_length": summary["mean_length"],
                          "limit_rate": summary["limit_rate"], "nll_per_token": summary["nll_per_token"]})
        return cells

    def best_cell(self) -> dict | None:
        """The best cell by :data:`BEST_CELL_RULE`, with its exported code; None without a sweep or rows."""
        cells = [c for c in self.sweep_cells() if c["clean_stop_rate"]["rate"] is not None]
        if not cells:
            return None
        best = max(cells, key=lambda c: (c["clean_stop_rate"]["rate"], c["mean_length"]))
        settings = Settings(**self.settings)
        return {**best, "rule": BEST_CELL_RULE,
                "code": fix_code(self.columns[best["column"]], settings, prompt=self.prompts[0],
                                 model_reference=self.model_reference, reveal_paths=self.reveal_paths)}

    def tokens_per_second(self) -> float | None:
        return sum(r.steps for r in self.rows) / self.wall_seconds if self.wall_seconds > 0 else None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "settings": dict(self.settings),
            "seeds": list(self.seeds),
            "complete": self.complete,
            "rows_done": len(self.rows),
            "rows_expected": self.expected_rows,
            "wall_seconds": round(self.wall_seconds, 3),
            "tokens_per_second": self.tokens_per_second(),
            "problems": list(self.problems),
            "columns": [{"name": v.name, "model": v.model,
                         "interventions": [i.to_dict() for i in parse_interventions(list(v.interventions))]}
                        for v in self.columns],
            "summary": self.summary(),
            "models": self.models(),
            "prompts": [{**p.to_dict(), "rows": [r.to_dict() for r in self.rows if r.prompt == index]}
                        for index, p in enumerate(self.prompts)],
            "sweep": None if self.sweep is None else {**self.sweep.to_dict(), "cells": self.sweep_cells(),
                                                      "best": self.best_cell()},
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def rows_csv(self) -> str:
        """One line per (prompt, column, seed)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["prompt_index", "where", "prompt", "column", "seed", "stop_reason", "length",
                         "nll_per_token", "ends_sentence", "loops", "clean_stop", "text"])
        for r in sorted(self.rows, key=lambda r: (r.prompt, r.seed, r.column)):
            p = self.prompts[r.prompt]
            writer.writerow([r.prompt, p.where, p.text, self.columns[r.column].name, r.seed, r.stop_reason, r.length,
                             f"{r.nll / r.length:.4f}" if r.length else "", r.ends_sentence, r.loops, r.clean_stop,
                             r.text])
        return out.getvalue()

    def summary_rows(self) -> list[list]:
        """The per-column table as strings (CLI and page): rates as "42% [30–55]"."""
        def pct(value):
            r = value["rate"]
            return "—" if r is None else f"{r:.0%} [{value['low']:.0%}–{value['high']:.0%}]"

        def num(value, digits=1):
            return "—" if value is None else f"{value:.{digits}f}"

        return [[s["column"], s["rows"], *(pct(s[f"{k}_rate"]) for k in RATES), num(s["mean_length"]),
                 num(s["median_length"]), num(s["p90_length"]), num(s["nll_per_token"], 3), num(s["tokens_per_second"])]
                for s in self.summary()]


SUMMARY_HEADERS = ["column", "rows", "EOS", "limit", "stop string", "loop", "mid-sentence", "clean stop",
                   "mean len", "median len", "p90 len", "NLL/token", "tokens/s"]


def compare_query(prompt: Prompt, columns: Sequence[Variant], settings: Settings, seed: int, max_columns: int = 4) -> str | None:
    """The Compare page's query string that opens this prompt with these columns (each with the parameters that
    differ from what the page's shared settings give it) and settings; None when Compare cannot show it (a
    multi-turn chat, more columns than Compare has)."""
    from .links import to_query

    if prompt.history or len(columns) > max_columns:
        return None
    page = {**DEFAULTS, **{k: v for k, v in settings.to_dict().items() if k in SETTINGS}, "prompt": prompt.text,
            "system_prompt": settings.system_prompt or "", "seed": seed}
    specs = []
    for variant in columns:
        resolved = parse_interventions(list(variant.interventions))
        shared = resolve(Column(tuple(Intervention(i.name) for i in resolved)), page)
        specs.append(Column(tuple(Intervention(i.name, {k: v for k, v in i.params.items() if v != s.params[k]})
                                  for i, s in zip(resolved, shared))))
    return "?" + to_query({**page, "columns": specs})


# ---------------------------------------------------------------------------------------------------------------
# Running


def _engine_prompt(bundle: LoadedModel, prompt: Prompt, variant: Variant, settings: Settings) -> tuple[str, Variant, Settings]:
    """What to hand the engine for one column of one prompt.

    A single-turn prompt goes as it is (its system message, if any, as the system prompt). The engine takes one
    user turn, so a multi-turn chat is rendered here with the chat template — the column's concise suffix added
    to the last user turn, its chat_template switch honoured — and handed over as plain text with those two
    prompt-side interventions taken out of the column."""
    if not prompt.history:
        return prompt.text, variant, dataclasses.replace(settings, system_prompt=prompt.system or settings.system_prompt)
    interventions = parse_interventions(list(variant.interventions))
    prompt_side = {i.name: i.params for i in interventions if i.name in ("concise_suffix", "chat_template")}
    from .interventions import concise_suffix_text

    messages = [dict(m) for m in prompt.messages]
    if "concise_suffix" in prompt_side:
        messages[-1]["content"] += concise_suffix_text(prompt_side["concise_suffix"]["sentences"])
    use_template = prompt_side.get("chat_template", {}).get("enabled", settings.use_chat_template)
    tokenizer = bundle.tokenizer
    if use_template and getattr(tokenizer, "chat_template", None):
        if settings.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": settings.system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        wanted = tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token or ""
        # The engine tokenizes plain text with the tokenizer's own special tokens (a BOS for Llama): drop the
        # template's BOS text when the tokenizer adds it anyway, and make sure the ids are the template's.
        if encode_prompt(tokenizer, text, use_chat_template=False) != wanted and bos and text.startswith(bos):
            text = text[len(bos):]
        if encode_prompt(tokenizer, text, use_chat_template=False) != wanted:
            raise ValueError(f"{prompt.where}: this tokenizer adds special tokens to a rendered chat, so a multi-turn "
                             "prompt cannot be fed exactly; give single-turn prompts")
    else:
        text = "\n\n".join(m["content"] for m in messages)
    kept = [i for i in interventions if i.name not in prompt_side]
    return text, Variant(variant.name, kept, model=variant.model), dataclasses.replace(settings, use_chat_template=False,
                                                                                   system_prompt=None)


class Evaluation:
    """Prompts × seeds × columns, decoded through :func:`~playground.engine.run_all`.

    Everything is validated up front: a prompt the engine refuses (too long for the context window, or over the
    app's prompt-token cap) is reported by its line and left out of every column, so all columns see the same
    prompts. Iterate :meth:`run` (yields the number of finished rows); :meth:`cancel` from any thread stops within
    one decoding step; :meth:`report` at any time gives the report of the rows finished so far.
    ``time_limit_seconds`` bounds the whole evaluation (the rows finished by then are the report);
    ``reveal_paths`` False writes the best cell's code with the model's hub id, never a host path.
    """

    def __init__(self, bundle: LoadedModel, prompts: PromptSet, variants: Sequence[Variant], settings: Settings, *,
                 seeds: int = 1, sweep: Sweep | None = None, model_reference: str = "default",
                 max_new_tokens_cap: int | None = None, prompt_token_check=None, max_rows: int = 32,
                 time_limit_seconds: float | None = None, reveal_paths: bool = True):
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, got {seeds!r}")
        if seeds > 1 and settings.temperature == 0:
            raise ValueError("seeds: greedy decoding (temperature 0) gives the same answer for every seed; "
                             "set a temperature above 0 or use 1 seed")
        if not variants:
            raise ValueError("columns: give at least one")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"column names must be unique, got {names}")
        for variant in variants:
            parse_interventions(list(variant.interventions))
            try:
                variant.model = bundle.resolve_model(variant.model)
            except ValueError as error:
                raise ValueError(f"{variant.name}: {error}") from None
        cap = {} if max_new_tokens_cap is None else {"max_new_tokens_cap": max_new_tokens_cap}
        settings.validate(vocab_size=bundle.info.vocab_size, **cap)  # a bad setting is no prompt's fault
        rows = len(prompts.prompts) * seeds * len(variants)
        if rows > MAX_ROWS:
            raise ValueError(f"evaluation too large: {len(prompts.prompts)} prompts × {len(variants)} columns × {seeds} "
                             f"seeds = {rows:,} rows; at most {MAX_ROWS:,}. Use fewer prompts, columns or seeds.")
        self.bundle, self.settings, self.sweep, self.max_rows = bundle, settings, sweep, max_rows
        self.model_reference, self.reveal_paths = model_reference, reveal_paths
        self.time_limit_seconds = time_limit_seconds
        self.columns = list(variants)
        self.seeds = [settings.seed + k for k in range(seeds)]
        self.problems = list(prompts.problems)
        self.prompts: list[Prompt] = []
        self._jobs: list[tuple[Comparison, int, int, int]] = []  # (comparison, prompt, column, seed)
        for prompt in prompts.prompts:
            try:
                jobs = []
                for seed in self.seeds:
                    for column, variant in enumerate(self.columns):
                        text, engine_variant, engine_settings = _engine_prompt(
                            bundle, prompt, variant, dataclasses.replace(settings, seed=seed, telemetry_top_k=1))
                        comparison = Comparison(bundle, text, [engine_variant], engine_settings, **cap)
                        if prompt_token_check is not None:
                            prompt_token_check(comparison.padded_length)
                        jobs.append((comparison, len(self.prompts), column, seed))
            except ValueError as error:
                message = str(error)
                self.problems.append(f"{message if message.startswith(prompt.where) else f'{prompt.where}: {message}'}; skipped")
                continue
            self.prompts.append(prompt)
            self._jobs.extend(jobs)
        if not self.prompts:
            raise ValueError("prompts: none can run" + (" — " + "; ".join(self.problems[:5]) if self.problems else ""))
        self.rows: list[RowResult] = []
        self._cancel = threading.Event()
        self._wall = 0.0
        self._tokens_done = 0  # tokens of the rows that finished (their steps are dropped once measured)
        self.timed_out = False

    @property
    def total(self) -> int:
        return len(self._jobs)

    def cancel(self) -> None:
        self._cancel.set()
        for comparison, *_ in self._jobs:
            comparison.cancel()

    def _time_out(self) -> None:
        self.timed_out = True
        self.problems.append(f"time limit: this app stops an evaluation after {self.time_limit_seconds:g} s; the "
                             "report holds the rows that finished by then")
        self.cancel()

    def run(self, heartbeat: float | None = None) -> Iterator[int]:
        """Decode every row; yield the number of finished rows after each one (and every ``heartbeat`` seconds
        while none finishes: see :meth:`progress`). At the time limit the rows in flight are cancelled (within
        one step) and the run ends."""
        where = {id(c): (prompt, column, seed) for c, prompt, column, seed in self._jobs}
        started = time.perf_counter()
        decoded = run_all([job[0] for job in self._jobs], max_rows=self.max_rows, heartbeat=heartbeat)
        timer = None
        if self.time_limit_seconds:
            timer = threading.Timer(self.time_limit_seconds, self._time_out)
            timer.daemon = True
            timer.start()
        try:
            for comparison in decoded:
                if comparison is None:
                    self._wall = time.perf_counter() - started
                    yield len(self.rows)
                    continue
                variant = comparison.trace.variants[0]
                if variant.stop_reason != "cancelled":
                    prompt, column, seed = where[id(comparison)]
                    self.rows.append(row_result(variant, prompt=prompt, column=column, seed=seed))
                self._tokens_done += len(variant.steps)
                variant.steps = []  # the row is measured: drop its per-step telemetry
                self._wall = time.perf_counter() - started
                yield len(self.rows)
                if self._cancel.is_set():
                    break
        finally:
            if timer is not None:
                timer.cancel()
            decoded.close()
            self._wall = time.perf_counter() - started

    def progress(self) -> dict:
        """Where a running evaluation is: rows done of the total, tokens decoded (finished rows and those in
        flight), rows in flight, seconds elapsed and an estimate of the seconds left (None until a token is
        decoded): rows count as done by their tokens over max new tokens."""
        in_flight = [len(c.trace.variants[0].steps) for c, *_ in self._jobs
                     if c.trace.variants[0].stop_reason is None and c.trace.variants[0].steps]
        done, total = len(self.rows), self.total
        fraction = (done + sum(in_flight) / max(self.settings.max_new_tokens, 1)) / total if total else 1.0
        left = self._wall * (1 - fraction) / fraction if fraction > 0 and self._wall > 0 else None
        return {"done": done, "total": total, "tokens": self._tokens_done + sum(in_flight), "in_flight": len(in_flight),
                "seconds": self._wall, "seconds_left": left}

    def report(self) -> Report:
        return Report(
            model=self.bundle.info.name, model_reference=self.model_reference, settings=self.settings.to_dict(),
            seeds=self.seeds, prompts=self.prompts, columns=self.columns, rows=list(self.rows),
            problems=list(self.problems), sweep=self.sweep, complete=len(self.rows) == self.total,
            wall_seconds=self._wall, expected_rows=self.total, reveal_paths=self.reveal_paths,
        )


def check_budget(n_prompts: int, n_columns: int, n_seeds: int, max_new_tokens: int, budget: int = PUBLIC_TOKEN_BUDGET) -> None:
    """Public mode: refuse an evaluation that could generate more than ``budget`` tokens."""
    work = n_prompts * n_columns * n_seeds * max_new_tokens
    if work > budget:
        raise ValueError(f"evaluation too large for this public app: {n_prompts} prompts × {n_columns} columns × "
                         f"{n_seeds} seeds × {max_new_tokens} new tokens = {work} tokens; at most {budget}. "
                         "Use fewer prompts, columns or seeds, or a lower max new tokens.")
