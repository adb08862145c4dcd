"""Running an evaluation: :class:`Evaluation` validates everything up front, then decodes every (prompt, seed,
column) row through :func:`~playground.engine.run_all` and reduces each to its :class:`~playground.evaluate.metrics.RowResult`.

    >>> from playground.models import load_model
    >>> from playground.engine import Settings, Variant
    >>> from playground.evaluate.prompt_files import builtin_prompts
    >>> from playground.evaluate.runner import Evaluation
    >>> bundle = load_model()
    >>> evaluation = Evaluation(bundle, builtin_prompts(), [Variant("baseline"), Variant("eos_reward", ["eos_reward"])],
    ...                         Settings(max_new_tokens=64))
    >>> for done in evaluation.run():  # doctest: +SKIP
    ...     print(f"{done}/{evaluation.total}")
    >>> evaluation.report().summary()[1]["eos_rate"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence

from ..engine import Comparison, Settings, SplitComparison, Variant, comparison_for, run_all
from ..interventions import parse_interventions
from ..models import LoadedModel
from ..prompts import encode_prompt
from ..trace import StopReason
from .metrics import RowResult, row_result
from .prompt_files import Prompt, PromptSet
from .report import Report
from .sweep import Sweep

MAX_SEEDS = 16
# Every mode: an evaluation decodes at most this many rows (prompts × columns × seeds), each a comparison built
# up front.
MAX_ROWS = 10_000
# Public mode: prompts × columns × seeds × max_new_tokens may not exceed this many tokens per evaluation.
PUBLIC_TOKEN_BUDGET = 32_768


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
    from ..interventions import concise_suffix_text

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
        self._jobs: list[tuple[Comparison | SplitComparison, int, int, int]] = []  # (comparison, prompt, column, seed)
        for prompt in prompts.prompts:
            try:
                jobs = []
                for seed in self.seeds:
                    for column, variant in enumerate(self.columns):
                        # A multi-turn prompt is rendered with the chat template of the model the column runs on.
                        text, engine_variant, engine_settings = _engine_prompt(
                            bundle.bundle_for(variant.model), prompt, variant,
                            dataclasses.replace(settings, seed=seed, telemetry_top_k=1))
                        comparison = comparison_for(bundle, text, [engine_variant], engine_settings, **cap)
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

    @property
    def cancelled(self) -> bool:
        """Stop was asked for (the rows in flight end within a step)."""
        return self._cancel.is_set()

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
                if variant.stop_reason != StopReason.CANCELLED:
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
