"""What an evaluation found: :class:`Report` (the per-column summary, the sweep's cells and best cell with its
code, JSON and CSV), the summary table's headers, and the Compare link of one row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine import Settings, Variant
from ..interventions import Intervention, parse_interventions
from ..request import DEFAULTS, SETTINGS, Column, resolve
from .metrics import RATES, RowResult, column_summary
from .prompt_files import Prompt
from .sweep import Sweep

BEST_CELL_RULE = ("the highest clean-stop rate (EOS right after a sentence end); ties go to the longest mean "
                  "length, i.e. the setting that cuts answers the least")


def fix_code(variant: Variant, settings: Settings, *, prompt: Prompt, model_reference: str,
             reveal_paths: bool = True) -> str:
    """Runnable code that applies one column's interventions in the user's own ``generate()`` call."""
    from ..export import export_code

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
    from ..links import to_query

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
