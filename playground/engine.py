"""Decode several variants of one prompt side by side and record, step by step, why each stops.

All variants share one batch — with every other comparison running on the model (``decoder.DecodeLoop``):
one forward pass per step for every row that is still running, a KV cache, left padding where prompts differ
(e.g. a concise-answer suffix). Rows finish independently and are dropped from the batch (and its cache) as
they do. Every row samples as if with its own generator seeded identically (one draw a step serves them all),
so a difference between columns comes only from the interventions.

At each step, per row::

    raw logits ─► generation config's processors (repetition penalty, no-repeat n-grams, ...) ─► row's interventions
               ─► temperature ─► top-k ─► top-p ─► min-p ─► typical-p ─► sample (or argmax if T = 0)

which is the order ``generate()`` applies them in (:mod:`playground.pipeline`), and the trace records the chosen
token, p(EOS) before and after, the top-k both ways, entropy, and after each stage its distribution and a line
saying what it did (:mod:`playground.telemetry`). A branch column forces its first tokens (see :class:`Variant`).

    >>> from playground.models import load_model
    >>> from playground.engine import Settings, Variant, compare
    >>> bundle = load_model()
    >>> trace = compare(bundle, "What can I do in Paris?",
    ...                 [Variant("baseline"), Variant("eos_reward", ["eos_reward"])], Settings(max_new_tokens=64))
    >>> [v.stop_reason for v in trace.variants]  # doctest: +SKIP
    ['max_new_tokens', 'eos']
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch

from . import pipeline, telemetry
from .decoder import decode_loop
from .detokenize import GrowingText, decoder_of
from .interventions import Intervention, build_interventions, parse_interventions
from .models import BASE, LoadedModel
from .openmp import release_thread_team
from .prompts import encode_prompt
from .request import SETTINGS, check_number, check_setting, check_whole
from .trace import StepRecord, StopReason, Trace, VariantTrace, first_difference

MAX_NEW_TOKENS_CAP = 2048
MAX_VARIANTS = 8
MAX_TRACE_COLUMNS = 2 * MAX_VARIANTS  # the columns of one trace, branches included


@dataclass
class Settings:
    """Decoding settings shared by every variant. ``temperature == 0`` means greedy decoding.

    They mean what the same-named ``generate()`` arguments mean. The repetition penalty and no-repeat n-grams
    change the logits, so they apply under greedy decoding too; temperature, top-k, top-p, min-p and typical-p
    shape the sampling distribution, so greedy decoding skips them, as ``generate(do_sample=False)`` does.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off; keeps tokens with at least min_p × the top token's probability
    typical_p: float = 1.0  # 1 = off; keeps the tokens whose surprise is closest to the entropy, up to this mass
    repetition_penalty: float = 1.0  # 1 = off; > 1 lowers every token already in the text (prompt included)
    no_repeat_ngram_size: int = 0  # 0 = off; bans any token that would repeat an n-gram already in the text
    seed: int = 0
    use_chat_template: bool = True
    system_prompt: str | None = None
    telemetry_top_k: int = 10
    timeout_seconds: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, *, vocab_size: int, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP) -> None:
        """Raise ValueError naming the first field out of range, with the sentence every door gives: the fields
        that are run settings are checked by :data:`playground.request.SETTINGS` (one range each, whatever the
        door), max_new_tokens also against the app's cap; whole numbers given as floats are normalised.

            >>> Settings(temperature=2.5).validate(vocab_size=10)
            Traceback (most recent call last):
            ValueError: temperature must be between 0 and 2, got 2.5
        """
        for name in (f.name for f in dataclasses.fields(self) if f.name in SETTINGS):
            value = getattr(self, name)
            if not (name == "system_prompt" and value is None):  # None: no system turn
                setattr(self, name, check_setting(name, value, high=max_new_tokens_cap if name == "max_new_tokens" else None))
        self.top_k = check_whole(self.top_k, "top_k", 0, vocab_size)  # a tiny vocabulary may be below the schema's
        self.telemetry_top_k = check_whole(self.telemetry_top_k, "telemetry_top_k", 1, 100)
        if self.timeout_seconds is not None:
            self.timeout_seconds = check_number(self.timeout_seconds, "timeout_seconds", 1e-6)  # any positive time


@dataclass
class Variant:
    """One column: a name and the interventions applied to it (names, dicts or Intervention objects).

    A branch ("what if the model had picked that other token here?") also forces its first tokens:
    ``forced_token_ids`` are the parent column's tokens before the fork followed by the token picked at the
    fork, and ``branch_of`` is ``(column, step)``, the parent's column number (from 1) and the fork step.
    At a forced step the telemetry is recorded as usual and the forced token is taken; sampled rows still draw
    from their generator, so a branch forced with the parent's own token reproduces the parent exactly.
    :func:`branch_variant` builds one from a finished trace.

    ``model`` is the column's model: ``"base"``, a loaded adapter's name or a second checkpoint's (None: the
    adapter when exactly one is loaded, else the base; see :meth:`~playground.models.LoadedModel.resolve_model`).
    """

    name: str
    interventions: Sequence[Intervention | dict | str] = field(default_factory=list)
    forced_token_ids: Sequence[int] = ()
    branch_of: tuple[int, int] | None = None
    model: str | None = None


def _triple(branch) -> Sequence:
    if isinstance(branch, str) or not isinstance(branch, Sequence) or len(branch) != 3:
        raise ValueError(f"a branch is [column, step, token_id] (three whole numbers), got {branch!r}")
    return branch


def check_branch(branch, *, columns: int, steps: int, vocab_size: int, steps_reason: str = "") -> tuple[int, int, int]:
    """A branch request ``(column, step, token_id)`` as whole numbers in range: column from 1 to ``columns``,
    step from 0 to ``steps - 1``, a token of the vocabulary. Raises ValueError with a sentence naming the field."""
    values = []
    for name, value in zip(("column", "step", "token_id"), _triple(branch)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value != int(value):
            raise ValueError(f"branch {name} must be a whole number, got {value!r}")
        values.append(int(value))
    column, step, token_id = values
    if not 1 <= column <= columns:
        raise ValueError(f"branch column must be between 1 and {columns} (columns count from 1), got {column}")
    if not 0 <= step < steps:
        raise ValueError(f"branch step must be between 0 and {steps - 1}{steps_reason}, got {step}")
    if not 0 <= token_id < vocab_size:
        raise ValueError(f"branch token_id must be between 0 and {vocab_size - 1} (the vocabulary), got {token_id}")
    return column, step, token_id


def branch_variant(bundle: LoadedModel, trace: Trace, column: int, step: int, token_id: int) -> Variant:
    """The column that continues ``trace``'s column number ``column`` (from 1) from ``step`` with
    ``token_id`` instead of what it chose there: same interventions, same tokens before the fork. Decode it
    with the trace's settings; :meth:`Comparison.of_branches` does both and appends it to the trace.

    Raises ValueError with a sentence naming the field when the column, step or token does not exist.
    """
    columns = len(trace.variants)
    column = check_branch((column, 0, 0), columns=columns, steps=1, vocab_size=1)[0]  # the column first: steps depend on it
    parent = trace.variants[column - 1]
    _, step, token_id = check_branch((column, step, token_id), columns=columns, steps=len(parent.steps),
                                     vocab_size=bundle.info.vocab_size,
                                     steps_reason=f" (column {column} {parent.name!r} has {pipeline.count(len(parent.steps), 'step')})")
    name = f"{parent.name} → {bundle.tokenizer.decode([token_id])!r} at step {step}"
    return Variant(name, list(parent.interventions), forced_token_ids=[*parent.token_ids[:step], token_id],
                   branch_of=(column, step), model=parent.model)


def _visible(text: str, stop_strings: Sequence[str]) -> str:
    """Text safe to show while running: hold back a tail that could still grow into a stop string."""
    hold = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold]


class _Row:
    """Decoding state of one variant that the trace does not need to carry (a :class:`pipeline.PipelineRow`)."""

    def __init__(self, variant: Variant, interventions: list[Intervention], prompt_ids: list[int], model: str):
        self.variant = variant
        self.forced_token_ids = variant.forced_token_ids
        self.model = model  # "base" or a loaded adapter's name
        self.interventions = interventions
        self.interventions_key = json.dumps([i.to_dict() for i in interventions], sort_keys=True)
        self.prompt_ids = prompt_ids
        self.prompt_length = len(prompt_ids)
        self.built = None  # BuiltInterventions, once the padded prompt length is known
        self.text: GrowingText | None = None  # the generated ids so far as text, EOS excluded (once begun)

    @property
    def logits_processors(self):
        return self.built.logits_processors


def _column_model(bundle: LoadedModel, variant: Variant) -> str:
    """The column's model as ``bundle`` names it; ValueError naming the column and the models it may use."""
    try:
        return bundle.resolve_model(variant.model)
    except ValueError as error:
        raise ValueError(f"{variant.name}: {error}") from None


def _check_request(bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                   branches: Sequence, max_new_tokens_cap: int) -> list[tuple[int, int, int]]:
    """Check what a comparison is asked to decode before anything is tokenized (ValueError naming the field);
    return its branch requests as whole numbers."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty: type a question or some text for the model to continue")
    if not 1 <= len(variants) <= MAX_VARIANTS:
        raise ValueError(f"variants: give between 1 and {MAX_VARIANTS}, got {len(variants)}")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    settings.validate(vocab_size=bundle.info.vocab_size, max_new_tokens_cap=max_new_tokens_cap)
    for variant in variants:
        forced = variant.forced_token_ids
        if len(forced) > settings.max_new_tokens or not all(
                isinstance(t, int) and 0 <= t < bundle.info.vocab_size for t in forced):
            raise ValueError(f"{variant.name}: forced_token_ids must be at most max_new_tokens "
                             f"({settings.max_new_tokens}) token ids below the vocabulary size {bundle.info.vocab_size}")
    checked = [check_branch(b, columns=len(variants), steps=settings.max_new_tokens,
                            vocab_size=bundle.info.vocab_size, steps_reason=" (max_new_tokens - 1)")
               for b in branches]
    if len(variants) + len(checked) > MAX_TRACE_COLUMNS:
        raise ValueError(f"branches: a trace holds at most {MAX_TRACE_COLUMNS} columns, branches included; "
                         f"{len(variants)} columns leave room for {MAX_TRACE_COLUMNS - len(variants)} branches")
    return checked


class _FollowedRun:
    """What a reader of a :class:`Comparison` or a :class:`SplitComparison` does the same way: :meth:`run`, from
    what both have: ``submit``, ``cancel``, ``done``, ``error``, ``progress`` (a condition notified as rows
    advance) and ``version`` (changes as they do)."""

    def _settle(self) -> None:
        """Bring the trace up to date before a reader sees it (a Comparison's is, step by step)."""

    def run(self) -> Iterator[Trace]:
        """Decode every column to its end, yielding the (same) trace whenever rows have advanced: after every step
        for a fast consumer, several steps at once for a slow one (decoding never waits on the consumer). The last
        yield is the finished trace. Closing the generator early cancels the rows."""
        self.submit()
        release_thread_team()  # this thread only waits from now on: its OpenMP threads would slow the loop's
        seen = 0
        try:
            while True:
                with self.progress:
                    self.progress.wait_for(lambda: self.version != seen)
                    seen = self.version
                if self.done:
                    break
                self._settle()
                yield self.trace
        finally:
            if not self.done:  # closed early (a UI Stop, a closed page): cancel and wait for the loops to let go
                self.cancel()
                with self.progress:
                    self.progress.wait_for(lambda: self.done)
        if self.error is not None:
            raise self.error
        self._settle()
        yield self.trace


class Comparison(_FollowedRun):
    """One prompt, several variants, decoded together. Validates everything before any decoding.

    Iterate :meth:`run` to decode; it yields the (same, updated) :class:`Trace` as rows advance. The rows are
    decoded by the model's :class:`~playground.decoder.DecodeLoop`, in one batch with every other comparison
    running on that model. :meth:`cancel` (from any thread) stops all rows within one step. A reader that needs
    a consistent view of a running trace (every column at the same step) holds :attr:`lock` while reading.
    """

    def __init__(self, bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                 *, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP, branches: Sequence = (),
                 appends_to: Trace | None = None, part_of: SplitComparison | None = None):
        """``branches``: ``(column, step, token_id)`` requests to decode once this comparison has finished
        (checked now as far as they can be; :meth:`of_branches` builds their comparison). ``appends_to``: the
        trace whose columns these are branches of; a caller streaming this comparison shows
        ``appends_to.with_branches(trace)``. ``part_of``: the :class:`SplitComparison` whose columns on
        ``bundle`` these are. Every variant's model must be ``bundle``'s own (``base`` or an adapter):
        :func:`comparison_for` builds the comparison of columns on second checkpoints."""
        self.branches = _check_request(bundle, prompt, variants, settings, branches, max_new_tokens_cap)
        self.appends_to = appends_to
        self.bundle, self.settings = bundle, settings
        self._cancel = threading.Event()
        self.lock = threading.Lock()  # held by the decode loop while it steps this comparison's rows
        # A part of a SplitComparison wakes the one reader of all parts, which also finds where columns diverge.
        self.part_of = part_of
        self.progress = part_of.progress if part_of is not None else threading.Condition()  # notified by publish()
        self._version, self._done, self._error = 0, False, None
        self._on_done = None
        self._started = 0.0
        self._generator: torch.Generator | None = None  # seeded in begin(); None when greedy
        tokenizer = bundle.tokenizer
        # Stop where generate() would stop (the generation config's EOS ids), so a column behaves like the
        # user's own code; an EOS the tokenizer knows but generation ignores is the doctor's business.
        self.eos_ids = list(dict.fromkeys(bundle.info.stop_token_ids))  # once each: p(EOS) sums over them
        self._eos_index = torch.tensor(self.eos_ids, dtype=torch.long)  # the same, for the telemetry's gathers

        rows = []
        for variant in variants:
            interventions = parse_interventions(list(variant.interventions))
            prompt_side = build_interventions(interventions, tokenizer=tokenizer, eos_token_ids=self.eos_ids,
                                              max_new_tokens=settings.max_new_tokens, prompt_length=None)
            use_template = settings.use_chat_template if prompt_side.use_chat_template is None else prompt_side.use_chat_template
            ids = encode_prompt(tokenizer, prompt + prompt_side.prompt_suffix, use_chat_template=use_template,
                                system_prompt=settings.system_prompt)
            model = _column_model(bundle, variant)
            if model in bundle.checkpoints:  # another model, with a decode loop of its own
                raise ValueError(f"{variant.name}: {model!r} is a second checkpoint: comparison_for() decodes its "
                                 "columns in a SplitComparison")
            rows.append(_Row(variant, interventions, ids, model))
        context = bundle.info.context_length
        longest = max(len(r.prompt_ids) for r in rows)
        if context and longest >= context:
            raise ValueError(f"prompt is {longest} tokens, the model's whole context window is {context}: shorten it "
                             f"by at least {longest - context + 1} tokens (and leave room for the answer)")
        if context and longest + settings.max_new_tokens > context:
            raise ValueError(
                f"prompt is {longest} tokens; with max_new_tokens {settings.max_new_tokens} that exceeds the "
                f"model's context window of {context} tokens. Shorten the prompt or lower max_new_tokens "
                f"to at most {context - longest}."
            )
        self.padded_length = longest
        for row in rows:
            row.built = build_interventions(row.interventions, tokenizer=tokenizer, eos_token_ids=self.eos_ids,
                                            max_new_tokens=settings.max_new_tokens, prompt_length=longest)
        self._rows = rows
        # Each processor is its own stage row; generate() runs them before any custom processor.
        self._processors = [pipeline.processor_stage(p) for p in pipeline.generation_config_processors(
            bundle.model, longest, settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size)]
        self._warpers = pipeline.sampling_warpers(settings)
        self.token_texts = telemetry.token_texts(bundle.tokenizer)  # token id → text, shared by every run
        self.trace = Trace(
            model=bundle.info.name,
            prompt=prompt,
            settings=settings.to_dict(),
            variants=[VariantTrace(r.variant.name, [i.to_dict() for i in r.interventions], len(r.prompt_ids),
                                   branch_of=r.variant.branch_of, model=r.model,
                                   model_note=None if bundle.mixable(r.model) else
                                   f"{r.model} is not a plain LoRA (e.g. DoRA): PEFT cannot batch it with other "
                                   "models, so its rows take turns", shared_forward=bundle.mixable(r.model))
                      for r in rows],
        )

    @classmethod
    def of_branches(cls, bundle: LoadedModel, trace: Trace, branches: Sequence, settings: Settings | None = None,
                    **kwargs) -> Comparison | SplitComparison:
        """One batch decoding ``branches`` (``(column, step, token_id)`` each) of ``trace``'s columns, with
        the trace's settings unless given; it appends to ``trace`` (see :meth:`Trace.with_branches`)."""
        if not branches:
            raise ValueError("branches: give at least one [column, step, token_id]")
        if len(trace.variants) + len(branches) > MAX_TRACE_COLUMNS:
            raise ValueError(f"a trace holds at most {MAX_TRACE_COLUMNS} columns, branches included; "
                             f"this one has {len(trace.variants)}: start a new comparison to branch again")
        variants, taken = [], {v.name for v in trace.variants}
        for branch in branches:
            variant = branch_variant(bundle, trace, *_triple(branch))
            while variant.name in taken:
                variant.name += "′"
            taken.add(variant.name)
            variants.append(variant)
        settings = settings or Settings(**trace.settings)
        # A branch of a second checkpoint's column continues on that checkpoint.
        return comparison_for(bundle, trace.prompt, variants, settings, appends_to=trace, **kwargs)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def parts(self) -> list[Comparison]:
        """The comparisons a decode loop runs for this one: itself (a :class:`SplitComparison` has one per model)."""
        return [self]

    @property
    def row_count(self) -> int:
        """Rows this comparison decodes: one per column."""
        return len(self._rows)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def error(self) -> BaseException | None:
        """What stopped the run, once done (None: it ended on its own or was cancelled)."""
        return self._error

    @property
    def version(self) -> int:
        """Counts :meth:`publish` calls: a reader waiting on :attr:`progress` sees rows advanced when it changes."""
        return self._version

    def row_adapters(self, rows: Sequence[int]) -> list[str]:
        """PEFT's adapter name for each of the rows ``rows`` (original indices): ``adapter_names`` of a forward pass."""
        return [self.bundle.peft_name(self._rows[i].model) for i in rows]

    def submit(self, on_done=None) -> None:
        """Hand this comparison's rows to its model's decode loop; ``on_done(self)`` is called when they finish."""
        self._on_done = on_done
        decode_loop(self.bundle).submit(self)

    # -- the decode loop's side (decoder.DecodeRun): begin, then step until no row is left; publish wakes run() --

    def begin(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows join the batch: reset per-row state; return the prefill's (ids, mask), prompts left-padded."""
        pad, width = self.bundle.tokenizer.pad_token_id, self.padded_length
        self._sequences = torch.tensor([[pad] * (width - r.prompt_length) + r.prompt_ids for r in self._rows])
        mask = torch.tensor([[0] * (width - r.prompt_length) + [1] * r.prompt_length for r in self._rows])
        # Every row's generator, seeded alike and drawn once a step: one stands for all (pipeline.sample)
        self._generator = None if self.settings.greedy else torch.Generator().manual_seed(int(self.settings.seed))
        self._started = time.perf_counter()
        self._step_index = 0
        decode = decoder_of(self.bundle.tokenizer)
        for row in self._rows:
            row.text = GrowingText(decode)
        return self._sequences, mask

    def step(self, raw: torch.Tensor, active: list[int]) -> tuple[torch.Tensor | None, list[int]]:
        """One step for the rows ``active`` (original indices, in batch order) given their next-token logits
        ``raw``: choose, record, advance. Returns the chosen tokens and the slots (positions in ``active``) of
        the rows that keep decoding."""
        stop = self._interrupted()
        if stop is not None:
            for i in active:
                variant = self.trace.variants[i]
                variant.stop_reason, variant.wall_seconds = stop, time.perf_counter() - self._started
            return None, []
        choice = self.choose(raw, active)  # processors → interventions → warpers → token
        records = self.telemetry(raw, choice)  # the numbers the trace shows
        column = torch.full((len(self._rows), 1), self.bundle.tokenizer.pad_token_id)
        column[active, 0] = choice.tokens
        self._sequences = sequences = torch.cat([self._sequences, column], dim=1)  # finished rows get a pad
        still = []
        for slot, (i, record) in enumerate(zip(active, records)):
            record.step = self._step_index
            if self._advance(i, record, sequences[i:i + 1], raw[slot:slot + 1]):
                still.append(slot)
        if self.part_of is None:  # a part's columns are compared with the first column of the whole
            self._mark_divergence(self._step_index)
        self._step_index += 1
        return choice.tokens, still

    def choose(self, raw: torch.Tensor, active: list[int]) -> pipeline.Choice:
        """The pipeline on the rows ``active`` at this step: :func:`pipeline.choose` with this comparison's
        processors, interventions, warpers and generator."""
        return pipeline.choose(raw, self._sequences.index_select(0, torch.tensor(active)),
                               [self._rows[i] for i in active], processors=self._processors, warpers=self._warpers,
                               generator=self._generator, padded_length=self.padded_length)

    def telemetry(self, raw: torch.Tensor, choice: pipeline.Choice) -> list[StepRecord]:
        """A StepRecord per row of ``choice`` (:func:`telemetry.step_records`), its step left at 0."""
        return telemetry.step_records(raw, choice.stages, choice.tokens, choice.sampled, eos=self._eos_index,
                                      k=self.settings.telemetry_top_k, texts=self.token_texts)

    def publish(self, *, done: bool = False, error: BaseException | None = None) -> None:
        """Wake the consumer: rows advanced, or (``done``) every row has left the batch, stopped by ``error`` if
        given."""
        if done:
            for variant in self.trace.variants:
                if variant.stop_reason is None:  # left without a reason of its own: the loop was told to stop
                    variant.stop_reason = StopReason.CANCELLED
                    variant.wall_seconds = time.perf_counter() - self._started if self._started else 0.0
        with self.progress:
            self._version += 1
            self._done, self._error = done, error
            self.progress.notify_all()
        if done and self._on_done is not None:
            self._on_done(self)

    def _interrupted(self) -> StopReason | None:
        """Why every row stops now from outside (cancelled, out of time), if it does."""
        if self._cancel.is_set():
            return StopReason.CANCELLED
        timeout = self.settings.timeout_seconds
        if timeout and time.perf_counter() - self._started > timeout:
            return StopReason.TIMEOUT
        return None

    def _advance(self, i: int, record: StepRecord, ids: torch.Tensor, scores: torch.Tensor) -> bool:
        """Record one step for row ``i``; return whether the row keeps decoding. The record joins the trace last:
        a reader on another thread never sees a step whose text is not final yet."""
        row, variant = self._rows[i], self.trace.variants[i]
        variant.token_ids.append(record.token_id)
        variant.wall_seconds = time.perf_counter() - self._started
        stop_strings = row.built.stop_strings
        if record.token_id in self.eos_ids:
            variant.stop_reason = StopReason.EOS
        else:
            # The step's text is what it added to the whole decoded text: decoding a token alone drops
            # SentencePiece's leading space, and an emoji or CJK character split over several byte tokens
            # decodes to U+FFFD until its last byte arrives, so that text waits for the completing token.
            record.token = row.text.add(record.token_id)
            fired = row.built.stop_reason(ids, scores)
            if fired:
                variant.stop_reason, variant.stop_detail = fired
            elif len(variant.token_ids) >= self.settings.max_new_tokens:
                variant.stop_reason = StopReason.MAX_NEW_TOKENS
        decoded = row.text.text
        if variant.stop_reason == StopReason.STOP_STRING and variant.stop_detail in decoded:
            variant.text = decoded[: decoded.rfind(variant.stop_detail)]
        elif variant.stop_reason is None:
            variant.text = _visible(decoded, stop_strings)
        else:
            variant.text = decoded
        variant.steps.append(record)
        return variant.stop_reason is None

    def _mark_divergence(self, step: int) -> None:
        """Rows advance in lockstep, so comparing this step's tokens finds the first difference."""
        base = self.trace.variants[0].token_ids
        for variant in self.trace.variants[1:]:
            ids = variant.token_ids
            if variant.diverges_at is None and step < min(len(ids), len(base)) and ids[step] != base[step]:
                variant.diverges_at = step


class _Locks:
    """Several locks held as one, taken in one order: a reader of a :class:`SplitComparison` holds every part's,
    so each part's columns stay at one step while it reads. No deadlock: a decode loop takes only its own part's."""

    def __init__(self, locks: Sequence[threading.Lock]):
        self._locks = list(locks)

    def __enter__(self) -> _Locks:
        for lock in self._locks:
            lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        for lock in reversed(self._locks):
            lock.release()


class SplitComparison(_FollowedRun):
    """One comparison whose columns run on more than one loaded model: the loaded model (``base`` and its
    adapters) and second checkpoints (:meth:`~playground.models.LoadedModel.add_checkpoint`).

    Each model's columns are a part: a :class:`Comparison` on that model, decoded by that model's own decode loop
    beside every other run on it. The parts decode at once, each at its own pace (every column's steps stay in
    order); a checkpoint's columns share no forward pass with the other models' columns, and say so
    (``model_note``, ``shared_forward``). :attr:`trace` holds every part's columns in the order given — the same
    objects, so it follows them as they decode — and this class answers what callers ask of a
    :class:`Comparison`: :meth:`run`, :meth:`submit`, :meth:`cancel`, :attr:`lock`, :attr:`done`, :attr:`error`,
    :attr:`progress`, :attr:`version`, :attr:`parts`. Its parts are built with ``part_of=self``: they notify its
    :attr:`progress`, and it finds where columns diverge once they have finished.
    A failure that stops one part cancels the others, and :meth:`run` raises it, as for a Comparison.
    """

    def __init__(self, bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                 *, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP, branches: Sequence = (),
                 appends_to: Trace | None = None):
        self.branches = _check_request(bundle, prompt, variants, settings, branches, max_new_tokens_cap)
        self.bundle, self.settings, self.appends_to = bundle, settings, appends_to
        self._cancel = threading.Event()
        self.progress = threading.Condition()  # notified by every part as its rows advance
        self._on_done, self._parts_done = None, 0
        columns: dict[str | None, list[int]] = {}  # checkpoint name (None: the loaded model) -> column indices
        for index, variant in enumerate(variants):
            model = _column_model(bundle, variant)
            columns.setdefault(model if model in bundle.checkpoints else None, []).append(index)
        self.parts: list[Comparison] = []
        placed: list[VariantTrace | None] = [None] * len(variants)
        for checkpoint, indices in columns.items():
            if checkpoint is None:
                part = Comparison(bundle, prompt, [variants[i] for i in indices], settings,
                                  max_new_tokens_cap=max_new_tokens_cap, part_of=self)
            else:  # on its own bundle a checkpoint is the base model; the trace names it
                part = Comparison(bundle.checkpoints[checkpoint], prompt,
                                  [dataclasses.replace(variants[i], model=BASE) for i in indices], settings,
                                  max_new_tokens_cap=max_new_tokens_cap, part_of=self)
                for column in part.trace.variants:
                    column.model, column.shared_forward = checkpoint, False
                    column.model_note = (f"{checkpoint} is a second checkpoint: its forward passes are not shared "
                                         "with the other models' columns")
            self.parts.append(part)
            for index, column in zip(indices, part.trace.variants):
                placed[index] = column
        self.padded_length = max(part.padded_length for part in self.parts)
        self.lock = _Locks([part.lock for part in self.parts])
        self.trace = Trace(model=bundle.info.name, prompt=prompt, settings=settings.to_dict(), variants=placed)

    def cancel(self) -> None:
        self._cancel.set()
        for part in self.parts:
            part.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return all(part.done for part in self.parts)

    @property
    def error(self) -> BaseException | None:
        """What stopped the first part that a failure stopped (the others were cancelled)."""
        return next((part.error for part in self.parts if part.error is not None), None)

    @property
    def version(self) -> int:
        """Changes whenever a part's rows advance."""
        return sum(part.version for part in self.parts)

    def submit(self, on_done=None) -> None:
        """Hand every part to its model's decode loop; ``on_done(self)`` is called when all have finished."""
        self._on_done = on_done
        for part in self.parts:
            part.submit(on_done=self._part_done)

    def _part_done(self, part: Comparison) -> None:
        if part.error is not None:  # a part stopped by its decode loop ends the whole run
            self.cancel()
        with self.progress:
            self._parts_done += 1
            last = self._parts_done == len(self.parts)
        if last:
            self._mark_divergence()
            if self._on_done is not None:
                self._on_done(self)

    def _mark_divergence(self) -> None:
        """Each column's first step whose token differs from the first column's. The parts decode at their own
        pace, so whole token lists are compared (as :meth:`Trace.with_branches` does), not one step at a time."""
        with self.lock:
            base = self.trace.variants[0].token_ids
            for variant in self.trace.variants[1:]:
                variant.diverges_at = first_difference(variant.token_ids, base)

    def _settle(self) -> None:
        self._mark_divergence()


def comparison_for(bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                   **kwargs) -> Comparison | SplitComparison:
    """The comparison of ``variants``: a :class:`Comparison` when every column runs on ``bundle``'s model (the
    base or an adapter), else a :class:`SplitComparison` with a part per model. ``kwargs``: Comparison's."""
    if any(_column_model(bundle, variant) in bundle.checkpoints for variant in variants):
        return SplitComparison(bundle, prompt, variants, settings, **kwargs)
    return Comparison(bundle, prompt, variants, settings, **kwargs)


def run_all(comparisons: Sequence[Comparison | SplitComparison], *, max_rows: int = 32,
            heartbeat: float | None = None) -> Iterator[Comparison | None]:
    """Decode many comparisons, at most ``max_rows`` rows at once (more join as rows finish), sharing forward
    passes; yield each comparison as it finishes, in finishing order. Closing the iterator cancels the rest.
    With ``heartbeat`` (seconds), also yield None whenever that long passes without one finishing, so a caller
    can show progress while long rows decode.

        >>> for done in run_all([Comparison(bundle, p, variants, settings) for p in prompts]):  # doctest: +SKIP
        ...     print(done.trace.prompt, [v.stop_reason for v in done.trace.variants])
    """
    release_thread_team()  # this thread only waits from now on: its OpenMP threads would slow the loop's
    waiting = collections.deque(comparisons)  # Comparison or SplitComparison, one row per column
    finished: queue.SimpleQueue[Comparison] = queue.SimpleQueue()
    running: set[Comparison] = set()
    rows = 0
    try:
        while waiting or running:
            # A comparison wider than max_rows still runs, alone.
            while waiting and (not running or rows + len(waiting[0].trace.variants) <= max_rows):
                comparison = waiting.popleft()
                running.add(comparison)
                rows += len(comparison.trace.variants)
                comparison.submit(on_done=finished.put)
            try:
                comparison = finished.get(timeout=heartbeat)
            except queue.Empty:
                yield None
                continue
            running.discard(comparison)
            rows -= len(comparison.trace.variants)
            if comparison.error is not None:
                raise comparison.error
            yield comparison
    finally:
        for comparison in running:
            comparison.cancel()


def compare(bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings | None = None,
            **kwargs) -> Trace:
    """Run a comparison to the end and return its trace."""
    comparison = comparison_for(bundle, prompt, variants, settings or Settings(), **kwargs)
    for trace in comparison.run():
        pass
    return trace
