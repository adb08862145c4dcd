"""The EOS logits processors, per call at a real vocabulary size: our ramp
(:class:`~playground.interventions.EosRewardLogitsProcessor`) against the article's literal
``EosTokenRewardLogitsProcessor``, measured in the same run. The article's code is not part of this project: it is
read from the source document (``../shared/seeds/001_*.txt`` next to the repository, or ``/work/shared/seeds``) and
executed at run time.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

SEED_DIRS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "seeds", Path("/work/shared/seeds"))
ARTICLE_CLASS = "EosTokenRewardLogitsProcessor"


def article_processor_class() -> tuple[type | None, str]:
    """The article's class, extracted from its source document and executed; (None, reason) when not found."""
    from transformers import LogitsProcessor

    for directory in SEED_DIRS:
        for document in sorted(directory.glob("001_*.txt")):
            for block in re.findall(r"```[a-z]*\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.S):
                if f"class {ARTICLE_CLASS}" in block:
                    namespace = {"torch": torch, "LogitsProcessor": LogitsProcessor}
                    exec(compile(block, str(document), "exec"), namespace)
                    return namespace[ARTICLE_CLASS], str(document.resolve())
    return None, "article document not found in " + " or ".join(str(d) for d in SEED_DIRS)


class _ListBuildingSeed:
    """Fallback when the article is absent: the same transform, built like the article with Python lists over the
    vocabulary (one list per pass instead of three, so the measured ratio is a lower bound)."""

    def __init__(self, eos_token_id: int, max_length: int):
        self.eos_token_id, self.max_length = eos_token_id, max_length

    def __call__(self, input_ids, scores):
        for ratio in (int(self.max_length * 0.8) / self.max_length, 1.0):
            others = [i for i in range(scores.shape[1]) if i != self.eos_token_id]
            selected = scores[:, others]
            scores[:, others] = selected * ratio * 10 * torch.exp(-torch.sign(selected))
            scores[:, self.eos_token_id] = 1e2 * ratio
        return scores


def _seconds_per_call(call, rounds: int, round_seconds: float = 0.05) -> float:
    """Best over ``rounds`` of the mean time per call, each round calling enough times to last ~round_seconds."""
    for _ in range(2):  # warm up: first calls allocate and move lookup tables
        started = time.perf_counter()
        call()
    number = max(1, int(round_seconds / max(time.perf_counter() - started, 1e-7)))
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def bench_processors(vocab_size: int = 49152, repeats: int = 5) -> dict:
    """Per-call cost of the EOS processors on one row of ``vocab_size`` logits (CPU, one thread), best of ``repeats`` rounds.

    Every processor is timed in the same process and run, so the speed-up ratios hold even on a busy machine.
    """
    from playground.interventions import EosRewardLogitsProcessor, SeedEosTokenRewardLogitsProcessor

    eos, max_new_tokens, prompt_length = 2, 300, 40
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(1, vocab_size, generator=generator) * 5
    # Step 280 of 300: inside the ramp, so the processors do their full work.
    input_ids = torch.randint(0, vocab_size, (1, prompt_length + 280), generator=generator)
    input_ids[0, -1] = 13  # any id; the boundary lookup costs the same either way

    article_class, source = article_processor_class()
    literal = (article_class or _ListBuildingSeed)(eos, max_new_tokens)
    vectorised_seed = SeedEosTokenRewardLogitsProcessor(eos, max_new_tokens)
    ramp = EosRewardLogitsProcessor(eos, max_new_tokens, prompt_length)
    ramp_at_boundary = EosRewardLogitsProcessor(eos, max_new_tokens, prompt_length, at_boundary=True,
                                                boundary_token_ids=list(range(0, vocab_size, 97)))
    # Both seed versions mutate their input, so each call gets a fresh copy (a copy costs microseconds).
    # One intra-op thread: a per-call cost then does not depend on how busy the other cores are (on a loaded
    # 2-core machine, waking torch's thread pool for 49k-element ops costs more than the ops themselves).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        literal_seconds = _seconds_per_call(lambda: literal(input_ids, scores.clone()), repeats)
        seed_seconds = _seconds_per_call(lambda: vectorised_seed(input_ids, scores.clone()), repeats)
        ramp_seconds = _seconds_per_call(lambda: ramp(input_ids, scores), repeats)
        ramp_boundary_seconds = _seconds_per_call(lambda: ramp_at_boundary(input_ids, scores), repeats)
    finally:
        torch.set_num_threads(threads)

    return {
        "vocab_size": vocab_size,
        "torch_threads": 1,
        "literal_seed_source": source if article_class else f"fallback list-building reference ({source})",
        "literal_seed_ms_per_call": round(literal_seconds * 1e3, 3),
        "vectorised_seed_us_per_call": round(seed_seconds * 1e6, 2),
        "eos_reward_us_per_call": round(ramp_seconds * 1e6, 2),
        "eos_reward_at_boundary_us_per_call": round(ramp_boundary_seconds * 1e6, 2),
        "eos_reward_speedup_vs_literal_seed": round(literal_seconds / ramp_seconds, 1),
        "vectorised_seed_speedup_vs_literal_seed": round(literal_seconds / seed_seconds, 1),
        "vectorised_seed_matches_literal": bool(torch.equal(literal(input_ids, scores.clone()), vectorised_seed(input_ids, scores.clone()))),
    }
