"""Sampling warpers that give transformers' results for less work per decode step.

transformers' ``TopPLogitsWarper`` sorts the whole vocabulary of every row at every step to find the few tokens
whose probabilities add up to ``top_p``; on a CPU that sort was 42 % of a sampled step of the decode loop (64 rows
of a 32k vocabulary). The tokens top-p keeps are almost always among the few hundred most likely, so
:class:`PartialTopPLogitsWarper` looks only at those: it takes them with ``topk``, adds up the rest of the
distribution once, and decides each candidate the way the full sort would. Where that decision could come out
otherwise — the kept tokens reach beyond the candidates, a cumulative sum lies within rounding of the threshold,
or equal logits straddle the cut — the row goes through transformers' own warper, so the kept tokens are always
the ones ``generate()`` keeps.

    >>> import torch
    >>> from transformers import TopPLogitsWarper
    >>> scores = torch.randn(3, 5000, generator=torch.Generator().manual_seed(0)) * 4
    >>> ours = PartialTopPLogitsWarper(0.9)(None, scores)
    >>> torch.equal(ours, TopPLogitsWarper(0.9)(None, scores))
    True
"""

from __future__ import annotations

import torch
from transformers import TopPLogitsWarper

CANDIDATES = (64, 512)  # tokens examined per row, the second only for rows the first cannot decide
MARGIN = 1e-5  # a cumulative probability this close to 1 - top_p is decided by the full sort (float rounding)


class PartialTopPLogitsWarper(TopPLogitsWarper):
    """``TopPLogitsWarper(top_p)`` computed from each row's most likely tokens (same output): its 64 likeliest,
    then 512 for the rows those cannot decide, then the full sort."""

    def __init__(self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1,
                 candidates: tuple[int, ...] = CANDIDATES):
        super().__init__(top_p, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)
        self.candidates = candidates

    def __call__(self, input_ids, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.dtype != torch.float32:  # half-precision sums round too coarsely for the margin
            return super().__call__(input_ids, scores)
        # Every logit removed, then each row's kept candidates written back: a fill and a small scatter, where a
        # boolean mask over the vocabulary (masked_fill) takes passes the CPU does not vectorise.
        out = torch.full_like(scores, self.filter_value)
        probs = torch.softmax(scores, dim=-1)
        rows = torch.arange(scores.shape[0])
        for k in self.candidates:
            if k >= scores.shape[-1] or k <= self.min_tokens_to_keep or not len(rows):
                break
            every_row = len(rows) == len(scores)
            part = scores if every_row else scores.index_select(0, rows)
            ids, values, unsure = self._from_candidates(part, probs if every_row else probs.index_select(0, rows), k)
            # Rows left unsure get whole rows written by a later pass or by the full sort.
            if every_row:
                out.scatter_(-1, ids, values)
            else:
                out.index_copy_(0, rows, torch.full_like(part, self.filter_value).scatter_(-1, ids, values))
            rows = rows[unsure]
        if len(rows):
            out.index_copy_(0, rows, super().__call__(input_ids, scores.index_select(0, rows)))
        return out

    def _from_candidates(self, scores: torch.Tensor, probs: torch.Tensor,
                         k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's top-p from its ``k`` likeliest tokens: their ids, their logits (the filter value where
        removed), and which rows that cannot decide exactly."""
        top = torch.topk(scores, k + 1, dim=-1)  # one more than kept at most: the cut's neighbour, for ties
        top_probs = probs.gather(-1, top.indices[:, :k]).double()
        # The full sort's ascending cumulative sum at each candidate: everything below the candidates, plus the
        # candidates from the smallest up to it (summed in float64, as torch's cumsum accumulates).
        below = probs.sum(-1, dtype=torch.float64) - top_probs.sum(-1)
        cumulative = below[:, None] + top_probs.flip(-1).cumsum(-1).flip(-1)
        threshold = 1 - self.top_p
        remove = cumulative <= threshold
        remove[:, : self.min_tokens_to_keep] = False
        kept = (~remove).sum(-1)
        # Rows this cannot decide: the outside tokens might be kept, a sum sits on the threshold, or the last kept
        # logit ties with the first removed one (whichever the sort put first would be kept).
        cut_value = top.values.gather(-1, (kept - 1)[:, None])[:, 0]
        next_value = top.values.gather(-1, kept[:, None])[:, 0]
        unsure = ((below > threshold - MARGIN) | ((cumulative - threshold).abs() < MARGIN).any(-1)
                  | (cut_value == next_value))
        return top.indices[:, :k], top.values[:, :k].masked_fill(remove, self.filter_value), unsure
