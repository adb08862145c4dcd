"""Stop interventions: logits processors, stopping criteria and prompt tweaks that make a model end its answer.

Everything here plugs into plain transformers (``model.generate(logits_processor=..., stopping_criteria=...)`` or
``pipeline("text-generation", ...)``). The playground describes a set of interventions declaratively
(:class:`Intervention`, by registry name) and turns it into processors with :func:`build_interventions`;
:mod:`playground.export` writes the same fix as plain transformers code.

Length convention shared by every processor here: ``step`` counts *generated* tokens, never the prompt. Step 0 is
the call that chooses the first new token, i.e. ``step = input_ids.shape[-1] - prompt_length``. For a left-padded
batch pass the padded prompt length: every row then has the same step.
"""

from __future__ import annotations

import collections
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import (
    ExponentialDecayLengthPenalty,
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    SuppressTokensLogitsProcessor,
)

from .trace import StopReason

_TOKENIZER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


STOP_STRING_CACHE_SIZE = 64


def _tokenizer_cache(tokenizer) -> dict:
    """Per-tokenizer memo (vocabulary scans and stop-string tables are costly and never change)."""
    try:
        return _TOKENIZER_CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no caching
        return {}


class EosRewardLogitsProcessor(LogitsProcessor):
    r"""
    Adds a growing bonus to the end-of-sequence logit(s) over the last part of the generation budget, so a model
    that rambles finishes on its own before ``max_new_tokens`` cuts it off.

    Nothing changes before step ``floor(reward_start_ratio * max_new_tokens)``. From that step on, every EOS column
    gets ``+ bonus(step)``, which grows (linearly, or exponentially) to ``strength`` at the last step
    ``max_new_tokens - 1``; all other logits are left untouched. A bonus is added, not a value assigned, so the
    model's own preference still decides *where* it stops. Right after a sentence EOS typically trails the best
    token by 6–8 logits (SmolLM2 on a rambling answer) and mid-sentence by 15–30, so the default ``strength=12``
    ends a rambling answer at the first sentence end once the ramp is past half-way, rather than mid-word.
    Larger strengths stop sooner and more abruptly.

    This is the corrected version of the ``EosTokenRewardLogitsProcessor`` from the article "Challenges in Stop
    Generation within Llama 2": that one rescales every logit at every step and pins EOS to 100 (see
    :class:`SeedEosTokenRewardLogitsProcessor`).

    Args:
        eos_token_id (`int` or `list[int]`): the end-of-sequence id(s); each gets the same bonus.
        max_new_tokens (`int`): the generation budget the ramp is laid out over.
        prompt_length (`int`, *optional*): length of the (padded) prompt. If None, the length of ``input_ids`` at
            the first call is taken as the prompt length; the instance is then tied to that one generation.
        reward_start_ratio (`float`, 0..1, defaults to 0.8): where in the budget the ramp starts.
        strength (`float`, defaults to 12.0): the bonus at the last step, in logit units (0 disables the ramp).
        schedule (`"linear"` or `"exponential"`): shape of the ramp; both are non-decreasing in the step.
        at_boundary (`bool`): add the bonus only to rows whose last *generated* token ends a sentence or a line
            (``. ! ? …`` possibly followed by a closing quote/bracket, or a newline; a "." right after a digit, as
            in a list's "1.", does not count). Needs ``tokenizer`` or ``boundary_token_ids``.
        force_at_end (`bool`): at the last step make EOS certain: EOS logits become 0, all others ``-inf``.
        tokenizer: used once to find the boundary tokens when ``at_boundary`` is set.
        boundary_token_ids (`list[int]`, *optional*): the boundary tokens, instead of deriving them from ``tokenizer``.

    ``scores`` is never modified in place: before the ramp the same tensor is returned, afterwards a new one.
    The output holds no NaN unless the input did (the bonus is finite, and ``-inf + bonus`` stays ``-inf``).

    Examples:

    ```python
    >>> import torch
    >>> from playground.interventions import EosRewardLogitsProcessor
    >>> processor = EosRewardLogitsProcessor(eos_token_id=2, max_new_tokens=10, prompt_length=4, reward_start_ratio=0.5, strength=10.0)
    >>> scores = torch.zeros(1, 5)
    >>> processor(torch.zeros(1, 4 + 4, dtype=torch.long), scores)  # step 4 < start step 5: unchanged
    tensor([[0., 0., 0., 0., 0.]])
    >>> processor(torch.zeros(1, 4 + 7, dtype=torch.long), scores)  # step 7: 3 of the 5 ramp steps done
    tensor([[0., 0., 6., 0., 0.]])

    ```
    """

    SCHEDULES = ("linear", "exponential")
    # Curvature of the "exponential" schedule: the bonus is strength * expm1(k * progress) / expm1(k), so it stays
    # small for most of the ramp and reaches full strength only at the last step.
    CURVATURE = 3.0
    SENTENCE_END = ".!?…。！？"
    CLOSING = "\"'”’)]}»」』"

    def __init__(
        self,
        eos_token_id: int | list[int],
        max_new_tokens: int,
        prompt_length: int | None = None,
        reward_start_ratio: float = 0.8,
        strength: float = 12.0,
        schedule: str = "linear",
        at_boundary: bool = False,
        force_at_end: bool = False,
        *,
        tokenizer=None,
        boundary_token_ids: list[int] | None = None,
    ):
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if prompt_length is not None and (not isinstance(prompt_length, int) or prompt_length < 0):
            raise ValueError(f"prompt_length must be None or an int >= 0, got {prompt_length!r}")
        if not 0.0 <= reward_start_ratio <= 1.0:
            raise ValueError(f"reward_start_ratio must be between 0 and 1, got {reward_start_ratio!r}")
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
        if schedule not in self.SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(self.SCHEDULES)}, got {schedule!r}")
        self.eos_token_ids = torch.tensor(self.eos_id_list(eos_token_id), dtype=torch.long)
        self.max_new_tokens = max_new_tokens
        self.prompt_length = prompt_length
        self.reward_start_ratio = float(reward_start_ratio)
        self.strength = float(strength)
        self.schedule = schedule
        self.at_boundary = at_boundary
        self.force_at_end = force_at_end
        self.start_step = math.floor(self.reward_start_ratio * max_new_tokens)
        self._boundary = self._bare_period = self._digit = None
        if at_boundary:
            if boundary_token_ids is not None:
                ids = torch.tensor(sorted(set(boundary_token_ids)), dtype=torch.long)
                if ids.numel() and ids.min() < 0:
                    raise ValueError("boundary_token_ids must hold ids >= 0")
                self._boundary = torch.zeros(int(ids.max()) + 1 if ids.numel() else 1, dtype=torch.bool)
                self._boundary[ids] = True
            elif tokenizer is not None:
                self._boundary, self._bare_period, self._digit = self.sentence_end_masks(tokenizer)
            else:
                raise ValueError("at_boundary=True needs tokenizer= or boundary_token_ids=")

    @staticmethod
    def eos_id_list(eos_token_id) -> list[int]:
        """The EOS id(s) as a list without repeats; ValueError unless they are non-negative ints."""
        if isinstance(eos_token_id, torch.Tensor):
            eos_token_id = eos_token_id.tolist()
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise ValueError(f"eos_token_id must be a non-negative int or a non-empty list of them, got {eos_token_id!r}")
        return list(dict.fromkeys(ids))

    @classmethod
    def sentence_end_masks(cls, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bool masks over the tokenizer's ids: (ends a sentence or a line, is a bare ".", ends with a digit)."""
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        special = set(tokenizer.all_special_ids)
        boundary, period, digit = [], [], []
        for i, text in enumerate(texts):
            body = text.rstrip(" \t")
            core = body.rstrip(cls.CLOSING)
            boundary.append(i not in special and (body.endswith(("\n", "\r")) or core.endswith(tuple(cls.SENTENCE_END))))
            period.append(text.strip() == ".")
            digit.append(text[-1:].isdigit())
        return tuple(torch.tensor(mask, dtype=torch.bool) for mask in (boundary, period, digit))

    def bonus_at(self, step: int) -> float:
        """The bonus added to the EOS logits when choosing token number ``step`` (0-based); 0 before the ramp."""
        if step < self.start_step or self.strength == 0.0:
            return 0.0
        progress = min(1.0, (step - self.start_step + 1) / max(1, self.max_new_tokens - self.start_step))
        if self.schedule == "linear":
            return self.strength * progress
        return self.strength * math.expm1(self.CURVATURE * progress) / math.expm1(self.CURVATURE)

    @staticmethod
    def _lookup(mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """mask[ids], False for ids the mask does not cover (a model head may be larger than its tokenizer)."""
        mask = mask.to(ids.device)
        return mask[ids.clamp(0, mask.numel() - 1)] & (ids < mask.numel()) & (ids >= 0)

    def _after_boundary(self, input_ids: torch.LongTensor, step: int) -> torch.Tensor:
        """Per row: does the last generated token end a sentence or a line?"""
        if step < 1:  # the last token still belongs to the prompt; never favour an empty answer
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1]
        hit = self._lookup(self._boundary, last)
        if self._digit is not None and input_ids.shape[-1] >= 2:  # "1." in a numbered list ends no sentence
            hit &= ~(self._lookup(self._bare_period, last) & self._lookup(self._digit, input_ids[:, -2]))
        return hit

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[-1]
        step = input_ids.shape[-1] - self.prompt_length
        if self.eos_token_ids.device != scores.device:
            self.eos_token_ids = self.eos_token_ids.to(scores.device)
        eos = self.eos_token_ids
        if self.force_at_end and step >= self.max_new_tokens - 1:
            forced = torch.full_like(scores, -math.inf)
            forced[:, eos] = 0.0
            return forced
        bonus = self.bonus_at(step)
        if bonus == 0.0:
            return scores
        row_bonus = torch.full((scores.shape[0], eos.numel()), bonus, dtype=scores.dtype, device=scores.device)
        if self.at_boundary:
            row_bonus *= self._after_boundary(input_ids, step).to(scores.device).unsqueeze(1)
        return scores.clone().index_add_(1, eos, row_bonus)


def ends_sentence(text: str) -> bool:
    """Does generated text end at a sentence end: . ! ? … (or 。！？) before any closing quotes or brackets, the
    same ends the ramp's ``at_boundary`` waits for, or a closed code block? An empty text does not."""
    body = text.rstrip()
    if body.endswith("```"):
        return True
    core = body.rstrip(EosRewardLogitsProcessor.CLOSING)
    return bool(core) and core[-1] in EosRewardLogitsProcessor.SENTENCE_END


SCHEDULES = EosRewardLogitsProcessor.SCHEDULES


def _sentence_end_masks(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`EosRewardLogitsProcessor.sentence_end_masks`, scanned once per tokenizer (~0.4 s for 49k tokens)."""
    cache = _tokenizer_cache(tokenizer)
    if "masks" not in cache:
        cache["masks"] = EosRewardLogitsProcessor.sentence_end_masks(tokenizer)
    return cache["masks"]


def boundary_token_ids(tokenizer) -> list[int]:
    """Ids whose text ends a sentence or a line: ends with . ! ? … (optionally closed by quotes or brackets) or a newline."""
    return torch.nonzero(_sentence_end_masks(tokenizer)[0]).flatten().tolist()


class _MemoizedEosReward(EosRewardLogitsProcessor):
    """The ramp as :func:`build_interventions` makes it: the at_boundary vocabulary scan runs once per tokenizer.
    The exported snippet carries the plain class, which scans on each construction."""

    sentence_end_masks = staticmethod(_sentence_end_masks)


class SeedEosTokenRewardLogitsProcessor(LogitsProcessor):
    r"""
    What the article's ``EosTokenRewardLogitsProcessor`` ("Challenges in Stop Generation within Llama 2") actually
    computes, reproduced with tensor operations instead of Python lists over the vocabulary.

    The article meant to reward EOS progressively from 80% of ``max_length``, but its loop
    ``for cur_len in (int(max_length * 0.8), max_length)`` overwrites ``cur_len``, so at *every* step, from the
    first generated token on, it applies the same two passes with ``r = int(0.8 * max_length) / max_length`` and
    then ``r = 1``. Each pass maps every non-EOS logit ``x`` to ``x * r * 10 * exp(-sign(x))`` and sets the EOS
    logit to ``100 * r``. Net effect, independent of the length generated so far:

    * positive logits are multiplied by ``r1 * 100 / e**2`` (about 10.8 for ``r1 = 0.8``),
    * negative logits by ``r1 * 100 * e**2`` (about 591), zero stays zero,
    * the EOS logit is always exactly 100.

    So a token can only beat EOS while its raw logit exceeds ``100 / 10.8 ≈ 9.2``: generation continues while the
    model is confident and stops at the first token where the best raw logit drops below that, often mid-sentence
    and often after a handful of tokens. The x10.8 stretch also acts like a temperature of ~0.09, so sampling is
    nearly greedy. The article's "it works" came from this threshold, not from a length-dependent reward.

    Like the original it modifies ``scores`` in place (pass ``in_place=False`` to work on a copy). With
    ``max_length=1`` the first pass multiplies by ``r1 = 0``, turning infinite logits into NaN, also like the original.

    Examples:

    ```python
    >>> import torch
    >>> from playground.interventions import SeedEosTokenRewardLogitsProcessor
    >>> processor = SeedEosTokenRewardLogitsProcessor(eos_token_id=0, max_length=100)
    >>> processor(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[5.0, 10.0, -1.0, 0.0]]))
    tensor([[ 100.0000,  108.2682, -591.1245,    0.0000]])

    ```
    """

    def __init__(self, eos_token_id: int, max_length: int, in_place: bool = True):
        # Same acceptance rules as the article.
        if not isinstance(eos_token_id, int) or eos_token_id < 0:
            raise ValueError(f"eos_token_id must be an int >= 0, got {eos_token_id!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        self.eos_token_id = eos_token_id
        self.max_length = max_length
        self.in_place = in_place
        self.ratios = (max(0, int(max_length * 0.8)) / max_length, max_length / max_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores if self.in_place else scores.clone()
        is_eos = torch.arange(scores.shape[-1], device=scores.device) == self.eos_token_id
        for ratio in self.ratios:
            # Same operation order as the original, so results match it bit for bit.
            stretched = out * ratio * 10 * torch.exp(-torch.sign(out))
            out.copy_(torch.where(is_eos, torch.tensor(1e2 * ratio, dtype=out.dtype, device=out.device), stretched))
        return out


class FiniteExponentialDecayLengthPenalty(ExponentialDecayLengthPenalty):
    r"""
    transformers' [`ExponentialDecayLengthPenalty`] (after ``start`` new tokens, EOS logits grow by
    ``|x| * (factor**k - 1)`` at the k-th step past the start) that can neither overflow nor produce NaN.

    Upstream computes ``factor**k`` as a Python float, which raises ``OverflowError`` on long runs (factor 2: after
    ~1024 steps), and once it passes the float32 range (factor 2: 128 steps) an EOS logit of exactly 0 becomes
    ``0 * inf = NaN``. Here the growth is capped at 1e30, and an EOS logit that is already ``-inf`` (banned, e.g. by
    a min-new-tokens processor that ran first) stays ``-inf`` instead of becoming ``-inf + inf = NaN``.

    Examples:

    ```python
    >>> import torch
    >>> from playground.interventions import FiniteExponentialDecayLengthPenalty
    >>> penalty = FiniteExponentialDecayLengthPenalty((0, 2.0), eos_token_id=0, input_ids_seq_length=1)
    >>> penalty(torch.zeros(1, 1 + 3, dtype=torch.long), torch.tensor([[-1.0, 5.0, float("-inf")]]))  # k=3: -1 + 1*(8-1)
    tensor([[6., 5., -inf]])
    >>> penalty(torch.zeros(1, 1 + 5000, dtype=torch.long), torch.tensor([[float("-inf"), 0.0]]))
    tensor([[-inf, 0.]])

    ```
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        steps_past_start = input_ids.shape[-1] - self.regulation_start
        if steps_past_start <= 0:
            return scores
        log_growth = steps_past_start * math.log(self.regulation_factor)
        growth = math.expm1(log_growth) if log_growth < math.log(1e30) else 1e30
        eos = self.eos_token_id.to(scores.device)
        eos_scores = scores[:, eos]
        penalty = torch.where(torch.isfinite(eos_scores), eos_scores.abs() * growth, torch.zeros_like(eos_scores))
        processed = scores.clone()
        processed[:, eos] = eos_scores + penalty
        return processed


class RepetitionStoppingCriteria(StoppingCriteria):
    r"""
    Stops a row once its last ``ngram_size`` tokens have appeared ``repeats`` times in a row, i.e. the last
    ``ngram_size * repeats`` generated tokens are one n-gram repeated (a degenerate loop such as
    "I'm going to Paris. I'm going to Paris. I'm going to Paris."). Only generated tokens count: a repetitive prompt
    never triggers it by itself.

    ``prompt_length=None`` takes ``input_ids.shape[-1] - 1`` at the first call (stopping criteria first run after
    the first new token is appended), which ties the instance to one generation.

    Examples:

    ```python
    >>> import torch
    >>> from playground.interventions import RepetitionStoppingCriteria
    >>> criterion = RepetitionStoppingCriteria(ngram_size=2, repeats=3, prompt_length=1)
    >>> criterion(torch.tensor([[9, 4, 5, 4, 5, 4, 5], [9, 4, 5, 4, 5, 4, 4]]), None)
    tensor([ True, False])

    ```
    """

    def __init__(self, ngram_size: int, repeats: int, prompt_length: int | None = None):
        if not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"ngram_size must be an int >= 1, got {ngram_size!r}")
        if not isinstance(repeats, int) or repeats < 2:
            raise ValueError(f"repeats must be an int >= 2, got {repeats!r}")
        self.ngram_size = ngram_size
        self.repeats = repeats
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[-1] - 1
        span = self.ngram_size * self.repeats
        rows = input_ids.shape[0]
        if input_ids.shape[-1] - self.prompt_length < span:
            return torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        tail = input_ids[:, -span:].reshape(rows, self.repeats, self.ngram_size)
        return (tail == tail[:, -1:, :]).all(dim=2).all(dim=1)


class _SuppressTokens(SuppressTokensLogitsProcessor):
    """transformers' ``SuppressTokensLogitsProcessor`` (what ``generate(suppress_tokens=...)`` builds, so the export
    reproduces it), filling the suppressed ids instead of building and reading a vocabulary mask at every step.

    >>> scores = torch.zeros(2, 5)
    >>> torch.equal(_SuppressTokens([1, 3])(None, scores), SuppressTokensLogitsProcessor([1, 3])(None, scores))
    True
    """

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        key = (scores.shape[-1], scores.device)
        if getattr(self, "_ids_key", None) != key:  # the ids within the vocabulary, as isin(vocabulary, ids) finds them
            ids = self.suppress_tokens.to(scores.device)
            self._ids, self._ids_key = ids[(ids >= 0) & (ids < scores.shape[-1])], key
        # a copy with those logits at -inf: what torch.where over a vocabulary mask gives, without a boolean pass
        return scores.index_fill(-1, self._ids, -float("inf"))


class _PromptLengthFromFirstCall(LogitsProcessor):
    """Builds ``make(prompt_length)`` at the first call, reading the prompt length from that call's input_ids."""

    def __init__(self, make):
        self.make = make
        self.processor = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.processor is None:
            self.processor = self.make(input_ids.shape[-1])
        return self.processor(input_ids, scores)


# ---------------------------------------------------------------------------------------------------------------
# Declarative description


def _flag(value) -> bool:
    """The one rule for a yes/no value in every door: True/False, or the text "true"/"false" (nothing else:
    ``bool("false")`` is True, and "no" or "0" switching something on or off is worse than a refusal)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("must be true or false")


def _integer(low: int, high: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"must be an integer from {low} to {high}")
        if not low <= int(value) <= high:
            raise ValueError(f"must be from {low} to {high}")
        return int(value)

    return check


def _number(low: float, high: float):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"must be a number from {low} to {high}")
        return float(value)

    return check


def _choice(*choices: str):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def _strings(value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(s, str) and s for s in value):
        raise ValueError("must be a non-empty list of non-empty strings")
    return list(dict.fromkeys(value))


@dataclass(frozen=True)
class Param:
    """One parameter of an intervention: its default, the check that validates (and normalises) a value, and the
    request's shared setting that fills it when a column leaves it out (see :mod:`playground.request`)."""

    default: object
    check: object  # value -> normalised value; ValueError with the rule (e.g. "must be a number from 0 to 1")
    shared: str | None = None


@dataclass(frozen=True)
class Export:
    """How :mod:`playground.export` writes an intervention into the user's own ``generate()`` call.

    ``place``: "argument" (a keyword argument of ``generate()``), "logits_processor" or "stopping_criteria" (an item
    of that list), or "prompt" (a comment by the prompt-building lines). ``line``: its text, ``str.format``-ed with
    the intervention's parameters and ``max_new_tokens``; or, where the text depends on more, a function of (the
    parameters, max_new_tokens, the snippet's kind: generate, pipeline or kwargs). ``carries``: the engine's class
    the snippet carries the source of, for what transformers lacks.
    """

    place: str
    line: str | Callable[[dict, int, str], str]
    carries: type | None = None

    def text(self, params: dict, max_new_tokens: int, kind: str) -> str:
        if callable(self.line):
            return self.line(params, max_new_tokens, kind)
        return self.line.format(**params, max_new_tokens=max_new_tokens)


@dataclass(frozen=True)
class InterventionSpec:
    """An intervention, declared once: what it does (one line), its parameters, where it acts, how it is built
    for a generation, how the export writes it and, where the story says why it stopped a column so, that one line.

    ``stage``: its place in the pipeline, ascending: EOS bans before the length penalty before the EOS boosts (a
    boost adds to ``-inf`` and so cannot undo a ban), then the stopping criteria, then the prompt's changes.
    :func:`build_interventions` applies the logits processors, and the export writes every line, in this order.
    ``why``: ``str.format``-ed with the intervention's parameters.
    """

    description: str
    stage: int
    export: Export
    params: dict[str, Param] = field(default_factory=dict)
    why: str | None = None
    # How it is built for one generation (``build_interventions``): a logits processor, or stopping checks as
    # (stop reason, detail, criterion); the prompt's changes are read from the params directly.
    processor: Callable[[dict, _Generation], LogitsProcessor] | None = None
    stop_checks: Callable[[dict, _Generation], list] | None = None


@dataclass(frozen=True)
class _Generation:
    """What building an intervention for one generation needs."""

    tokenizer: object
    eos_token_ids: list[int]
    max_new_tokens: int
    prompt_length: int | None

    def with_prompt_length(self, make):
        """``make(prompt_length)``, or a processor that calls it with the length its first call sees."""
        return make(self.prompt_length) if self.prompt_length is not None else _PromptLengthFromFirstCall(make)


def _eos_reward_line(p: dict, max_new_tokens: int, kind: str) -> str:
    boundary = ", tokenizer=tokenizer" if p["at_boundary"] else ""  # the boundary tokens come from the tokenizer
    return (f"EosRewardLogitsProcessor(eos_token_ids, max_new_tokens={max_new_tokens}, "
            f"reward_start_ratio={p['reward_start_ratio']!r}, strength={p['strength']!r},\n"
            f"            schedule={p['schedule']!r}, at_boundary={p['at_boundary']!r}, "
            f"force_at_end={p['force_at_end']!r}{boundary})")


def _concise_suffix_line(p: dict, max_new_tokens: int, kind: str) -> str:
    if kind == "kwargs":  # a kwargs snippet builds no prompt: the user adds the suffix to their own message
        return f"# concise_suffix: end the user's message with {concise_suffix_text(p['sentences'])!r}."
    return "# concise_suffix: the fix asks for a short answer in the prompt itself."


def _chat_template_line(p: dict, max_new_tokens: int, kind: str) -> str:
    how = "in the model's chat template" if p["enabled"] else "in as plain text, without the chat template"
    return f"# chat_template: the prompt goes {how}."


# The defaults are the Compare page's measured story (playground/request.py): the ramp from half of the budget at
# strength 12 ends SmolLM2's rambling Paris answer at a sentence end; a column that leaves a parameter out takes
# the request's shared setting named by ``shared``.
SPECS: dict[str, InterventionSpec] = {
    "eos_reward": InterventionSpec(
        "Ramp up a bonus on the EOS logit over the last part of the token budget (corrected article idea).",
        stage=4, export=Export("logits_processor", _eos_reward_line, carries=EosRewardLogitsProcessor),
        processor=lambda p, g: _MemoizedEosReward(g.eos_token_ids, g.max_new_tokens, g.prompt_length, **p,
                                                  tokenizer=g.tokenizer if p["at_boundary"] else None), params={
            "reward_start_ratio": Param(0.5, _number(0.0, 1.0), shared="reward_start_ratio"),
            "strength": Param(12.0, _number(0.0, 100.0), shared="strength"),
            "schedule": Param("linear", _choice(*SCHEDULES)),
            "at_boundary": Param(False, _flag),
            "force_at_end": Param(False, _flag),
        }),
    "seed_article": InterventionSpec(
        "The article's EosTokenRewardLogitsProcessor as written: rescales all logits, pins EOS to 100.",
        stage=3, export=Export("logits_processor", "SeedEosTokenRewardLogitsProcessor(eos_token_ids[0], max_length={max_new_tokens})",
                               carries=SeedEosTokenRewardLogitsProcessor),
        processor=lambda p, g: SeedEosTokenRewardLogitsProcessor(g.eos_token_ids[0], g.max_new_tokens, in_place=False),
        why="the article's processor pins the EOS logit to 100 at every step, so EOS wins at the first token the "
            "model is unsure of"),
    "stop_strings": InterventionSpec(
        "Stop as soon as the answer contains one of these strings (may span several tokens).",
        stage=5, export=Export("argument", "stop_strings={strings!r}, tokenizer=tokenizer,  # stop_strings: stop once the answer holds one"),
        params={"strings": Param(["\n\n"], _strings, shared="stop_strings")},
        stop_checks=lambda p, g: [(StopReason.STOP_STRING, text, _AnswerStopString(g.tokenizer, text, g.prompt_length))
                                  for text in p["strings"]]),
    "decay_penalty": InterventionSpec(
        "transformers' exponential decay length penalty: EOS logit grows by factor^k after `start` tokens.",
        stage=2, export=Export("argument", "exponential_decay_length_penalty=({start}, {factor!r}),  "
                                           "# decay_penalty: the EOS logit grows by {factor!r}**k after {start} new tokens"),
        params={"start": Param(20, _integer(0, 100_000)), "factor": Param(1.1, _number(1.0, 10.0))},
        processor=lambda p, g: g.with_prompt_length(
            lambda length: FiniteExponentialDecayLengthPenalty((p["start"], p["factor"]), g.eos_token_ids, length))),
    "min_new_tokens": InterventionSpec(
        "Forbid EOS until at least n new tokens exist.",
        stage=1, export=Export("argument", "min_new_tokens={n},  # min_new_tokens: no EOS before {n} new tokens"),
        params={"n": Param(32, _integer(0, 100_000), shared="min_new_tokens")},
        processor=lambda p, g: g.with_prompt_length(
            lambda length: MinNewTokensLengthLogitsProcessor(length, p["n"], g.eos_token_ids)),
        why="EOS is banned until the minimum length of {n} tokens"),
    "ban_eos": InterventionSpec(
        "Forbid EOS entirely, reproducing a model that never stops (runs to max_new_tokens).",
        stage=0, export=Export("argument", "suppress_tokens=eos_token_ids,  # ban_eos: EOS can never be chosen"),
        processor=lambda p, g: _SuppressTokens(g.eos_token_ids),
        why="EOS is banned, so it can only hit the limit"),
    "repetition_stop": InterventionSpec(
        "Stop when the last n-gram has repeated `repeats` times in a row (degenerate loop).",
        stage=6, export=Export("stopping_criteria", "RepetitionStoppingCriteria(ngram_size={ngram_size}, repeats={repeats})",
                               carries=RepetitionStoppingCriteria),
        params={"ngram_size": Param(4, _integer(1, 256)), "repeats": Param(3, _integer(2, 1000))},
        stop_checks=lambda p, g: [(StopReason.REPETITION, None,
                                   RepetitionStoppingCriteria(**p, prompt_length=g.prompt_length))]),
    "concise_suffix": InterventionSpec(
        "Append 'Answer in N sentences or fewer.' to the prompt (the article's prompt fix).",
        stage=7, export=Export("prompt", _concise_suffix_line), params={"sentences": Param(5, _integer(1, 100))},
        why="the prompt asked for a short answer"),
    "chat_template": InterventionSpec(
        "Wrap the prompt in the model's chat template (on) or send raw text (off).",
        stage=8, export=Export("prompt", _chat_template_line), params={"enabled": Param(True, _flag)}),
}
INTERVENTION_NAMES: tuple[str, ...] = tuple(SPECS)
DESCRIPTIONS: dict[str, str] = {name: spec.description for name, spec in SPECS.items()}


def unescape(text: str) -> str:
    """Let people type a newline stop string as \\n (and a tab as \\t) in a text box or a shell."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def concise_suffix_text(sentences: int) -> str:
    return f" Answer in {sentences} sentence{'s' if sentences != 1 else ''} or fewer."


@dataclass(frozen=True)
class Intervention:
    """One intervention by registry name (see ``INTERVENTION_NAMES``) with its parameters."""

    name: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> Intervention:
        """Validated, with defaults filled in; raises ValueError like :func:`parse_interventions`."""
        return parse_interventions([data])[0]


def default_params(name: str) -> dict:
    if name not in SPECS:
        raise ValueError(f"unknown intervention {name!r}; allowed: {', '.join(INTERVENTION_NAMES)}")
    return {key: (list(p.default) if isinstance(p.default, list) else p.default) for key, p in SPECS[name].params.items()}


def check_params(name: str, params) -> dict:
    """``params`` given for intervention ``name``, validated and normalised, without defaults filled in.
    Raises ValueError naming the intervention, the parameter and its range."""
    if name not in SPECS:
        raise ValueError(f"unknown intervention {name!r}; allowed: {', '.join(INTERVENTION_NAMES)}")
    if not isinstance(params, dict):
        raise ValueError(f"{name}: params must be a dict, got {type(params).__name__}")
    spec = SPECS[name].params
    unknown = sorted(set(params) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise ValueError(f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
    checked = {}
    for key, value in params.items():
        try:
            checked[key] = spec[key].check(value)
        except ValueError as error:
            raise ValueError(f"{name}.{key} {error}, got {value!r}") from None
    return checked


def _parse_one(item) -> Intervention:
    if isinstance(item, Intervention):
        name, params = item.name, item.params
    elif isinstance(item, str):
        name, params = item, {}
    elif isinstance(item, dict):
        if "name" not in item:
            raise ValueError(f"an intervention dict needs a 'name' (one of {', '.join(INTERVENTION_NAMES)}), got {item!r}")
        name = item["name"]
        params = item["params"] if "params" in item else {k: v for k, v in item.items() if k != "name"}
    else:
        raise ValueError(f"an intervention must be an Intervention, a dict or a name, got {type(item).__name__}")
    return Intervention(name, default_params(name) | check_params(name, params))


def parse_interventions(items) -> list[Intervention]:
    """Interventions from Intervention objects, dicts (``{"name", "params"}`` or flat) or bare names.

    Fills defaults and validates; each name may appear once. Raises ValueError naming the field and its range.
    """
    parsed = [_parse_one(item) for item in (items or [])]
    names = [i.name for i in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"each intervention may appear once; repeated: {', '.join(duplicates)}")
    return parsed


# ---------------------------------------------------------------------------------------------------------------
# Building processors


@dataclass
class BuiltInterventions:
    """What a set of interventions turns into for one generation.

    ``logits_processors`` never modify the scores they are given in place. Processors are ordered so that EOS bans
    (ban_eos, min_new_tokens) run before EOS boosts; a boost adds to ``-inf`` and so cannot undo a ban, except the
    two that assign EOS outright (eos_reward's ``force_at_end`` at the last step, and seed_article).
    """

    logits_processors: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    prompt_suffix: str = ""
    use_chat_template: bool | None = None
    stop_strings: list[str] = field(default_factory=list)
    _checks: list = field(default_factory=list, repr=False)

    def stop_reason(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None) -> tuple[StopReason, str | None] | None:
        """For one row (``input_ids`` of shape [1, seq]): (STOP_STRING, the string) or (REPETITION, None) when
        one of the stopping criteria fires, else None. EOS and max_new_tokens are the caller's business."""
        for reason, which, criterion in self._checks:
            if bool(criterion(input_ids, scores)[0]):
                return reason, which
        return None


class _AnswerStopString(StoppingCriteria):
    """transformers' StopStringCriteria for one string, counting only matches inside the generated text (a chat
    prompt ends in "assistant\n", so a first generated "\n" would otherwise complete a "\n\n" stop string)."""

    def __init__(self, tokenizer, text: str, prompt_length: int | None):
        # One criterion per string so that a hit says which string it was; the tables are costly, and stateless.
        # Least recently used first, at most STOP_STRING_CACHE_SIZE tables: in a public app every visitor can
        # type new stop strings, and each table holds vocabulary-sized arrays.
        cache = _tokenizer_cache(tokenizer).setdefault("stop_strings", collections.OrderedDict())
        if text in cache:
            cache.move_to_end(text)
        else:
            cache[text] = StopStringCriteria(tokenizer, [text])
            while len(cache) > STOP_STRING_CACHE_SIZE:
                cache.popitem(last=False)
        self.criterion, self.tokenizer, self.text, self.prompt_length = cache[text], tokenizer, text, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        if self.prompt_length is None:  # criteria first run after the first new token is appended
            self.prompt_length = input_ids.shape[-1] - 1
        fired = self.criterion(input_ids, scores)
        for row in fired.nonzero().flatten().tolist():  # rare: only when a match ends at the last token
            fired[row] = self.text in self.tokenizer.decode(input_ids[row, self.prompt_length:])
        return fired


def build_interventions(
    interventions,
    *,
    tokenizer,
    eos_token_ids: list[int],
    max_new_tokens: int,
    prompt_length: int | None,
) -> BuiltInterventions:
    """Turn interventions into logits processors, stopping criteria and prompt settings for one generation.

    ``prompt_length`` is the (left-padded) prompt length in tokens; None lets each processor read it from the first
    call it gets, which ties the result to a single ``generate`` call.
    """
    chosen = {i.name: i.params for i in parse_interventions(interventions)}
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if any(SPECS[name].processor for name in chosen):  # every logits processor here acts on the EOS ids
        eos_token_ids = EosRewardLogitsProcessor.eos_id_list(eos_token_ids)
    generation = _Generation(tokenizer, eos_token_ids, max_new_tokens, prompt_length)
    # In the specs' stage order, the order the export writes them in too.
    ordered = sorted(chosen, key=lambda name: SPECS[name].stage)
    processors = LogitsProcessorList(SPECS[name].processor(chosen[name], generation)
                                     for name in ordered if SPECS[name].processor)
    checks = [check for name in ordered if SPECS[name].stop_checks
              for check in SPECS[name].stop_checks(chosen[name], generation)]
    stop_strings = chosen.get("stop_strings", {}).get("strings", [])

    return BuiltInterventions(
        logits_processors=processors,
        stopping_criteria=StoppingCriteriaList(criterion for _, _, criterion in checks),
        prompt_suffix=concise_suffix_text(chosen["concise_suffix"]["sentences"]) if "concise_suffix" in chosen else "",
        use_chat_template=chosen["chat_template"]["enabled"] if "chat_template" in chosen else None,
        stop_strings=list(stop_strings),
        _checks=checks,
    )
