"""Which tokens of a training example are supervised, and is the end token one of them?

One view of ``input_ids`` + ``labels`` shared by the EOS doctor's training-example view and the fine-tune lab's
recipe preview, in the terminal and in the page. Labels are aligned with the inputs as Hugging Face trainers pass
them (the model shifts them itself): a token is supervised when its label is not -100.

>>> tokens = labelled_tokens(["Hi", " there", "</s>"], [5, 6, 2], [-100, 6, 2], end_ids={2})
>>> summary(tokens)
'2 of 3 tokens supervised; end token 2 at 2: supervised.'
>>> to_text(tokens)
'Hi ·there[6] </s>[2]⏹'
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips: a masked (unsupervised) token


def visible(piece: str) -> str:
    """A token's text with whitespace drawn as marks (a newline is often exactly where EOS should be).

    >>> visible(" a\\n")
    '·a↵'
    """
    return piece.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


@dataclass(frozen=True)
class LabelledToken:
    index: int
    id: int
    piece: str  # the token's text as the tokenizer decodes it alone
    label: int
    end: bool  # one of the model's end token ids

    @property
    def supervised(self) -> bool:
        return self.label != IGNORE_INDEX


def labelled_tokens(pieces: Sequence[str], input_ids: Sequence[int], labels: Sequence[int] | None,
                    end_ids: Collection[int]) -> list[LabelledToken]:
    """Pair each input token with its label (``labels=None``: every token supervised, as a causal LM trainer
    does without a mask)."""
    if labels is None:
        labels = list(input_ids)
    if len(labels) != len(input_ids):
        raise ValueError(f"labels has {len(labels)} entries for {len(input_ids)} input ids")
    return [LabelledToken(i, int(t), piece, int(label), int(t) in end_ids)
            for i, (piece, t, label) in enumerate(zip(pieces, input_ids, labels))]


def tokens_of(tokenizer, input_ids: Sequence[int], labels: Sequence[int] | None,
              end_ids: Collection[int]) -> list[LabelledToken]:
    """:func:`labelled_tokens` with each token's text decoded by ``tokenizer`` (special tokens kept)."""
    pieces = [tokenizer.decode([int(t)], skip_special_tokens=False) for t in input_ids]
    return labelled_tokens(pieces, input_ids, labels, end_ids)


def summary(tokens: Sequence[LabelledToken]) -> str:
    """One sentence: how much is supervised and what happens to each end token."""
    supervised = sum(t.supervised for t in tokens)
    ends = [t for t in tokens if t.end]
    text = f"{supervised} of {len(tokens)} tokens supervised"
    if not ends:
        return text + "; no end token in the example: the model is never shown where to stop."
    verdicts = ", ".join(f"{t.id} at {t.index}: {'supervised' if t.supervised else 'masked (label -100)'}"
                         for t in ends)
    return text + f"; end token {verdicts}."


def to_text(tokens: Sequence[LabelledToken]) -> str:
    """The terminal form: a supervised token is followed by its ``[label]``; an end token by ⏹."""
    return " ".join(visible(t.piece) + (f"[{t.label}]" if t.supervised else "") + ("⏹" if t.end else "")
                    for t in tokens)


def to_html(tokens: Sequence[LabelledToken]) -> str:
    """The page form: each token a box, shaded when supervised, its label id under it, end tokens badged."""
    cells = []
    for t in tokens:
        kind = "sup" if t.supervised else "masked"
        badge = '<b class="sv-end">end</b>' if t.end else ""
        label = t.label if t.supervised else "-100"
        cells.append(f'<span class="sv-tok sv-{kind}{" sv-is-end" if t.end else ""}" '
                     f'title="index {t.index} · id {t.id} · label {label}">'
                     f'<span class="sv-piece">{html.escape(visible(t.piece))}</span>'
                     f'<span class="sv-label">{label}</span>{badge}</span>')
    return (f'<div class="sv-example"><p class="sv-summary">{html.escape(summary(tokens))}</p>'
            f'<div class="sv-tokens">{"".join(cells)}</div></div>')


STYLE = """
.sv-tokens { display: flex; flex-wrap: wrap; gap: 2px; font-family: monospace; font-size: 12px; }
.sv-tok { display: inline-flex; flex-direction: column; align-items: center; padding: 1px 3px; border-radius: 3px;
          border: 1px solid #ccc; }
.sv-sup { background: #c8e6c9; border-color: #66bb6a; }
.sv-masked { background: #eee; color: #888; text-decoration: line-through; text-decoration-color: #bbb; }
.sv-label { font-size: 9px; color: #555; }
.sv-is-end { outline: 2px solid #d32f2f; }
.sv-end { font-size: 9px; color: #fff; background: #d32f2f; border-radius: 2px; padding: 0 2px; }
"""
