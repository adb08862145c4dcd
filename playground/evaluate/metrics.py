"""What an evaluation measures: each finished row reduced to a :class:`RowResult`, and a column's metrics over its
rows (:func:`column_summary`).

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

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..interventions import ends_sentence
from ..trace import StopReason, VariantTrace

Z_95 = 1.959963984540054
LOOP_MIN_TOKENS = 16
LOOP_MAX_PERIOD = 32
# A cancelled row is not counted. Plain str: they key the report's JSON, and orjson refuses a str subclass as a key.
STOP_REASONS = tuple(r.value for r in StopReason if r != StopReason.CANCELLED)
RATES = ("eos", "limit", "stop_string", "loop", "mid_sentence", "clean_stop")


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
    stop_reason: StopReason
    stop_detail: str | None
    length: int  # generated tokens, EOS not counted
    steps: int  # generated tokens, EOS counted
    nll: float  # sum over the `length` tokens of -log p_raw(chosen)
    wall_seconds: float
    ends_sentence: bool
    loops: bool

    @property
    def clean_stop(self) -> bool:
        return self.stop_reason == StopReason.EOS and self.ends_sentence

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "column": self.column, "seed": self.seed, "text": self.text,
                "stop_reason": self.stop_reason, "stop_detail": self.stop_detail, "length": self.length,
                "nll_per_token": round(self.nll / self.length, 4) if self.length else None,
                "ends_sentence": self.ends_sentence, "loops": self.loops, "clean_stop": self.clean_stop,
                "wall_seconds": round(self.wall_seconds, 4)}


def row_result(variant: VariantTrace, *, prompt: int, column: int, seed: int) -> RowResult:
    """Reduce a finished column's trace to its row."""
    kept = variant.steps[:-1] if variant.stop_reason == StopReason.EOS else variant.steps
    ids = [s.token_id for s in kept]
    return RowResult(
        prompt=prompt, column=column, seed=seed, text=variant.text, stop_reason=variant.stop_reason,
        stop_detail=variant.stop_detail, length=len(kept), steps=len(variant.steps),
        nll=sum(-math.log(max(s.p_chosen_raw, 1e-45)) for s in kept), wall_seconds=variant.wall_seconds,
        ends_sentence=ends_sentence(variant.text), loops=variant.stop_reason == StopReason.REPETITION or has_loop(ids),
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
        "eos": sum(r.stop_reason == StopReason.EOS for r in rows),
        "limit": sum(r.stop_reason == StopReason.MAX_NEW_TOKENS for r in rows),
        "stop_string": sum(r.stop_reason == StopReason.STOP_STRING for r in rows),
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
