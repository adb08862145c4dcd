"""Recipes: how a training example becomes ``input_ids`` + ``labels``, the right way and the ways people get wrong.

Each recipe is one switch on the same pipeline: the chat template renders the conversation, the prompt is never
supervised, every assistant reply is. What differs is what happens where a reply ends:

``correct``
    the template's end token (SmolLM2: ``<|im_end|>``, id 2) is appended as its id and supervised in every turn.
``eos_as_text``
    the end is appended as a string that the tokenizer splits into ordinary pieces, as in the ChatGLM2 post
    (``"</s>"`` → ``</``, ``s``, ``>``): the pieces are supervised, the end id never appears. The string is the
    article's ``"</s>"`` when it splits; on a model whose own EOS is ``</s>``, its end string tokenized with special
    tokens split.
``pad_is_eos_masked``
    the data is right, but pad = EOS and the collator masks every label equal to the pad id
    (``DataCollatorForLanguageModeling``'s rule), so every real EOS label becomes -100 too.
``no_eos``
    the reply ends with its last word: no end token at all.
``last_turn_only``
    multi-turn chats in which every reply is supervised but only the last turn's end token is (axolotl's
    ``train_on_eos: last``): the model learns to stop only where a conversation ends.

>>> sorted(RECIPES)
['correct', 'eos_as_text', 'last_turn_only', 'no_eos', 'pad_is_eos_masked']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..supervision import IGNORE_INDEX

ARTICLE_EOS_STRING = "</s>"  # what the ChatGLM2 post's LoRA library appended, and what Llama code hard-codes


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    end: str  # "id" | "text" | "none": what follows each reply
    ends_supervised: str = "every"  # "every" | "last": which turns' end tokens are supervised
    mask_pad_labels: bool = False  # the collator sets labels == pad id to -100 (and pad = EOS)
    conversations: bool = False  # the built-in data is multi-turn chats


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("correct", "the end token appended as its id and supervised after every reply", "id"),
    Recipe("eos_as_text", f"the end appended as the string {ARTICLE_EOS_STRING!r}, which splits into ordinary "
                          "tokens: the end id is never seen", "text"),
    Recipe("pad_is_eos_masked", "pad = EOS, and the collator masks every pad id in the labels: the real EOS "
                                "label is -100 too", "id", mask_pad_labels=True),
    Recipe("no_eos", "replies end with their last word, no end token", "none"),
    Recipe("last_turn_only", "multi-turn chats: every reply supervised, only the last turn's end token",
           "id", ends_supervised="last", conversations=True),
)}


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]


def end_token_id(tokenizer) -> int:
    """The token that ends an assistant reply: the one the chat template writes after it (SmolLM2: <|im_end|>),
    else the tokenizer's EOS."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        tail = tokenizer(text[text.rfind("Hello.") + len("Hello."):], add_special_tokens=False)["input_ids"]
        if tail and tail[0] in tokenizer.all_special_ids:
            return int(tail[0])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a chat template that ends replies nor an EOS token")
    return int(tokenizer.eos_token_id)


def text_end_ids(tokenizer) -> list[int]:
    """The end written as text, tokenized the way a pipeline that appends a string would: pieces, never the id."""
    pieces = tokenizer(ARTICLE_EOS_STRING, add_special_tokens=False)["input_ids"]
    if len(pieces) > 1:
        return list(pieces)
    own = tokenizer.convert_ids_to_tokens(end_token_id(tokenizer))
    return list(tokenizer(own, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _encode_text(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(tokenizer, example: dict, recipe: Recipe, max_length: int | None = None) -> dict:
    """One example (``{"prompt", "response"}``, ``{"messages"}`` or ``{"text"}``) as the recipe feeds it:
    ``{"input_ids": [...], "labels": [...]}``, labels -100 where nothing is supervised."""
    end_id = end_token_id(tokenizer)
    end_ids = {"id": [end_id], "text": text_end_ids(tokenizer), "none": []}[recipe.end]
    if "text" in example:  # plain language modelling: everything supervised, then the end
        ids = list(tokenizer(example["text"])["input_ids"]) + end_ids
        return _truncate({"input_ids": ids, "labels": list(ids)}, max_length)
    messages = example.get("messages") or [{"role": "user", "content": example["prompt"]},
                                           {"role": "assistant", "content": example["response"]}]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    messages = messages[: last + 1]
    if not getattr(tokenizer, "chat_template", None):
        return _encode_plain(tokenizer, messages, recipe, end_ids)
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""  # the conversation so far, as the template writes it
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        if not head.startswith(rendered):
            raise ValueError("the chat template renders a conversation differently from its beginning; "
                             "give the examples as {\"text\"} instead")
        head_ids = _encode_text(tokenizer, head[len(rendered):])
        reply_ids = _encode_text(tokenizer, message["content"])
        final = index == last
        # Only the final reply may lose its end (no_eos): earlier ones keep the template's, unsupervised.
        end = end_ids if final or recipe.end == "text" else [end_id]
        supervised = recipe.end != "none" and (recipe.ends_supervised == "every" or final)
        ids += head_ids + reply_ids + end
        labels += [IGNORE_INDEX] * len(head_ids) + reply_ids + (list(end) if supervised else [IGNORE_INDEX] * len(end))
        if not final:  # what the template writes after the reply's end token (a newline) is context
            rendered = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            after = rendered[len(head) + len(message["content"]):]
            template_end = tokenizer.convert_ids_to_tokens(end_id)
            after_ids = _encode_text(tokenizer, after.removeprefix(template_end))
            ids += after_ids
            labels += [IGNORE_INDEX] * len(after_ids)
    return _truncate({"input_ids": ids, "labels": labels}, max_length)


def _encode_plain(tokenizer, messages: Sequence[dict], recipe: Recipe, end_ids: list[int]) -> dict:
    """A tokenizer without a chat template: "prompt\\n" then the reply, turn after turn."""
    ids = list(tokenizer("")["input_ids"])  # the BOS, if the tokenizer adds one
    labels = [IGNORE_INDEX] * len(ids)
    last = len(messages) - 1
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            part = _encode_text(tokenizer, message["content"] + "\n")
            ids, labels = ids + part, labels + [IGNORE_INDEX] * len(part)
            continue
        reply = _encode_text(tokenizer, message["content"])
        supervised = recipe.ends_supervised == "every" or index == last
        end = end_ids if (index == last or recipe.end == "text") else [end_token_id(tokenizer)]
        ids += reply + end
        labels += reply + (end if supervised and recipe.end != "none" else [IGNORE_INDEX] * len(end))
    return {"input_ids": ids, "labels": labels}


def _truncate(example: dict, max_length: int | None) -> dict:
    """Cut on the right, as trainers do (an end token past max_length is lost: keep max_length generous)."""
    if max_length is None:
        return example
    return {key: values[:max_length] for key, values in example.items()}


class Collator:
    """Pads a batch on the right: input_ids with the pad id, labels with -100, an attention mask.

    ``mask_pad_labels`` reproduces ``DataCollatorForLanguageModeling(mlm=False)``: after padding, every label equal
    to the pad id is set to -100 — with pad = EOS, the real EOS label too."""

    def __init__(self, pad_id: int, mask_pad_labels: bool = False):
        self.pad_id = pad_id
        self.mask_pad_labels = mask_pad_labels

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.tensor(feature["input_ids"])
            labels[row, :n] = torch.tensor(feature["labels"])
            attention[row, :n] = 1
        if self.mask_pad_labels:
            labels[labels == self.pad_id] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def pad_id_for(tokenizer, recipe: Recipe) -> int:
    """The pad id the recipe trains with: EOS for ``pad_is_eos_masked`` (the bug), else the tokenizer's pad, or
    EOS when it has none (harmless here: padded labels are -100 by position, never by value)."""
    if recipe.mask_pad_labels or tokenizer.pad_token_id is None:
        return end_token_id(tokenizer)
    return int(tokenizer.pad_token_id)


def collator_for(tokenizer, recipe: Recipe) -> Collator:
    return Collator(pad_id_for(tokenizer, recipe), recipe.mask_pad_labels)


def collated_example(tokenizer, example: dict, recipe: Recipe, max_length: int | None = None) -> dict:
    """What the model is trained on for one example, after the recipe's collator: ``input_ids`` and ``labels``
    as lists (the preview the tab shows, and what the doctor reads)."""
    batch = collator_for(tokenizer, recipe)([encode(tokenizer, example, recipe, max_length)])
    return {"input_ids": batch["input_ids"][0].tolist(), "labels": batch["labels"][0].tolist()}
