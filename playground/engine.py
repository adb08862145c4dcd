"""Decode several variants of one prompt side by side and record, step by step, why each stops.

All variants share one batch — with every other comparison running on the model (``decoder.DecodeLoop``):
one forward pass per step for every row that is still running, a KV cache, left padding where prompts differ
(e.g. a concise-answer suffix). Rows finish independently and are dropped from the batch (and its cache) as
they do. Every row samples as if with its own generator seeded identically (one draw a step serves them all),
so a difference between columns comes only from the interventions.

At each step, per row::

    raw logits ─► generation config's processors (repetition penalty, no-repeat n-grams, ...) ─► row's interventions
               ─► temperature ─► top-k ─► top-p ─► min-p ─► typical-p ─► sample (or argmax if T = 0)

which is the order ``generate()`` applies them in, and the trace records the chosen token, p(EOS) before and
after, the top-k both ways, entropy, and after each stage its distribution and a line saying what it did. A
branch column forces its first tokens (see :class:`Variant`).

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
import copy
import dataclasses
import functools
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor,
                          RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                          TypicalLogitsWarper)

from .compat import config_logits_processors
from .interventions import Intervention, build_interventions, parse_interventions
from .models import BASE, LoadedModel
from .openmp import release_thread_team
from .prompts import encode_prompt
from .request import SETTINGS, check_number, check_setting, check_whole
from .samplers import PartialTopPLogitsWarper
from .trace import LazyStages, Stage, StepRecord, StopReason, TopToken, Trace, VariantTrace, first_difference

MAX_NEW_TOKENS_CAP = 2048
# Sampling stages that only rescale or cut the tail: the tokens they keep stay in the order they were in.
ORDER_KEEPING_STAGES = frozenset({"temperature", "top_k", "top_p", "min_p"})
SAMPLING_STAGES = ORDER_KEEPING_STAGES | {"typical_p"}  # their notes say what they kept, not how many logits changed
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
                                     steps_reason=f" (column {column} {parent.name!r} has {_count(len(parent.steps), 'step')})")
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


def _finite(value: float) -> float | None:
    """A margin for JSON: None where EOS is banned (an infinite or undefined distance)."""
    return value if math.isfinite(value) else None


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


@dataclass
class _StageStep:
    """What one stage did to one row at one step: the facts its note is written from."""

    slot: int  # the row's place in the batch
    kept: int  # tokens with non-zero probability after the stage
    kept_before: int
    changed: int | None  # logits the stage changed; not counted for the sampling stages (no note of theirs reads it)
    p_eos_before: float
    p_eos: float


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _processor_stage(processor: LogitsProcessor) -> tuple[str, LogitsProcessor, Callable[[_StageStep], str]]:
    """A generation-config processor as a stage: (name, processor, the line saying what it did at a step)."""
    if isinstance(processor, RepetitionPenaltyLogitsProcessor):
        penalty = processor.penalty
        way = "lowered" if penalty > 1 else "raised"
        return "repetition_penalty", processor, lambda s: (f"repetition penalty {penalty:g} {way} "
                                                           f"{_count(s.changed, 'token')} already in the text")
    if isinstance(processor, NoRepeatNGramLogitsProcessor):
        n = processor.ngram_size
        return "no_repeat_ngram", processor, lambda s: (
            f"no-repeat {n}-grams banned {_count(s.changed, 'token')} that would repeat a {n}-gram" if s.changed
            else f"no-repeat {n}-grams: no token would repeat a {n}-gram here")
    kind = type(processor).__name__
    return f"generation config: {kind}", processor, lambda s: (f"the model's generation config ({kind}) changed "
                                                               f"{_count(s.changed, 'logit')}")


def sampling_warpers(settings: Settings) -> list[tuple[str, LogitsProcessor, Callable[[_StageStep], str]]]:
    """The sampling stages as (name, transformers warper, note), in the order ``generate()`` applies them
    (its ``_get_logits_processor``: temperature, top-k, top-p, min-p, typical-p; top-p by
    :class:`~playground.samplers.PartialTopPLogitsWarper`, same result); none when greedy, as
    ``generate(do_sample=False)`` skips them all."""
    if settings.greedy:
        return []
    t = float(settings.temperature)
    shape = "sharpened" if t < 1 else "flattened" if t > 1 else "left as is"
    warpers = [("temperature", TemperatureLogitsWarper(t), lambda s: f"temperature {t:g} {shape} the distribution (logits ÷ {t:g})")]
    if settings.top_k:
        k = int(settings.top_k)
        warpers.append(("top_k", TopKLogitsWarper(k), lambda s: f"top-k {k} kept {s.kept} of {s.kept_before} tokens"))
    if settings.top_p < 1:
        p = float(settings.top_p)
        warpers.append(("top_p", PartialTopPLogitsWarper(p), lambda s: f"top-p {p:g} kept {s.kept} of {s.kept_before} tokens, "
                                                              f"the most likely ones adding up to {p:g}"))
    if settings.min_p > 0:
        min_p = float(settings.min_p)
        warpers.append(("min_p", MinPLogitsWarper(min_p), lambda s: f"min-p {min_p:g} kept {s.kept} of {s.kept_before} "
                                                                    f"tokens, those at least {min_p:g} × the top token's probability"))
    if settings.typical_p < 1:
        mass = float(settings.typical_p)
        warpers.append(("typical_p", TypicalLogitsWarper(mass), lambda s: f"typical-p {mass:g} kept {s.kept} of {s.kept_before} "
                                                                          f"tokens, those whose surprise is closest to the average, adding up to {mass:g}"))
    return warpers


def _interventions_note(interventions: list[Intervention], s: _StageStep) -> str:
    if not interventions:
        return "no interventions in this column"
    names = ", ".join(i.name for i in interventions)
    if not s.changed:
        return f"{names}: no logit changed at this step"
    eos = f"; p(EOS) {s.p_eos_before:.3g} → {s.p_eos:.3g}" if s.p_eos != s.p_eos_before else ""
    return f"{names} changed {_count(s.changed, 'logit')}{eos}"


def _stage_table(texts: _TokenTexts, names: list[str], notes: list[Callable[[_StageStep], str]], layout: dict,
                 values: list[float], slot: int) -> list[Stage]:
    """One row's stage table at one step, from the numbers :meth:`Comparison._telemetry` kept for it (``values``,
    each key's place in it in ``layout``). It holds no reference to the comparison, so a trace kept after its run
    does not keep the model alive."""
    table = []
    for index, (name, note) in enumerate(zip(names, notes)):
        before = max(index - 1, 0)
        kept, kept_before = int(values[layout[index, "kept"].start]), int(values[layout[before, "kept"].start])
        p_eos, p_eos_before = values[layout[index, "p_eos"].start], values[layout[before, "p_eos"].start]
        changed = layout.get((index, "changed"))
        facts = _StageStep(slot=slot, kept=kept, kept_before=kept_before, p_eos_before=p_eos_before, p_eos=p_eos,
                           changed=None if changed is None else int(values[changed.start]))
        top = [(int(t), texts[int(t)], p) for t, p in zip(values[layout[index, "top_ids"]],
                                                         values[layout[index, "top_p"]])]
        table.append(Stage(name, p_eos, kept, top, note(facts)))
    return table


class _TokenTexts(dict):
    """Token id → its text, each decoded once."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def __missing__(self, token_id: int) -> str:
        text = self[token_id] = self.tokenizer.decode([token_id])
        return text


def _entropy(logits: torch.Tensor, probs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """Each row's entropy in nats, −Σ p·log p, from its logits, their softmax ``probs`` and its top ids (the first
    is the argmax): with m the largest logit, log p = (x − m) + log p_max, so H = −log p_max − Σ p·(x − m). One
    pass over the vocabulary where ``log_softmax`` takes two (it sums the exponentials again). A removed token
    (x = −inf, p = 0) adds 0.

    >>> logits = torch.tensor([[0.0, 0.0, float("-inf")], [2.0, 0.0, -1.0]])
    >>> probs = torch.softmax(logits, -1)
    >>> [round(h, 4) for h in _entropy(logits, probs, probs.argsort(-1, descending=True)).tolist()]
    [0.6931, 0.5243]
    """
    best = top_ids[:, :1]
    spread = (logits - logits.gather(-1, best)).clamp_(min=-1e4)  # −inf → a finite value that p = 0 cancels
    return -probs.gather(-1, best).log().squeeze(-1) - spread.mul_(probs).sum(-1)


def _changed(logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """How many logits per row differ from ``previous`` (as float counts). ``(a != b).sum()`` turns a boolean
    vocabulary into 64-bit integers first (2× slower); here a difference of two −inf (or two +inf) is NaN, which
    nansum skips: equal infinities count as unchanged, as they do with ``!=``.

    >>> inf = float("inf")
    >>> _changed(torch.tensor([[0.0, -inf, inf, 1.0, -inf]]), torch.tensor([[0.0, -inf, inf, 2.0, 3.0]])).tolist()
    [2.0]
    """
    return torch.nansum((logits - previous).abs_().sign_(), -1)


def _top_k(probs: torch.Tensor, k: int, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(probs, k)`` per row, reading the vocabulary once instead of partially sorting it: the k largest
    values lie in the k chunks (of ``chunk`` entries) with the largest maxima, so only those k·chunk entries are
    searched (4× faster at 32k entries). Where chunk maxima tie at the k-th place (many zero probabilities after a
    truncation), or the vocabulary is small, it is torch.topk itself.

    >>> probs = torch.softmax(torch.randn(3, 5000, generator=torch.Generator().manual_seed(0)), -1)
    >>> [torch.equal(a, b) for a, b in zip(_top_k(probs, 10), torch.topk(probs, 10))]
    [True, True]
    """
    rows, size = probs.shape
    whole = size // chunk * chunk
    if whole // chunk <= k:
        return torch.topk(probs, k, dim=-1)
    maxima = probs[:, :whole].reshape(rows, whole // chunk, chunk).amax(-1)
    searched = maxima >= torch.topk(maxima, k, dim=-1).values[:, -1:]
    if int(searched.sum()) != rows * k:  # a tie at the k-th place (or a NaN): which k is torch.topk's business
        return torch.topk(probs, k, dim=-1)
    chunks = searched.nonzero()[:, 1].view(rows, k)  # in vocabulary order, as torch.topk reads
    candidates = (chunks[:, :, None] * chunk + torch.arange(chunk)).view(rows, k * chunk)
    if whole < size:  # the last, shorter chunk: always searched
        candidates = torch.cat([candidates, torch.arange(whole, size).expand(rows, -1)], dim=-1)
    values, places = torch.topk(probs.gather(-1, candidates), k, dim=-1)
    return values, candidates.gather(-1, places)


def _stage_top(probs: torch.Tensor, kept: torch.Tensor, before: torch.Tensor, before_top_p: torch.Tensor,
               before_top_ids: torch.Tensor, *, keeps_order: bool,
               changed_only: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top k a stage after the first shows: its tokens by probability; where it kept fewer than k (a truncation
    after a low temperature), the tokens it removed follow, as the previous stage (probabilities ``before``) ranked
    them, ties by id — so the table shows what the stage cut. Two kinds of stage need no pass over the vocabulary:
    one that keeps the order of what it keeps (temperature, top-k, top-p, min-p) shows the previous stage's top ids
    while they hold every token it kept; one that changed only the ids ``changed_only`` (interventions on EOS),
    none of them among the previous top ids, shows the best of those top ids and the changed ones — every other
    logit is as it was, so their order is too.

    >>> before = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    >>> after = torch.tensor([[0.625, 0.375, 0.0, 0.0]])  # top-p 0.8 kept two tokens
    >>> _stage_top(after, torch.tensor([2.0]), before, *torch.topk(before, 3), keeps_order=True)[1].tolist()
    [[0, 1, 2]]
    >>> boosted = torch.softmax(before.log().index_add(-1, torch.tensor([3]), torch.tensor([[3.0]])), -1)  # token 3
    >>> _stage_top(boosted, torch.tensor([4.0]), before, *torch.topk(before, 2), keeps_order=False,
    ...            changed_only=torch.tensor([3]))[1].tolist()
    [[3, 0]]
    """
    k = before_top_ids.shape[-1]
    if changed_only is not None and not bool(torch.isin(before_top_ids, changed_only).any()):
        # vocabulary order, as torch.topk reads, so ties fall as they would over the whole vocabulary
        candidates = torch.cat([before_top_ids, changed_only.expand(len(probs), -1)], -1).sort(-1).values
        top_p, places = torch.topk(probs.gather(-1, candidates), k, dim=-1)
        if bool((top_p > 0).all()):
            return top_p, candidates.gather(-1, places)
    if keeps_order and bool((before_top_p > 0).all()):
        top_p = probs.gather(-1, before_top_ids)
        shown = (top_p > 0).sum(-1)
        if bool(((shown == k) | (shown == kept)).all()):  # all of them kept, or every token it kept among them
            order = torch.sort(top_p, dim=-1, descending=True, stable=True).indices  # removed ones last, in order
            return top_p.gather(-1, order), before_top_ids.gather(-1, order)
    top_p, top_ids = _top_k(probs, k)
    if bool((top_p > 0).all()):
        return top_p, top_ids
    by_before = torch.sort(before, dim=-1, descending=True, stable=True).indices
    top_ids = by_before.gather(-1, torch.sort(probs.gather(-1, by_before), dim=-1, descending=True,
                                              stable=True).indices[:, :k])
    return probs.gather(-1, top_ids), top_ids


def _top_of_larger(p_a: torch.Tensor, top_a: torch.Tensor, p_b: torch.Tensor, top_b: torch.Tensor) -> torch.Tensor:
    """The top-k ids of max(p_a, p_b) per row, from each one's top-k ids ``top_a`` and ``top_b``: a token in the
    top k of the larger is in the top k of one of them, so only those 2k candidates are compared, not the
    vocabulary."""
    k = top_a.shape[-1]
    candidates = torch.cat([top_a, top_b], dim=-1)
    larger = torch.maximum(p_a.gather(-1, candidates), p_b.gather(-1, candidates))
    repeated = (top_b[:, :, None] == top_a[:, None, :]).any(-1)  # a token among both top-k counts once
    larger[:, k:] = larger[:, k:].masked_fill(repeated, -1.0)
    return candidates.gather(-1, torch.topk(larger, k, dim=-1).indices)


def _groups(keys: list) -> list[list[int]]:
    """Positions grouped by equal key, in first-seen order.

    >>> _groups(["a", "b", "a"])
    [[0, 2], [1]]
    """
    groups: dict = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return list(groups.values())


class _Row:
    """Decoding state of one variant that the trace does not need to carry."""

    def __init__(self, variant: Variant, interventions: list[Intervention], prompt_ids: list[int], model: str):
        self.variant = variant
        self.model = model  # "base" or a loaded adapter's name
        self.interventions = interventions
        self.interventions_key = json.dumps([i.to_dict() for i in interventions], sort_keys=True)
        self.prompt_ids = prompt_ids
        self.built = None  # BuiltInterventions, once the padded prompt length is known
        self.decoded = ""  # decode() of the generated ids so far, EOS excluded
        self.attributed = 0  # characters of `decoded` already shown as some step's token text


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
    """What a reader of a :class:`Comparison` or a :class:`SplitComparison` does the same way: :meth:`run`."""

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
                with self._progress:
                    self._progress.wait_for(lambda: self._version != seen)
                    seen = self._version
                if self.done:
                    break
                self._settle()
                yield self.trace
        finally:
            if not self.done:  # closed early (a UI Stop, a closed page): cancel and wait for the loops to let go
                self.cancel()
                with self._progress:
                    self._progress.wait_for(lambda: self.done)
        if self._error is not None:
            raise self._error
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
        self._part_of = part_of
        self._progress = part_of._progress if part_of is not None else threading.Condition()
        self._version, self._done, self._error = 0, False, None
        self._on_done = None
        self._started = 0.0
        self._generator: torch.Generator | None = None  # seeded in _begin
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
        self._processors = [_processor_stage(p) for p in generation_config_processors(
            bundle.model, longest, settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size)]
        self._warpers = sampling_warpers(settings)
        self._token_text = _TokenTexts(bundle.tokenizer)
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

    # -- one step's telemetry -------------------------------------------------------------------------

    def _token(self, token_id: int) -> str:
        return self._token_text[token_id]

    def _stage_numbers(self, logits_by_stage: list[torch.Tensor], names: list[str],
                       sampled: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[dict]]:
        """Per stage (raw first), for every row at once: its probabilities (the last stage's are ``sampled``, the
        distribution the rows were sampled from, when given) and the numbers its row in the stage table shows
        (p(EOS), tokens kept, top-k, logits changed). A stage that changed nothing (greedy decoding
        without interventions, an intervention not active yet) reuses the previous stage's numbers: its softmax
        and top-k are the same tensors; :func:`_stage_top` says which tokens a stage's top-k shows. The logits a
        stage changed are counted only where its note reads them (processors, interventions)."""
        probs, numbers = [], []
        unchanged = torch.zeros(logits_by_stage[0].shape[0], dtype=torch.long)
        eos = self._eos_index
        for index, (logits, name) in enumerate(zip(logits_by_stage, names)):
            previous = logits_by_stage[index - 1] if index else None
            changed = unchanged
            if previous is not None and (logits is previous or torch.equal(logits, previous)):
                p, shown = probs[-1], {key: numbers[-1][key] for key in ("p_eos", "kept", "top_ids", "top_p")}
            else:
                last = index == len(logits_by_stage) - 1
                p = sampled if last and sampled is not None else torch.softmax(logits, dim=-1)
                kept, only_eos = p.sign().sum(-1), None
                if name not in SAMPLING_STAGES and previous is not None:
                    changed = _changed(logits, previous)
                    if bool((changed == _changed(logits.index_select(-1, eos), previous.index_select(-1, eos))).all()):
                        only_eos = eos  # the stage changed EOS logits alone (ban_eos, eos_reward, ...)
                if previous is None:
                    top_p, top_ids = _top_k(p, self.settings.telemetry_top_k)
                else:
                    top_p, top_ids = _stage_top(p, kept, probs[-1], numbers[-1]["top_p"], numbers[-1]["top_ids"],
                                                keeps_order=name in ORDER_KEEPING_STAGES, changed_only=only_eos)
                shown = {"p_eos": p.index_select(-1, eos).sum(-1), "kept": kept, "top_ids": top_ids, "top_p": top_p}
            probs.append(p)
            numbers.append(shown if name in SAMPLING_STAGES else {**shown, "changed": changed})
        return probs, numbers

    def _eos_margin(self, logits: torch.Tensor, top_p: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
        """Best non-EOS logit − best EOS logit per row: how far EOS is from winning (+inf where it is banned).
        The best non-EOS token is the first of the row's top ids (``top_p``, ``top_ids``: its stage's top k, best
        first) that is not EOS; only where none of them is, with a probability above 0, is the vocabulary read."""
        eos = self._eos_index
        not_eos = ~torch.isin(top_ids, eos)
        first = not_eos.int().argmax(-1, keepdim=True)  # 0 where every top id is EOS: checked below
        if bool((not_eos.gather(-1, first) & (top_p.gather(-1, first) > 0)).all()):
            others = logits.gather(-1, top_ids.gather(-1, first)).squeeze(-1)
        else:
            others = logits.index_fill(-1, eos, float("-inf")).amax(-1)  # amax: max(-1) also finds the indices, 50× slower
        return others - logits.index_select(-1, eos).amax(-1)

    def _telemetry(self, raw: torch.Tensor, stages: list[tuple[str, torch.Tensor, Callable[[_StageStep], str]]],
                   chosen: torch.Tensor, sampled: torch.Tensor | None = None) -> list[StepRecord]:
        """Turn one step's tensors (rows × vocab) into a StepRecord per row: every number is computed for all rows
        at once and copied to Python in one ``tolist()``; each row's stage table is built when something reads it
        (the inspector, ``--stages``, /trace with stages)."""
        names = ["raw", *(name for name, _, _ in stages)]
        probs, numbers = self._stage_numbers([raw, *(logits for _, logits, _ in stages)], names, sampled)
        p_raw, p_final = probs[0], probs[-1]
        interventions = names.index("interventions")
        final_is_raw = p_final is p_raw
        # Top-k of whichever is larger, so a token the interventions promoted (EOS) shows beside the raw favourites.
        top_ids = numbers[0]["top_ids"] if final_is_raw else _top_of_larger(
            p_raw, numbers[0]["top_ids"], p_final, numbers[-1]["top_ids"])
        entropy_raw = _entropy(raw, p_raw, numbers[0]["top_ids"])
        margin_raw = self._eos_margin(raw, numbers[0]["top_p"], numbers[0]["top_ids"])
        columns = {
            "chosen": chosen,
            "p_eos_raw": numbers[0]["p_eos"],
            "p_eos": numbers[-1]["p_eos"],
            "entropy_raw": entropy_raw,
            "entropy": entropy_raw if final_is_raw else _entropy(stages[-1][1], p_final, numbers[-1]["top_ids"]),
            "top_ids": top_ids,
            "top_p_raw": p_raw.gather(-1, top_ids),
            "top_p": p_final.gather(-1, top_ids),
            "p_chosen_raw": p_raw.gather(-1, chosen[:, None]),
            "p_chosen": p_final.gather(-1, chosen[:, None]),
            "eos_margin_raw": margin_raw,
            "eos_margin": margin_raw if probs[interventions] is p_raw else self._eos_margin(
                stages[interventions - 1][1], numbers[interventions]["top_p"], numbers[interventions]["top_ids"]),
        }
        for index, stage in enumerate(numbers):
            columns.update({(index, key): value for key, value in stage.items()})
        layout, start = {}, 0
        for key, value in columns.items():
            width = value.shape[1] if value.dim() == 2 else 1
            layout[key], start = slice(start, start + width), start + width
        parts = [value.reshape(raw.shape[0], -1) for value in columns.values()]
        if raw.shape[-1] > 2 ** 24:  # ids and counts stay exact in float32 (the probabilities' type) up to 2**24
            parts = [part.double() for part in parts]
        packed = torch.cat(parts, 1).tolist()  # cat promotes ids and counts to the probabilities' type
        notes = [lambda s: "the model's own distribution (softmax of its logits)"] + [note for _, _, note in stages]
        at = {key: place.start for key, place in layout.items()}  # where a one-number column is in a row's list
        top_ids, top_p_raw, top_p = layout["top_ids"], layout["top_p_raw"], layout["top_p"]
        records = []
        for slot, values in enumerate(packed):
            token_id = int(values[at["chosen"]])
            records.append(StepRecord(
                step=0, token_id=token_id, token=self._token(token_id),
                p_eos_raw=values[at["p_eos_raw"]], p_eos=values[at["p_eos"]],
                p_chosen_raw=values[at["p_chosen_raw"]], p_chosen=values[at["p_chosen"]],
                entropy_raw=values[at["entropy_raw"]], entropy=values[at["entropy"]],
                eos_margin_raw=_finite(values[at["eos_margin_raw"]]), eos_margin=_finite(values[at["eos_margin"]]),
                top_k=[TopToken(int(t), self._token(int(t)), pr, p) for t, pr, p in
                       zip(values[top_ids], values[top_p_raw], values[top_p])],
                stages=LazyStages(functools.partial(_stage_table, self._token_text, names, notes, layout, values,
                                                    slot)),
            ))
        return records

    # -- decoding: the model's DecodeLoop calls _begin, then _step until no row is left; _publish wakes run() --

    def _prefill(self):
        pad = self.bundle.tokenizer.pad_token_id
        width = self.padded_length
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in self._rows])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in self._rows])
        return ids, mask

    def row_adapters(self, rows: Sequence[int]) -> list[str]:
        """PEFT's adapter name for each of the rows ``rows`` (original indices): ``adapter_names`` of a forward pass."""
        return [self.bundle.peft_name(self._rows[i].model) for i in rows]

    def submit(self, on_done=None) -> None:
        """Hand this comparison's rows to its model's decode loop; ``on_done(self)`` is called when they finish."""
        from .decoder import decode_loop

        self._on_done = on_done
        decode_loop(self.bundle).submit(self)

    @property
    def done(self) -> bool:
        return self._done

    def _begin(self):
        """The rows join the batch: reset per-row state; return the prefill's (ids, mask)."""
        sequences, mask = self._prefill()
        self._sequences = sequences  # every row's ids so far (finished rows padded)
        self._generator = torch.Generator().manual_seed(int(self.settings.seed))  # each row's, drawn once a step
        self._started = time.perf_counter()
        self._step_index = 0
        return sequences, mask

    def _step(self, raw: torch.Tensor, active: list[int]) -> tuple[torch.Tensor | None, list[int]]:
        """One step for the rows ``active`` (original indices, in batch order) given their next-token logits
        ``raw``: choose, record, advance. Returns the chosen tokens and the slots (positions in ``active``) of
        the rows that keep decoding."""
        settings, step = self.settings, self._step_index
        reason = StopReason.CANCELLED if self._cancel.is_set() else None
        if settings.timeout_seconds and time.perf_counter() - self._started > settings.timeout_seconds:
            reason = StopReason.TIMEOUT
        if reason:
            for i in active:
                variant = self.trace.variants[i]
                variant.stop_reason, variant.wall_seconds = reason, time.perf_counter() - self._started
            return None, []
        sequences = self._sequences
        chosen, stages, sampled = self._choose(raw, [sequences[i:i + 1] for i in active], active)
        records = self._telemetry(raw, stages, chosen, sampled)
        sequences = self._sequences = torch.cat(
            [sequences, torch.full((len(self._rows), 1), self.bundle.tokenizer.pad_token_id)], dim=1)
        sequences[active, -1] = chosen
        still = []
        for slot, (i, record) in enumerate(zip(active, records)):
            record.step = step
            if self._advance(i, record, sequences[i:i + 1], raw[slot:slot + 1], self._started):
                still.append(slot)
        if self._part_of is None:  # a part's columns are compared with the first column of the whole
            self._mark_divergence(step)
        self._step_index += 1
        return chosen, still

    def _publish(self, *, done: bool = False, error: BaseException | None = None) -> None:
        """Wake the consumer: rows advanced, or (``done``) every row has left the batch."""
        if done:
            for variant in self.trace.variants:
                if variant.stop_reason is None:  # left without a reason of its own: the loop was told to stop
                    variant.stop_reason = StopReason.CANCELLED
                    variant.wall_seconds = time.perf_counter() - self._started if self._started else 0.0
        with self._progress:
            self._version += 1
            self._done, self._error = done, error
            self._progress.notify_all()
        if done and self._on_done is not None:
            self._on_done(self)

    def _choose(self, raw: torch.Tensor, row_ids: list[torch.Tensor], active: list[int]):
        """generate()'s own processors from the generation config (the repetition penalty and no-repeat n-grams
        among them), each row's interventions, then the shared sampling warpers; pick the next token per row,
        or take the row's forced token (a branch, up to its fork). Returns the chosen ids, the stages as
        (name, logits, note) and the distribution sampled from (None when greedy)."""
        rows = [self._rows[i] for i in active]
        # Each row's own ids, without its left padding: the pad token may be EOS, and a column is penalised for
        # what its own generate() call would see.
        own_ids = [ids[:, self.padded_length - len(row.prompt_ids):] for ids, row in zip(row_ids, rows)]
        stages = []
        logits = raw
        for name, processor, note in self._processors:  # one call per prompt length (own ids must stack)
            logits = logits.clone()
            for slots in _groups([len(row.prompt_ids) for row in rows]):
                logits[slots] = processor(torch.cat([own_ids[slot] for slot in slots]), logits[slots])
            stages.append((name, logits, note))
        # Rows with the same interventions run them as one batch (built alike: same settings, same padded length).
        # Without any, the stage is the previous one's tensor, which tells the telemetry it changed nothing.
        groups = [slots for slots in _groups([row.interventions_key for row in rows])
                  if rows[slots[0]].built.logits_processors]
        processed = logits.clone() if groups else logits  # some interventions (the seed article's) write into their input
        for slots in groups:
            ids, scores = torch.cat([row_ids[slot] for slot in slots]), processed[slots]
            for processor in rows[slots[0]].built.logits_processors:  # as LogitsProcessorList does, without
                scores = processor(ids, scores)  # inspecting each processor's signature at every step
            processed[slots] = scores
        stages.append(("interventions", processed, lambda s: _interventions_note(rows[s.slot].interventions, s)))
        probs = None
        if self.settings.greedy:
            chosen = processed.argmax(-1)
        else:
            logits = processed
            for name, warper, note in self._warpers:
                logits = warper(None, logits)
                stages.append((name, logits, note))
            probs = torch.softmax(logits, dim=-1)
            # torch.multinomial(p, 1, generator=g) is argmax(p / q), q ~ Exp(1) drawn from g over the vocabulary.
            # Every row was seeded alike in _begin and has drawn once a step since, so their generators would
            # draw the same q: one draw gives each row the token its own generator gives (64 rows: 42 → 7 ms).
            noise = torch.empty(probs.shape[-1]).exponential_(generator=self._generator)
            chosen = (probs / noise).argmax(-1)
        # Sampled rows drew above even at a forced step, so a branch's generator stays in step with its parent's.
        for slot, (row, ids) in enumerate(zip(rows, row_ids)):
            step = ids.shape[-1] - self.padded_length
            if step < len(row.variant.forced_token_ids):
                chosen[slot] = row.variant.forced_token_ids[step]
        return chosen, stages, probs

    def _advance(self, i: int, record: StepRecord, ids: torch.Tensor, scores: torch.Tensor, started: float) -> bool:
        """Record one step for row ``i``; return whether the row keeps decoding. The record joins the trace last:
        a reader on another thread never sees a step whose text is not final yet."""
        row, variant = self._rows[i], self.trace.variants[i]
        variant.token_ids.append(record.token_id)
        variant.wall_seconds = time.perf_counter() - started
        stop_strings = row.built.stop_strings
        if record.token_id in self.eos_ids:
            variant.stop_reason = StopReason.EOS
        else:
            row.decoded = self.bundle.tokenizer.decode([t for t in variant.token_ids if t not in self.eos_ids])
            # The step's text is what it added to the whole decoded text: decoding a token alone drops
            # SentencePiece's leading space, and an emoji or CJK character split over several byte tokens
            # decodes to U+FFFD until its last byte arrives, so that text waits for the completing token.
            if row.decoded.endswith("\ufffd"):
                record.token = ""
            else:
                record.token, row.attributed = row.decoded[row.attributed:], len(row.decoded)
            fired = row.built.stop_reason(ids, scores)
            if fired:
                variant.stop_reason, variant.stop_detail = fired
            elif len(variant.token_ids) >= self.settings.max_new_tokens:
                variant.stop_reason = StopReason.MAX_NEW_TOKENS
        if variant.stop_reason == StopReason.STOP_STRING and variant.stop_detail in row.decoded:
            variant.text = row.decoded[: row.decoded.rfind(variant.stop_detail)]
        elif variant.stop_reason is None:
            variant.text = _visible(row.decoded, stop_strings)
        else:
            variant.text = row.decoded
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
    :class:`Comparison`: :meth:`run`, :meth:`submit`, :meth:`cancel`, :attr:`lock`, :attr:`done`, :attr:`parts`.
    A failure that stops one part cancels the others, and :meth:`run` raises it, as for a Comparison.
    """

    def __init__(self, bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                 *, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP, branches: Sequence = (),
                 appends_to: Trace | None = None):
        self.branches = _check_request(bundle, prompt, variants, settings, branches, max_new_tokens_cap)
        self.bundle, self.settings, self.appends_to = bundle, settings, appends_to
        self._cancel = threading.Event()
        self._progress = threading.Condition()  # notified by every part as its rows advance
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
    def _error(self) -> BaseException | None:
        return next((part._error for part in self.parts if part._error is not None), None)

    @property
    def _version(self) -> int:
        return sum(part._version for part in self.parts)

    def submit(self, on_done=None) -> None:
        """Hand every part to its model's decode loop; ``on_done(self)`` is called when all have finished."""
        self._on_done = on_done
        for part in self.parts:
            part.submit(on_done=self._part_done)

    def _part_done(self, part: Comparison) -> None:
        if part._error is not None:  # a part stopped by its decode loop ends the whole run
            self.cancel()
        with self._progress:
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
            if comparison._error is not None:
                raise comparison._error
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
