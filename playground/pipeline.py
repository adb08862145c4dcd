"""One decode step's choice, as ``generate()`` makes it: processors → interventions → warpers → the token.

Pure functions of the step's logits and the rows' ids: no threads, no state but the sampling generator they are
given. :mod:`playground.engine` runs them for every row of a comparison at once; :mod:`playground.telemetry`
turns the stages they return into the numbers a trace shows.

    raw logits ─► generation config's processors (repetition penalty, no-repeat n-grams, ...) ─► row's interventions
               ─► temperature ─► top-k ─► top-p ─► min-p ─► typical-p ─► sample (or argmax if T = 0)

Each stage is a :class:`StageLogits`: its name, the logits after it (the previous stage's own tensor when it
changed nothing, which tells the telemetry so) and its note, the line the stage table says about it.

    >>> from transformers import TemperatureLogitsWarper
    >>> raw = torch.tensor([[2.0, 1.0, 0.0]])
    >>> stages = apply_warpers([("temperature", TemperatureLogitsWarper(0.5), None)], raw)
    >>> [(stage.name, stage.logits.tolist()) for stage in stages]
    [('temperature', [[4.0, 2.0, 0.0]])]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor,
                          RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                          TypicalLogitsWarper)

from .compat import config_logits_processors
from .samplers import PartialTopPLogitsWarper

# Sampling stages that only rescale or cut the tail: the tokens they keep stay in the order they were in.
ORDER_KEEPING_STAGES = frozenset({"temperature", "top_k", "top_p", "min_p"})
SAMPLING_STAGES = ORDER_KEEPING_STAGES | {"typical_p"}  # their notes say what they kept, not how many logits changed


@dataclass
class StageFacts:
    """What one stage did to one row at one step: the facts its note is written from."""

    slot: int  # the row's place in the batch
    kept: int  # tokens with non-zero probability after the stage
    kept_before: int
    changed: int | None  # logits the stage changed; not counted for the sampling stages (no note of theirs reads it)
    p_eos_before: float
    p_eos: float


Note = Callable[[StageFacts], str]


class StageLogits(NamedTuple):
    """A stage of the pipeline at one step: its name, every row's logits after it, and its note."""

    name: str
    logits: torch.Tensor
    note: Note


class StageProcessor(NamedTuple):
    """A stage as the pipeline runs it: its name, the transformers processor or warper, and its note."""

    name: str
    processor: LogitsProcessor
    note: Note


class PipelineRow(Protocol):
    """What the pipeline reads of a row (a column of a comparison)."""

    prompt_length: int  # its own prompt's tokens, without the batch's left padding
    interventions: list  # playground.interventions.Intervention, for the note
    interventions_key: str  # equal for rows whose interventions are equal: they run as one batch
    logits_processors: LogitsProcessorList  # the interventions' processors, in order
    forced_token_ids: Sequence[int]  # a branch's tokens up to its fork


@dataclass
class Choice:
    """One step's outcome for every row: the tokens, the stages after the raw logits, the distribution the
    tokens were sampled from (None when greedy)."""

    tokens: torch.Tensor
    stages: list[StageLogits]
    sampled: torch.Tensor | None


def count(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless n is 1.

    >>> count(1, "token"), count(3, "token")
    ('1 token', '3 tokens')
    """
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def generation_config_processors(model, prompt_length: int, max_new_tokens: int, *, repetition_penalty: float = 1.0,
                                 no_repeat_ngram_size: int = 0) -> LogitsProcessorList:
    """The processors ``generate()`` adds on its own from the model's generation config: repetition penalty,
    suppressed or banned tokens, a minimum length, no-repeat n-grams... so a baseline column decodes the way the
    user's own ``generate()`` call does. A repetition penalty or n-gram size given here (1 and 0 = not given)
    overrides the config's, as the same ``generate()`` argument would, and transformers puts it in its own
    place in the list. Sampling (temperature, top-k, top-p, min-p, typical-p) stays the playground's, as in an
    explicit ``generate(temperature=..., top_k=..., ...)``. Built with transformers' own (private) helpers,
    the same ones ``generate()`` calls (:func:`~playground.compat.config_logits_processors`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.generation_config)
    config.update(do_sample=False, max_new_tokens=max_new_tokens)
    if repetition_penalty != 1:
        config.repetition_penalty = float(repetition_penalty)
    if no_repeat_ngram_size:
        config.no_repeat_ngram_size = int(no_repeat_ngram_size)
    config.max_length = prompt_length + max_new_tokens
    return config_logits_processors(base, config, prompt_length)


def processor_stage(processor: LogitsProcessor) -> StageProcessor:
    """A generation-config processor as a stage, with the line saying what it did at a step.

    >>> from transformers import RepetitionPenaltyLogitsProcessor
    >>> stage = processor_stage(RepetitionPenaltyLogitsProcessor(1.3))
    >>> stage.name, stage.note(StageFacts(slot=0, kept=5, kept_before=5, changed=2, p_eos_before=0, p_eos=0))
    ('repetition_penalty', 'repetition penalty 1.3 lowered 2 tokens already in the text')
    """
    if isinstance(processor, RepetitionPenaltyLogitsProcessor):
        penalty = processor.penalty
        way = "lowered" if penalty > 1 else "raised"
        return StageProcessor("repetition_penalty", processor,
                     lambda s: f"repetition penalty {penalty:g} {way} {count(s.changed, 'token')} already in the text")
    if isinstance(processor, NoRepeatNGramLogitsProcessor):
        n = processor.ngram_size
        return StageProcessor("no_repeat_ngram", processor, lambda s: (
            f"no-repeat {n}-grams banned {count(s.changed, 'token')} that would repeat a {n}-gram" if s.changed
            else f"no-repeat {n}-grams: no token would repeat a {n}-gram here"))
    kind = type(processor).__name__
    return StageProcessor(f"generation config: {kind}", processor,
                 lambda s: f"the model's generation config ({kind}) changed {count(s.changed, 'logit')}")


def sampling_warpers(settings) -> list[StageProcessor]:
    """The sampling stages of ``settings`` (an :class:`~playground.engine.Settings`), in the order ``generate()``
    applies them (its ``_get_logits_processor``: temperature, top-k, top-p, min-p, typical-p; top-p by
    :class:`~playground.samplers.PartialTopPLogitsWarper`, same result); none when greedy, as
    ``generate(do_sample=False)`` skips them all."""
    if settings.greedy:
        return []
    t = float(settings.temperature)
    shape = "sharpened" if t < 1 else "flattened" if t > 1 else "left as is"
    warpers = [StageProcessor("temperature", TemperatureLogitsWarper(t),
                     lambda s: f"temperature {t:g} {shape} the distribution (logits ÷ {t:g})")]
    if settings.top_k:
        k = int(settings.top_k)
        warpers.append(StageProcessor("top_k", TopKLogitsWarper(k),
                                      lambda s: f"top-k {k} kept {s.kept} of {s.kept_before} tokens"))
    if settings.top_p < 1:
        p = float(settings.top_p)
        warpers.append(StageProcessor("top_p", PartialTopPLogitsWarper(p),
                             lambda s: f"top-p {p:g} kept {s.kept} of {s.kept_before} tokens, "
                                       f"the most likely ones adding up to {p:g}"))
    if settings.min_p > 0:
        min_p = float(settings.min_p)
        warpers.append(StageProcessor("min_p", MinPLogitsWarper(min_p),
                             lambda s: f"min-p {min_p:g} kept {s.kept} of {s.kept_before} tokens, those at least "
                                       f"{min_p:g} × the top token's probability"))
    if settings.typical_p < 1:
        mass = float(settings.typical_p)
        warpers.append(StageProcessor("typical_p", TypicalLogitsWarper(mass),
                             lambda s: f"typical-p {mass:g} kept {s.kept} of {s.kept_before} tokens, those whose "
                                       f"surprise is closest to the average, adding up to {mass:g}"))
    return warpers


def interventions_note(interventions: list, s: StageFacts) -> str:
    """The interventions stage's line for a row with ``interventions``."""
    if not interventions:
        return "no interventions in this column"
    names = ", ".join(i.name for i in interventions)
    if not s.changed:
        return f"{names}: no logit changed at this step"
    eos = f"; p(EOS) {s.p_eos_before:.3g} → {s.p_eos:.3g}" if s.p_eos != s.p_eos_before else ""
    return f"{names} changed {count(s.changed, 'logit')}{eos}"


def groups(keys: list) -> list[list[int]]:
    """Positions grouped by equal key, in first-seen order.

    >>> groups(["a", "b", "a"])
    [[0, 2], [1]]
    """
    grouped: dict = {}
    for position, key in enumerate(keys):
        grouped.setdefault(key, []).append(position)
    return list(grouped.values())


def by_groups(logits: torch.Tensor, grouped: list[list[int]],
              apply: Callable[[list[int], torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``apply(slots, logits of those rows)`` for each group of rows, put back in row order. The rows are taken
    with ``index_select`` and put back with one ``cat`` and one ``index_select`` (row copies), not with Python-list
    indexing, which copies element by element (20× slower at 32k logits).

    >>> x = torch.arange(6.0).view(3, 2)
    >>> by_groups(x, [[0, 2], [1]], lambda slots, rows: rows * (10 if slots == [0, 2] else -1)).tolist()
    [[0.0, 10.0], [-2.0, -3.0], [40.0, 50.0]]
    """
    if len(grouped) == 1:
        return apply(grouped[0], logits if grouped[0] == list(range(len(logits))) else logits.index_select(
            0, torch.tensor(grouped[0])))
    order = [slot for slots in grouped for slot in slots]
    parts = torch.cat([apply(slots, logits.index_select(0, torch.tensor(slots))) for slots in grouped])
    if order == sorted(order):
        return parts
    place = torch.empty(len(order), dtype=torch.long)
    place[torch.tensor(order)] = torch.arange(len(order))
    return parts.index_select(0, place)


def apply_processors(processors: Sequence[StageProcessor], logits: torch.Tensor, ids: torch.Tensor,
                     rows: Sequence[PipelineRow], padded_length: int) -> list[StageLogits]:
    """The generation config's processors, each a stage. ``ids``: every row's ids so far, its prompt left-padded
    to ``padded_length``; each row is given its own ids without that padding (the pad token may be EOS, and a
    column is penalised for what its own ``generate()`` call would see), one call per prompt length (own ids
    must stack)."""
    stages = []
    lengths = [row.prompt_length for row in rows]
    grouped = groups(lengths)
    for name, processor, note in processors:
        previous = logits  # processors may write into their input: each group gets a copy of its rows
        logits = by_groups(previous, grouped, lambda slots, scores: processor(
            ids.index_select(0, torch.tensor(slots))[:, padded_length - lengths[slots[0]]:],
            scores.clone() if scores is previous else scores))
        stages.append(StageLogits(name, logits, note))
    return stages


def apply_interventions(logits: torch.Tensor, ids: torch.Tensor, rows: Sequence[PipelineRow]) -> StageLogits:
    """Each row's interventions, the rows with equal ones as one batch (built alike: same settings, same padded
    length); the processors see the padded ids, as their ``generate()`` call does. Without any, the stage's
    logits are ``logits`` itself, which tells the telemetry it changed nothing."""
    note = lambda s: interventions_note(rows[s.slot].interventions, s)  # noqa: E731 (one line, read per row)
    if not any(row.logits_processors for row in rows):
        return StageLogits("interventions", logits, note)

    def run(slots: list[int], scores: torch.Tensor) -> torch.Tensor:
        processors = rows[slots[0]].logits_processors
        if processors and scores is logits:
            scores = scores.clone()  # some interventions (the seed article's) write into their input
        group_ids = ids.index_select(0, torch.tensor(slots))
        for processor in processors:  # as LogitsProcessorList does, without inspecting each one's signature
            scores = processor(group_ids, scores)
        return scores

    return StageLogits("interventions", by_groups(logits, groups([row.interventions_key for row in rows]), run), note)


def apply_warpers(warpers: Sequence[StageProcessor], logits: torch.Tensor) -> list[StageLogits]:
    """The sampling warpers in order, each a stage (a transformers warper does not read the ids)."""
    stages = []
    for name, warper, note in warpers:
        logits = warper(None, logits)
        stages.append(StageLogits(name, logits, note))
    return stages


def first_argmax(values: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """``values.argmax(-1)`` (the first largest entry of each row; a NaN counts as the largest), ~5× faster over
    a vocabulary: torch's argmax does not vectorise on CPU (~170 µs for 8 × 32k entries) where ``amax`` does
    (~14 µs). The chunk maxima say which chunk holds the row's first largest entry; argmax runs inside that chunk.

    >>> values = torch.randn(4, 5000, generator=torch.Generator().manual_seed(0))
    >>> values[1, [300, 301, 4999]] = 9.0  # ties: the first one
    >>> values[2] = float("-inf")
    >>> values[3, 17] = float("nan")
    >>> torch.equal(first_argmax(values), values.argmax(-1)), first_argmax(values).tolist()[1:]
    (True, [300, 0, 17])
    """
    rows, size = values.shape
    whole = size // chunk * chunk
    if whole // chunk < 4:
        return values.argmax(-1)
    maxima = values[:, :whole].reshape(rows, whole // chunk, chunk).amax(-1)
    if whole < size:  # the shorter last chunk
        maxima = torch.cat([maxima, values[:, whole:].amax(-1, keepdim=True)], -1)
    first = maxima.argmax(-1, keepdim=True)  # the first chunk holding the row's largest entry
    places = first * chunk + torch.arange(chunk)
    places = places.clamp_(max=size - 1)  # the shorter last chunk: its places past the end repeat its last entry
    return places.gather(-1, values.gather(-1, places).argmax(-1, keepdim=True)).squeeze(-1)


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Every row's draw from ``probs``, as ``torch.multinomial(p, 1, generator=g)`` draws it for each row with its
    own generator — when those generators are all in ``generator``'s state. multinomial is ``argmax(p / q)``, q an
    exponential variate per vocabulary entry drawn from g; rows seeded alike that draw in step would draw the same
    q, so one draw serves every row (64 rows: 42 → 7 ms).

    >>> probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    >>> ours = sample(probs, torch.Generator().manual_seed(3))
    >>> theirs = [torch.multinomial(p, 1, generator=torch.Generator().manual_seed(3)).item() for p in probs]
    >>> ours.tolist() == theirs
    True
    """
    noise = torch.empty(probs.shape[-1]).exponential_(generator=generator)
    return first_argmax(probs / noise)


def choose(raw: torch.Tensor, ids: torch.Tensor, rows: Sequence[PipelineRow], *, processors: Sequence[StageProcessor],
           warpers: Sequence[StageProcessor], generator: torch.Generator | None, padded_length: int) -> Choice:
    """One step of the rows ``rows`` from their next-token logits ``raw`` and their ids so far ``ids`` (prompts
    left-padded to ``padded_length``):
    the generation config's processors, each row's interventions, the sampling warpers (none when greedy, then
    ``generator`` is None), then the token — argmax, or one draw from the final distribution — or, at a branch's
    forced step, its forced token (a sampled row still draws, so a branch's generator stays in step with its
    parent's)."""
    stages = apply_processors(processors, raw, ids, rows, padded_length)
    stages.append(apply_interventions(stages[-1].logits if stages else raw, ids, rows))
    sampled = None
    if generator is None:
        tokens = first_argmax(stages[-1].logits)
    else:
        stages += apply_warpers(warpers, stages[-1].logits)
        sampled = torch.softmax(stages[-1].logits, dim=-1)
        tokens = sample(sampled, generator)
    step = ids.shape[-1] - padded_length
    for slot, row in enumerate(rows):
        if step < len(row.forced_token_ids):
            tokens[slot] = row.forced_token_ids[step]
    return Choice(tokens, stages, sampled)
