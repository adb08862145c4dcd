"""The numbers a trace shows for one decode step, from the pipeline's stages: top-k, p(EOS), the EOS margin,
entropy, and each stage's row of the stage table. Pure functions of tensors (rows × vocabulary), computed for
every row at once and copied to Python once per step; each row's stage table is built from the kept numbers when
something reads it (:class:`~playground.trace.LazyStages`).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence

import torch

from .detokenize import rust_backend
from .pipeline import ORDER_KEEPING_STAGES, SAMPLING_STAGES, Note, StageFacts, StageLogits
from .trace import LazyStages, Stage, StepRecord, TopToken

RAW_NOTE = "the model's own distribution (softmax of its logits)"


class TokenTexts(dict):
    """Token id → its text, as ``tokenizer.decode([id])`` gives it. The whole vocabulary is decoded in one call
    when the table is made (tens of milliseconds, once per tokenizer: :func:`token_texts`), so a step's top-k
    costs no decoding; an id beyond the tokenizer's vocabulary (a model whose logits are padded) is decoded when
    met."""

    def __init__(self, tokenizer):
        super().__init__(enumerate(vocabulary_texts(tokenizer)))
        # Weakly: token_texts keeps the table while the tokenizer lives, so the table must not keep it alive.
        self._tokenizer = weakref.ref(tokenizer)

    def __missing__(self, token_id: int) -> str:
        text = self[token_id] = self._tokenizer().decode([token_id])
        return text


def vocabulary_texts(tokenizer) -> list[str]:
    """``[tokenizer.decode([i]) for i in range(len(tokenizer))]``, in one batch of the :func:`rust_backend` where
    there is one (45 ms for 49k ids, against 400 ms through ``batch_decode``)."""
    ids = [[i] for i in range(len(tokenizer))]
    backend = rust_backend(tokenizer)
    if backend is not None:
        return backend.decode_batch(ids, skip_special_tokens=False)
    return tokenizer.batch_decode(ids)


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> TokenTexts:
    """The tokenizer's :class:`TokenTexts`, made once and shared by every run on it."""
    table = _TABLES.get(tokenizer)
    if table is None:
        table = _TABLES[tokenizer] = TokenTexts(tokenizer)
    return table


def finite(value: float) -> float | None:
    """A margin for JSON: None where EOS is banned (an infinite or undefined distance).

    >>> finite(1.5), finite(float("inf"))
    (1.5, None)
    """
    return value if math.isfinite(value) else None


def entropy(logits: torch.Tensor, probs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """Each row's entropy in nats, −Σ p·log p, from its logits, their softmax ``probs`` and its top ids (the first
    is the argmax): with m the largest logit, log p = (x − m) + log p_max, so H = −log p_max − Σ p·(x − m). One
    pass over the vocabulary where ``log_softmax`` takes two (it sums the exponentials again). A removed token
    (x = −inf, p = 0) adds 0.

    >>> logits = torch.tensor([[0.0, 0.0, float("-inf")], [2.0, 0.0, -1.0]])
    >>> probs = torch.softmax(logits, -1)
    >>> [round(h, 4) for h in entropy(logits, probs, probs.argsort(-1, descending=True)).tolist()]
    [0.6931, 0.5243]
    """
    best = top_ids[:, :1]
    spread = (logits - logits.gather(-1, best)).clamp_(min=-1e4)  # −inf → a finite value that p = 0 cancels
    return -probs.gather(-1, best).log().squeeze(-1) - spread.mul_(probs).sum(-1)


def changed_count(logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """How many logits per row differ from ``previous`` (as float counts). ``(a != b).sum()`` turns a boolean
    vocabulary into 64-bit integers first (2× slower); here a difference of two −inf (or two +inf) is NaN, which
    nansum skips: equal infinities count as unchanged, as they do with ``!=``.

    >>> inf = float("inf")
    >>> changed_count(torch.tensor([[0.0, -inf, inf, 1.0, -inf]]), torch.tensor([[0.0, -inf, inf, 2.0, 3.0]])).tolist()
    [2.0]
    """
    return torch.nansum((logits - previous).abs_().sign_(), -1)


def top_k(probs: torch.Tensor, k: int, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(probs, k)`` per row, reading the vocabulary once instead of partially sorting it: the k largest
    values lie in the k chunks (of ``chunk`` entries) with the largest maxima, so only those k·chunk entries are
    searched (4× faster at 32k entries). Where chunk maxima tie at the k-th place (many zero probabilities after a
    truncation), or the vocabulary is small, it is torch.topk itself.

    >>> probs = torch.softmax(torch.randn(3, 5000, generator=torch.Generator().manual_seed(0)), -1)
    >>> [torch.equal(a, b) for a, b in zip(top_k(probs, 10), torch.topk(probs, 10))]
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


def stage_top(probs: torch.Tensor, kept: torch.Tensor, before: torch.Tensor, before_top_p: torch.Tensor,
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
    >>> stage_top(after, torch.tensor([2.0]), before, *torch.topk(before, 3), keeps_order=True)[1].tolist()
    [[0, 1, 2]]
    >>> boosted = torch.softmax(before.log().index_add(-1, torch.tensor([3]), torch.tensor([[3.0]])), -1)  # token 3
    >>> stage_top(boosted, torch.tensor([4.0]), before, *torch.topk(before, 2), keeps_order=False,
    ...           changed_only=torch.tensor([3]))[1].tolist()
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
    top_p, top_ids = top_k(probs, k)
    if bool((top_p > 0).all()):
        return top_p, top_ids
    by_before = torch.sort(before, dim=-1, descending=True, stable=True).indices
    top_ids = by_before.gather(-1, torch.sort(probs.gather(-1, by_before), dim=-1, descending=True,
                                              stable=True).indices[:, :k])
    return probs.gather(-1, top_ids), top_ids


def top_of_larger(p_a: torch.Tensor, top_a: torch.Tensor, p_b: torch.Tensor, top_b: torch.Tensor) -> torch.Tensor:
    """The top-k ids of max(p_a, p_b) per row, from each one's top-k ids ``top_a`` and ``top_b``: a token in the
    top k of the larger is in the top k of one of them, so only those 2k candidates are compared, not the
    vocabulary.

    >>> p_a, p_b = torch.tensor([[0.5, 0.3, 0.1, 0.1]]), torch.tensor([[0.2, 0.1, 0.6, 0.1]])
    >>> top_of_larger(p_a, torch.topk(p_a, 2).indices, p_b, torch.topk(p_b, 2).indices).tolist()
    [[2, 0]]
    """
    k = top_a.shape[-1]
    candidates = torch.cat([top_a, top_b], dim=-1)
    larger = torch.maximum(p_a.gather(-1, candidates), p_b.gather(-1, candidates))
    repeated = (top_b[:, :, None] == top_a[:, None, :]).any(-1)  # a token among both top-k counts once
    larger[:, k:] = larger[:, k:].masked_fill(repeated, -1.0)
    return candidates.gather(-1, torch.topk(larger, k, dim=-1).indices)


def stage_numbers(logits_by_stage: list[torch.Tensor], names: list[str], eos: torch.Tensor, k: int,
                  sampled: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[dict]]:
    """Per stage (raw first), for every row at once: its probabilities (the last stage's are ``sampled``, the
    distribution the rows were sampled from, when given) and the numbers its row in the stage table shows
    (p(EOS) over the ids ``eos``, tokens kept, the top ``k``, logits changed). A stage that changed nothing
    (greedy decoding without interventions, an intervention not active yet) reuses the previous stage's numbers:
    its softmax and top-k are the same tensors; :func:`stage_top` says which tokens a stage's top-k shows. The
    logits a stage changed are counted only where its note reads them (processors, interventions)."""
    probs, numbers = [], []
    unchanged = torch.zeros(logits_by_stage[0].shape[0], dtype=torch.long)
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
                changed = changed_count(logits, previous)
                if bool((changed == changed_count(logits.index_select(-1, eos), previous.index_select(-1, eos))).all()):
                    only_eos = eos  # the stage changed EOS logits alone (ban_eos, eos_reward, ...)
            if previous is None:
                top_p, top_ids = top_k(p, k)
            else:
                top_p, top_ids = stage_top(p, kept, probs[-1], numbers[-1]["top_p"], numbers[-1]["top_ids"],
                                           keeps_order=name in ORDER_KEEPING_STAGES, changed_only=only_eos)
            shown = {"p_eos": p.index_select(-1, eos).sum(-1), "kept": kept, "top_ids": top_ids, "top_p": top_p}
        probs.append(p)
        numbers.append(shown if name in SAMPLING_STAGES else {**shown, "changed": changed})
    return probs, numbers


def eos_margin(logits: torch.Tensor, top_p: torch.Tensor, top_ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Best non-EOS logit − best EOS logit per row (EOS: the ids ``eos``): how far EOS is from winning (+inf where
    it is banned). The best non-EOS token is the first of the row's top ids (``top_p``, ``top_ids``: its stage's
    top k, best first) that is not EOS; only where none of them is, with a probability above 0, is the vocabulary
    read.

    >>> logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, float("-inf")]])
    >>> probs = torch.softmax(logits, -1)
    >>> eos_margin(logits, *torch.topk(probs, 1), eos=torch.tensor([2])).tolist()
    [1.0, inf]
    """
    not_eos = ~torch.isin(top_ids, eos)
    first = not_eos.int().argmax(-1, keepdim=True)  # 0 where every top id is EOS: checked below
    if bool((not_eos.gather(-1, first) & (top_p.gather(-1, first) > 0)).all()):
        others = logits.gather(-1, top_ids.gather(-1, first)).squeeze(-1)
    else:
        others = logits.index_fill(-1, eos, float("-inf")).amax(-1)  # amax: max(-1) also finds the indices, 50× slower
    return others - logits.index_select(-1, eos).amax(-1)


def step_records(raw: torch.Tensor, stages: Sequence[StageLogits], chosen: torch.Tensor,
                 sampled: torch.Tensor | None, *, eos: torch.Tensor, k: int, texts: TokenTexts) -> list[StepRecord]:
    """One step's tensors (rows × vocabulary) as a StepRecord per row (its ``step`` left at 0 for the caller):
    ``raw`` logits, the pipeline's ``stages`` after them (one named "interventions"), the ``chosen`` tokens and
    the distribution ``sampled`` from (None when greedy); ``eos``: the EOS ids, ``k``: top tokens shown, ``texts``:
    token texts. Every number is computed for all rows at once and copied to Python in one ``tolist()``; each
    row's stage table is built when something reads it (the inspector, ``--stages``, /trace with stages)."""
    names = ["raw", *(stage.name for stage in stages)]
    probs, numbers = stage_numbers([raw, *(stage.logits for stage in stages)], names, eos, k, sampled)
    p_raw, p_final = probs[0], probs[-1]
    interventions = names.index("interventions")
    final_is_raw = p_final is p_raw
    # Top-k of whichever is larger, so a token the interventions promoted (EOS) shows beside the raw favourites.
    top_ids = numbers[0]["top_ids"] if final_is_raw else top_of_larger(
        p_raw, numbers[0]["top_ids"], p_final, numbers[-1]["top_ids"])
    entropy_raw = entropy(raw, p_raw, numbers[0]["top_ids"])
    margin_raw = eos_margin(raw, numbers[0]["top_p"], numbers[0]["top_ids"], eos)
    columns = {
        "chosen": chosen,
        "p_eos_raw": numbers[0]["p_eos"],
        "p_eos": numbers[-1]["p_eos"],
        "entropy_raw": entropy_raw,
        "entropy": entropy_raw if final_is_raw else entropy(stages[-1].logits, p_final, numbers[-1]["top_ids"]),
        "top_ids": top_ids,
        "top_p_raw": p_raw.gather(-1, top_ids),
        "top_p": p_final.gather(-1, top_ids),
        "p_chosen_raw": p_raw.gather(-1, chosen[:, None]),
        "p_chosen": p_final.gather(-1, chosen[:, None]),
        "eos_margin_raw": margin_raw,
        "eos_margin": margin_raw if probs[interventions] is p_raw else eos_margin(
            stages[interventions - 1].logits, numbers[interventions]["top_p"], numbers[interventions]["top_ids"], eos),
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
    notes = [lambda s: RAW_NOTE] + [stage.note for stage in stages]
    at = {key: place.start for key, place in layout.items()}  # where a one-number column is in a row's list
    top_ids, top_p_raw, top_p = layout["top_ids"], layout["top_p_raw"], layout["top_p"]
    records = []
    for slot, values in enumerate(packed):
        token_id = int(values[at["chosen"]])
        records.append(StepRecord(
            step=0, token_id=token_id, token=texts[token_id],
            p_eos_raw=values[at["p_eos_raw"]], p_eos=values[at["p_eos"]],
            p_chosen_raw=values[at["p_chosen_raw"]], p_chosen=values[at["p_chosen"]],
            entropy_raw=values[at["entropy_raw"]], entropy=values[at["entropy"]],
            eos_margin_raw=finite(values[at["eos_margin_raw"]]), eos_margin=finite(values[at["eos_margin"]]),
            top_k=[TopToken(int(t), texts[int(t)], pr, p) for t, pr, p in
                   zip(values[top_ids], values[top_p_raw], values[top_p])],
            stages=LazyStages(functools.partial(stage_table, texts, names, notes, layout, values, slot)),
        ))
    return records


def stage_table(texts: TokenTexts, names: list[str], notes: list[Note], layout: dict, values: list[float],
                slot: int) -> list[Stage]:
    """One row's stage table at one step, from the numbers :func:`step_records` kept for it (``values``,
    each key's place in it in ``layout``). It holds no reference to the comparison, so a trace kept after its run
    does not keep the model alive."""
    table = []
    for index, (name, note) in enumerate(zip(names, notes)):
        before = max(index - 1, 0)
        kept, kept_before = int(values[layout[index, "kept"].start]), int(values[layout[before, "kept"].start])
        p_eos, p_eos_before = values[layout[index, "p_eos"].start], values[layout[before, "p_eos"].start]
        changed = layout.get((index, "changed"))
        facts = StageFacts(slot=slot, kept=kept, kept_before=kept_before, p_eos_before=p_eos_before, p_eos=p_eos,
                           changed=None if changed is None else int(values[changed.start]))
        top = [(int(t), texts[int(t)], p) for t, p in zip(values[layout[index, "top_ids"]],
                                                         values[layout[index, "top_p"]])]
        table.append(Stage(name, p_eos, kept, top, note(facts)))
    return table
