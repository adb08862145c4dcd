"""EOS doctor: find out why a model doesn't stop.

A model stops when ``generate()`` samples a token id listed in ``generation_config.eos_token_id``. That
fails in a handful of well-known ways, each of which this module checks with the real tokenizer, model
and (optionally) a sample of the training data:

1. ``eos_ids_agree`` - the tokenizer, the model config and the generation config name different EOS ids.
2. ``pad_is_eos`` - the pad token is an EOS token, so label masking hides every EOS from the loss.
3. ``eos_string_splits`` - the EOS written as text (``text + "</s>"``) is split into ordinary tokens.
4. ``tokenizer_appends_eos`` - ``add_eos_token`` promises an EOS that encoding does not add.
5. ``chat_template_eos`` - the chat template ends assistant turns with a token generation does not stop on.
6. ``generation_config_blocks_eos`` - the generation config bans or delays EOS.
7. ``eos_embedding`` - the EOS embedding rows look untrained, or tokenizer and embeddings disagree in size.
8. ``adapter_trains_new_tokens`` - a LoRA adapter leaves newly added special tokens untrained.
9. ``sample_ends_with_eos`` - training examples that do not end with EOS, or lose it to truncation.
10. ``p_eos_at_answer_end`` - teacher-forced p(EOS) right after complete answers.

Example::

    from playground.models import load_model
    from playground.doctor import diagnose, report_markdown

    print(report_markdown(diagnose(load_model())))

or ``python -m playground doctor --model default --json``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from playground.models import LoadedModel, ModelLoadError, eos_token_ids

STATUSES = ("ok", "warning", "problem", "not_applicable")
STATUS_ICONS = {"ok": "✅", "warning": "⚠️", "problem": "❌", "not_applicable": "➖"}

# Short, complete question/answer pairs: right after each answer a chat model should want to stop.
PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("Is ice colder than steam? Answer yes or no.", "Yes."),
    ("What can I do in Paris?",
     "You can visit the Eiffel Tower, walk along the Seine, and see the Mona Lisa at the Louvre."),
)

# Teacher forcing runs one forward pass per example; a few dozen are plenty for a distribution.
MAX_FORCED_EXAMPLES = 16
# Collating a handful of examples is enough to show what happens to the EOS label.
MAX_COLLATED_EXAMPLES = 8
# Below these median p(EOS) values the model has (practically) not learned to stop after an answer.
P_EOS_PROBLEM = 0.01
P_EOS_WARNING = 0.1
# |z| of an embedding row norm against all rows; trained special tokens sit well inside +-4.
Z_WARNING = 4.0
Z_PROBLEM = 6.0

# EOS strings people write into training text by hand (often copied from another model family).
COMMON_EOS_STRINGS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<|eot_id|>", "<eos>", "<|end|>")
_END_LIKE_NAMES = {
    "endoftext", "end_of_text", "im_end", "eot_id", "eom_id", "end", "eos", "end_of_turn",
    "end_of_turn_token", "end_of_sentence", "eot", "endofturn", "return", "end_of_message",
}
_EMBEDDING_NAMES = {"embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings", "embeddings"}
_OUTPUT_NAMES = {"lm_head", "embed_out", "output"}


@dataclass
class Finding:
    """One check's verdict, in plain words, with the actual ids/tokens and a concrete fix."""

    id: str
    title: str
    status: str
    found: str
    why: str
    fix: str
    data: dict = field(default_factory=dict)  # the numbers behind ``found`` (ids, fractions, p values)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Sample loading


def _check_example(example, where: str) -> dict:
    if not isinstance(example, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(example).__name__}")
    if "text" in example:
        if not isinstance(example["text"], str):
            raise ValueError(f"{where}: 'text' must be a string, got {type(example['text']).__name__}")
        return {"text": example["text"]}
    if "prompt" in example and "response" in example:
        for key in ("prompt", "response"):
            if not isinstance(example[key], str):
                raise ValueError(f"{where}: {key!r} must be a string, got {type(example[key]).__name__}")
        return {"prompt": example["prompt"], "response": example["response"]}
    raise ValueError(
        f"{where}: expected {{\"prompt\": ..., \"response\": ...}} or {{\"text\": ...}}, "
        f"got keys {sorted(example)}"
    )


def load_sample(path) -> list[dict]:
    """Read a JSONL training sample: one ``{"prompt", "response"}`` or ``{"text"}`` object per line.

    Blank lines are skipped. Anything else raises ``ValueError`` naming the file and line number.
    """
    path = Path(path)
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            examples.append(_check_example(example, f"{path}, line {number}"))
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return examples


# --------------------------------------------------------------------------------------------------
# Shared context


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    values = value if isinstance(value, (list, tuple)) else [value]
    return [int(v) for v in values if v is not None]


def _looks_like_end(token: str) -> bool:
    """Special tokens that by name end a text or a turn (</s>, <|im_end|>, <|eot_id|>, <end_of_turn>, ...)."""
    if token == "</s>":
        return True
    core = re.sub(r"[<>|｜/\[\]]", "", token).lower().replace("▁", "_").replace(" ", "_")
    return core in _END_LIKE_NAMES


@dataclass
class _Example:
    """One example tokenised the way training would see it, split at the end of the answer."""

    label: str
    text: str
    prefix_ids: list[int]  # everything up to and including the last answer token
    full_ids: list[int]  # the whole example
    end_index: int | None  # index in full_ids of the end token that follows the answer, if any
    eos_as_text: str | None = None  # the end-token string the text ended with, when it did


class _Context:
    """Everything the checks share, computed once: EOS ids from all three sources, the rendered template,
    and the sample (or built-in probes) tokenised and split at the end of each answer."""

    def __init__(self, bundle: LoadedModel, sample, max_length: int):
        self.bundle = bundle
        self.tokenizer = tokenizer = bundle.tokenizer
        self.model = bundle.model
        self.has_adapter = bundle.info.adapter is not None and hasattr(bundle.model, "get_base_model")
        self.base = bundle.model.get_base_model() if self.has_adapter else bundle.model
        self.generation_config = getattr(self.base, "generation_config", None)
        self.max_length = max_length
        self.tokenizer_eos_id = tokenizer.eos_token_id
        self.config_eos_ids = _as_list(getattr(self.base.config, "eos_token_id", None))
        self.stop_ids = _as_list(getattr(self.generation_config, "eos_token_id", None))
        self.all_eos_ids = eos_token_ids(tokenizer, self.base)
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        candidates = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        for token_id in self.special_ids:
            candidates.setdefault(token_id, tokenizer.convert_ids_to_tokens(token_id))
        self.end_like = {int(i): str(t) for i, t in candidates.items() if _looks_like_end(str(t))}
        self.special_ids |= set(candidates)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self._whitespace: dict[int, bool] = {}
        # Whether tokenizer(text) appends an EOS by itself (decides how the answer prefix is cut).
        encoded_a = tokenizer("a")["input_ids"]
        self.encoded_a = encoded_a
        self.appends_eos = bool(encoded_a) and encoded_a[-1] in self.all_eos_ids
        self.template = self._probe_template()
        self.end_ids = list(self.all_eos_ids)
        template_end = self.template.get("end_id") if self.template else None
        if template_end is not None and template_end not in self.end_ids and (
            template_end in self.end_like or template_end in self.special_ids
        ):
            self.end_ids.append(template_end)
        self.sample = [_check_example(ex, f"sample example {i + 1}") for i, ex in enumerate(sample)] if sample else None
        self.sample_examples = [self.encode(ex, f"sample example {i + 1}") for i, ex in enumerate(self.sample or [])]
        self.probe_examples = [
            self.encode({"prompt": q, "response": a}, f"probe {q!r}") for q, a in PROBE_PAIRS
        ]

    # -- token helpers -------------------------------------------------------------------------
    def token(self, token_id: int | None) -> str:
        if token_id is None:
            return "None"
        try:
            return repr(self.tokenizer.convert_ids_to_tokens(int(token_id)))
        except Exception:  # an id beyond the vocabulary
            return "'<out of vocabulary>'"

    def named(self, token_id: int | None) -> str:
        return f"{self.token(token_id)} (id {token_id})"

    def named_list(self, ids) -> str:
        return "[" + ", ".join(self.named(i) for i in ids) + "]" if ids else "[] (none)"

    def pieces(self, ids) -> str:
        return "[" + ", ".join(self.token(i) for i in ids) + "]"

    def is_whitespace(self, token_id: int) -> bool:
        if token_id not in self._whitespace:
            self._whitespace[token_id] = token_id not in self.special_ids and not self.tokenizer.decode([token_id]).strip()
        return self._whitespace[token_id]

    def first_non_whitespace(self, ids) -> tuple[int, int] | None:
        for index, token_id in enumerate(ids):
            if not self.is_whitespace(token_id):
                return index, token_id
        return None

    # -- chat template -------------------------------------------------------------------------
    def render(self, prompt: str, response: str) -> str:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _probe_template(self) -> dict | None:
        if not self.has_template:
            return None
        question, answer = PROBE_PAIRS[0]
        try:
            text = self.render(question, answer)
        except Exception as error:  # templates raise on roles or layouts they do not support
            return {"error": f"{type(error).__name__}: {error}"}
        position = text.rfind(answer)
        if position < 0:
            return {"error": "the rendered conversation does not contain the assistant reply verbatim", "text": text}
        end = position + len(answer)
        tail_text = text[end:]
        tail_ids = self.tokenizer(tail_text, add_special_tokens=False)["input_ids"]
        first = self.first_non_whitespace(tail_ids)
        return {"text": text, "tail_text": tail_text, "tail_ids": tail_ids, "end_id": first[1] if first else None}

    # -- examples ------------------------------------------------------------------------------
    def _answer_end_of_text(self, text: str) -> tuple[int, str | None]:
        """Where the answer of a raw ``text`` example ends: before trailing whitespace and end-token strings."""
        end_strings = ({self.tokenizer.eos_token} | {self.tokenizer.convert_ids_to_tokens(i) for i in self.end_ids}
                       | set(COMMON_EOS_STRINGS))
        end_strings = {s for s in end_strings if isinstance(s, str) and s}
        stripped, matched = text.rstrip(), None
        changed = True
        while changed:
            changed = False
            for end_string in sorted(end_strings, key=len, reverse=True):
                if stripped.endswith(end_string):
                    stripped, matched, changed = stripped[: -len(end_string)].rstrip(), matched or end_string, True
        return len(stripped), matched

    def encode(self, example: dict, label: str) -> _Example:
        tokenizer = self.tokenizer
        eos_as_text = None
        if "text" in example:
            text, add_special = example["text"], True
            answer_end, eos_as_text = self._answer_end_of_text(text)
        elif self.template is not None and "error" not in self.template:
            text, add_special = self.render(example["prompt"], example["response"]), False
            response = example["response"]
            position = text.rfind(response)
            if position < 0 and response.strip():
                response = response.strip()
                position = text.rfind(response)
            if position >= 0:
                answer_end = position + len(response)
            else:  # the template rewrote the reply: treat the rendering like a raw text example
                answer_end, _ = self._answer_end_of_text(text)
        else:
            text, add_special = example["prompt"] + example["response"], True
            answer_end = len(text)
        prefix = tokenizer(text[:answer_end], add_special_tokens=add_special)["input_ids"]
        if add_special and self.appends_eos and prefix and prefix[-1] in self.all_eos_ids:
            prefix = prefix[:-1]
        full = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        split = 0
        while split < min(len(prefix), len(full)) and prefix[split] == full[split]:
            split += 1
        first = self.first_non_whitespace(full[split:])
        end_index = split + first[0] if first and first[1] in self.end_ids else None
        return _Example(label, text, prefix, full, end_index, eos_as_text)

    @property
    def examples(self) -> list[_Example]:
        return self.sample_examples if self.sample is not None else self.probe_examples


# --------------------------------------------------------------------------------------------------
# Checks


def check_eos_ids_agree(ctx: _Context) -> Finding:
    """1. Tokenizer, model config and generation config agree on the EOS ids (generate() reads only the last)."""
    tok_id, cfg, stop = ctx.tokenizer_eos_id, ctx.config_eos_ids, ctx.stop_ids
    found = [
        f"tokenizer.eos_token = {ctx.tokenizer.eos_token!r} (id {tok_id}); "
        f"model.config.eos_token_id = {cfg or None}; generation_config.eos_token_id = {stop or None}.",
    ]
    others = [i for i in ctx.end_like if i not in stop and i != tok_id]
    template_end = ctx.template.get("end_id") if ctx.template else None
    if template_end in others:
        found.append(f"The chat template ends assistant turns with {ctx.named(template_end)}, which generation does "
                     "not stop on (see chat_template_eos).")
    unused = [i for i in others if i != template_end]
    if unused:
        found.append(
            f"Other end-like special tokens that generation does not stop on: {ctx.named_list(unused)}. "
            "That is normal when neither the chat template nor the training data uses them "
            "(p_eos_at_answer_end shows how much probability the model gives them)."
        )
    data = {"tokenizer": tok_id, "model_config": cfg, "generation_config": stop, "other_end_like": others}
    title = "EOS ids agree across tokenizer, model config and generation config"
    why = (
        "generate() stops only on the ids in generation_config.eos_token_id. Training appends "
        "tokenizer.eos_token, so if that id is not in the list the model can emit its learned stop token and "
        "keep going; model.config.eos_token_id is not read by generate() in transformers 5."
    )
    if not stop:
        return Finding("eos_ids_agree", title, "problem", " ".join(found + [
            "generate() has no EOS id at all: it only stops at max_new_tokens."]), why,
            "Give generation an EOS id:\n```python\nmodel.generation_config.eos_token_id = "
            f"{[i for i in ctx.all_eos_ids] or ['tokenizer.eos_token_id']}\n```", data)
    if tok_id is None:
        return Finding("eos_ids_agree", title, "problem", " ".join(found + ["The tokenizer has no EOS token."]),
                       why, "Set one: `tokenizer.eos_token = tokenizer.convert_ids_to_tokens("
                       f"{stop[0]})` so training appends the id generation stops on.", data)
    if tok_id not in stop:
        found.append(
            f"The tokenizer's EOS {ctx.named(tok_id)} is not among the ids generation stops on "
            f"{ctx.named_list(stop)}: a model trained to end with it never stops."
        )
        return Finding("eos_ids_agree", title, "problem", " ".join(found), why,
                       "Stop on both (and save it with the model):\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + [tok_id]}\n"
                       "model.generation_config.save_pretrained(output_dir)\n```", data)
    missing = [i for i in cfg if i not in stop]
    if missing:
        found.append(
            f"model.config lists {ctx.named_list(missing)} but generation_config does not, so generate() only "
            f"uses {ctx.named_list(stop)}"
            + (" - only the first of several EOS ids is used." if len(cfg) > 1 and stop == cfg[:1] else ".")
        )
        return Finding("eos_ids_agree", title, "warning", " ".join(found), why,
                       "Make generation stop on all of them:\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + missing}\n```", data)
    if len(stop) > 1:
        found.append(
            f"Generation stops on {len(stop)} ids but tokenizer.eos_token_id is just {tok_id}: code that passes "
            "eos_token_id=tokenizer.eos_token_id to generate() or stops on it by hand uses only that one."
        )
    fix = "Nothing to fix."
    if others:
        fix = ("Nothing to fix. If the model does emit one of the other end tokens, stop on it too:\n```python\n"
               f"model.generation_config.eos_token_id = {stop + others[:1]}\n```")
    return Finding("eos_ids_agree", title, "ok", " ".join(found), why, fix, data)


def _collate_eos_labels(ctx: _Context, examples: list[_Example]) -> dict:
    """Run DataCollatorForLanguageModeling(mlm=False) and look at the label of each example's final EOS."""
    from transformers import DataCollatorForLanguageModeling

    tokenizer = ctx.tokenizer
    features, positions, appended = [], [], 0
    for example in examples[:MAX_COLLATED_EXAMPLES]:
        if example.end_index is not None:
            ids = example.full_ids[: example.end_index + 1]
        else:  # no EOS in the data: append it by id, as a correct training script would
            ids = example.prefix_ids + [ctx.tokenizer_eos_id]
            appended += 1
        features.append({"input_ids": ids})
        positions.append(len(ids) - 1)
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    batch = collator(features)
    width = batch["labels"].shape[1]
    masked = []
    for row, (feature, position) in enumerate(zip(features, positions)):
        offset = width - len(feature["input_ids"]) if tokenizer.padding_side == "left" else 0
        masked.append(int(batch["labels"][row, offset + position]) == -100)
    return {"collated": len(features), "eos_label_masked": sum(masked), "eos_appended": appended}


def check_pad_is_eos(ctx: _Context) -> Finding:
    """2. pad == EOS: collators that mask pad labels (-100) also mask every EOS, so stopping is never learned."""
    tokenizer = ctx.tokenizer
    pad_id = tokenizer.pad_token_id
    title = "Pad token is distinct from EOS"
    why = (
        "DataCollatorForLanguageModeling(mlm=False), and hand-written `labels[labels == pad_token_id] = -100`, "
        "mask labels by *value*. When pad is an EOS id, every real EOS label becomes -100 too, so the loss never "
        "rewards emitting EOS and a fine-tuned model keeps talking."
    )
    eos_set = list(ctx.end_ids)
    if pad_id is None:
        return Finding("pad_is_eos", title, "warning", "The tokenizer has no pad token; batching will fail.", why,
                       _pad_fix(ctx), {"pad_token_id": None})
    if pad_id not in eos_set:
        return Finding("pad_is_eos", title, "ok",
                       f"pad_token {ctx.named(pad_id)} is not an EOS/end token {ctx.named_list(eos_set)}.", why,
                       "Nothing to fix.", {"pad_token_id": pad_id})
    found = f"pad_token {ctx.named(pad_id)} is the same id as the EOS/end token."
    data: dict = {"pad_token_id": pad_id}
    try:
        result = _collate_eos_labels(ctx, ctx.examples)
    except Exception as error:  # e.g. a tokenizer that cannot pad
        result = None
        found += f" (Could not run DataCollatorForLanguageModeling: {type(error).__name__}: {error}.)"
    if result is not None:
        data.update(result)
        source = "your sample" if ctx.sample is not None else "the built-in example conversations"
        found += (
            f" Running DataCollatorForLanguageModeling(mlm=False) on {result['collated']} of {source}: the label "
            f"of the end token after the answer became -100 in {result['eos_label_masked']} of "
            f"{result['collated']}"
            + (f" ({result['eos_appended']} example(s) had none, so tokenizer.eos_token_id "
               f"{ctx.named(ctx.tokenizer_eos_id)} was appended)." if result["eos_appended"] else ".")
        )
    status = "warning"
    if ctx.sample is not None and result is not None and result["eos_label_masked"]:
        status = "problem"
    elif ctx.sample is None:
        found += " Harmless for generation; it matters when you fine-tune with this tokenizer."
    return Finding("pad_is_eos", title, status, found, why, _pad_fix(ctx), data)


def _pad_fix(ctx: _Context) -> str:
    tokenizer = ctx.tokenizer
    unk_id = tokenizer.unk_token_id
    if unk_id is not None and unk_id not in ctx.end_ids:
        first = (f"Use a token that is not an end token as pad, e.g. the unknown token "
                 f"{ctx.named(unk_id)}:\n```python\ntokenizer.pad_token = tokenizer.unk_token\n"
                 "model.config.pad_token_id = tokenizer.pad_token_id\n```")
    else:
        first = ("Add a dedicated pad token:\n```python\ntokenizer.add_special_tokens({'pad_token': '<|pad|>'})\n"
                 "model.resize_token_embeddings(len(tokenizer))\nmodel.config.pad_token_id = tokenizer.pad_token_id\n```")
    return (first + "\nOr keep pad == EOS but build labels before padding (labels = input_ids[:]) and collate with "
            "DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), which pads labels with -100 instead of "
            "masking by value.")


def check_eos_string_splits(ctx: _Context) -> Finding:
    """3. Writing the EOS as text must give exactly the EOS id, with or without a space before it."""
    tokenizer = ctx.tokenizer
    eos, eos_id = tokenizer.eos_token, ctx.tokenizer_eos_id
    title = "EOS written as text becomes the EOS id"
    why = (
        "Training code often appends the EOS as a string (text + tokenizer.eos_token or a literal '</s>'). If the "
        "tokenizer splits that string into ordinary pieces (ChatGLM2: '</s>' -> '</', 's', '>'), the model learns "
        "to write those pieces, never the id generate() stops on, and rambles until max_new_tokens."
    )
    if eos is None or eos_id is None:
        return Finding("eos_string_splits", title, "not_applicable", "The tokenizer has no EOS token.", why,
                       "See eos_ids_agree.")
    alone = tokenizer(eos, add_special_tokens=False)["input_ids"]
    glued = tokenizer("Hello." + eos, add_special_tokens=False)["input_ids"]
    spaced = tokenizer("Hello. " + eos, add_special_tokens=False)["input_ids"]
    data = {"eos_token": eos, "eos_token_id": eos_id, "alone": alone, "glued": glued, "spaced": spaced}
    found = [
        f"tokenizer({eos!r}) -> {ctx.pieces(alone)} {alone}; 'Hello.' + eos_token -> ends {ctx.pieces(glued[-3:])}; "
        f"'Hello. ' + eos_token -> ends {ctx.pieces(spaced[-3:])}; EOS id is {eos_id}."
    ]
    unk_id = tokenizer.unk_token_id
    if unk_id is not None and eos_id == unk_id and eos != tokenizer.unk_token:
        found.append(f"{eos!r} is not in the vocabulary at all: its id {eos_id} is the unknown token "
                     f"{ctx.token(unk_id)}.")
    healthy = alone == [eos_id] and glued[-1:] == [eos_id] and spaced[-1:] == [eos_id]
    if healthy and len(found) == 1:
        return Finding("eos_string_splits", title, "ok", found[0] + " The string form is safe.", why,
                       "Nothing to fix (appending tokenizer.eos_token_id is still the safest habit).", data)
    if alone != [eos_id]:
        found.append(f"The string {eos!r} splits into {len(alone)} ordinary token(s) instead of id {eos_id}.")
    elif not healthy:
        found.append("Glued to text, the EOS string does not end in the EOS id.")
    fix = ("Append the id, not the string:\n```python\nids = tokenizer(prompt + response)['input_ids'] + "
           "[tokenizer.eos_token_id]\n```\nIf the EOS should be a real special token, register it and resize:\n"
           f"```python\ntokenizer.add_special_tokens({{'eos_token': {eos!r}}})\nmodel.resize_token_embeddings(len(tokenizer))\n"
           "model.generation_config.eos_token_id = tokenizer.eos_token_id\n```")
    return Finding("eos_string_splits", title, "problem", " ".join(found), why, fix, data)


def check_tokenizer_appends_eos(ctx: _Context) -> Finding:
    """4. add_eos_token (or the post-processor) promises EOS: encoding 'a' must then end with it."""
    tokenizer = ctx.tokenizer
    promised = bool(getattr(tokenizer, "add_eos_token", False))
    ids = ctx.encoded_a
    data = {"add_eos_token": promised, "encoded_a": ids, "appends_eos": ctx.appends_eos}
    title = "Tokenizer adds EOS when it says it does"
    why = (
        "Scripts that rely on tokenizer(text) to add the EOS (add_eos_token=True) silently train without "
        "any EOS when the setting is not applied - a known trap with fast Llama tokenizers whose post-processor "
        "was not updated."
    )
    found = f"add_eos_token = {promised}; tokenizer('a') -> {ids} {ctx.pieces(ids)}."
    if promised and not ctx.appends_eos:
        return Finding("tokenizer_appends_eos", title, "problem",
                       found + " The tokenizer promises an EOS but does not add one.", why,
                       "Do not rely on the flag; append the id yourself:\n```python\nids = tokenizer(text)['input_ids'] "
                       "+ [tokenizer.eos_token_id]\n```\nor rebuild the post-processor, e.g. "
                       "`tokenizer.add_eos_token = True` on a tokenizer class that updates it (and re-check this).",
                       data)
    if ctx.appends_eos:
        return Finding("tokenizer_appends_eos", title, "ok",
                       found + " tokenizer(text) appends the EOS itself - do not append it a second time.", why,
                       "Nothing to fix.", data)
    where = ("the chat template" if ctx.has_template else "nothing else")
    return Finding("tokenizer_appends_eos", title, "ok",
                   found + f" The tokenizer does not add EOS by itself (and does not claim to); {where} has to put it "
                   "there - see chat_template_eos and sample_ends_with_eos.", why,
                   "Nothing to fix; when you tokenise raw text for training, append tokenizer.eos_token_id.", data)


def check_chat_template_eos(ctx: _Context) -> Finding:
    """5. The chat template ends an assistant turn with a token that generation stops on."""
    title = "Chat template ends the assistant turn with a stop token"
    why = (
        "A chat model learns to end its reply with whatever the template writes after assistant turns. If that "
        "token is not in generation_config.eos_token_id (or the template writes nothing), the model 'stops' by "
        "emitting a token generate() ignores and carries on with a new turn or rambles."
    )
    template = ctx.template
    if template is None:
        return Finding("chat_template_eos", title, "not_applicable", "The tokenizer has no chat template.", why,
                       "Nothing to check; make sure raw-text training appends tokenizer.eos_token_id.")
    if "error" in template:
        return Finding("chat_template_eos", title, "warning",
                       f"Could not render a one-turn conversation: {template['error']}.", why,
                       "Check that the template accepts [{'role': 'user'}, {'role': 'assistant'}] messages.")
    tail_ids, end_id, stop = template["tail_ids"], template["end_id"], ctx.stop_ids
    found = (f"An assistant reply renders as ...{PROBE_PAIRS[0][1][-12:]!r} + {template['tail_text']!r}, "
             f"i.e. tokens {ctx.pieces(tail_ids)} {tail_ids} after the answer; generation stops on "
             f"{ctx.named_list(stop)}.")
    data = {"tail_text": template["tail_text"], "tail_ids": tail_ids, "end_id": end_id, "stop_ids": stop}
    if end_id is not None and end_id in stop:
        return Finding("chat_template_eos", title, "ok",
                       found + f" The first token after the answer, {ctx.named(end_id)}, stops generation.", why,
                       "Nothing to fix.", data)
    later = [i for i in tail_ids if i in stop]
    if later:
        return Finding("chat_template_eos", title, "warning",
                       found + f" A stop token follows, but only after {ctx.named(end_id)}; the model must emit "
                       "that first.", why,
                       f"Also stop on the turn end:\n```python\nmodel.generation_config.eos_token_id = {stop + [end_id]}\n```",
                       data)
    if end_id is not None and (end_id in ctx.end_like or end_id in ctx.all_eos_ids):
        return Finding("chat_template_eos", title, "problem",
                       found + f" The turn ends with {ctx.named(end_id)}, which generation does not stop on.", why,
                       "Stop on the token the template uses:\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + [end_id]}\n"
                       "model.generation_config.save_pretrained(output_dir)\n```", data)
    eos = ctx.tokenizer.eos_token
    return Finding("chat_template_eos", title, "problem",
                   found + " No EOS/end token follows the assistant answer: a model trained on this template never "
                   "learns to stop.", why,
                   "End assistant turns with the EOS in the template, e.g.\n```jinja\n"
                   "{{ message['content'] + eos_token }}\n```\n"
                   f"(eos_token is {eos!r}); then retrain or at least re-run this check.", data)


def check_generation_config_blocks_eos(ctx: _Context) -> Finding:
    """6. Generation config settings that ban EOS (suppress_tokens, bad_words_ids) or delay it (min lengths)."""
    gc = ctx.generation_config
    title = "Generation config does not ban or delay EOS"
    why = (
        "suppress_tokens and bad_words_ids set the EOS logit to -inf, so the model can never stop; "
        "min_length/min_new_tokens do the same for the first N tokens; a negative sequence_bias or a "
        "repetition_penalty > 1 (the EOS already appears in a chat prompt) make stopping less likely."
    )
    if gc is None:
        return Finding("generation_config_blocks_eos", title, "not_applicable", "The model has no generation config.",
                       why, "Nothing to check.")
    eos_ids = set(ctx.end_ids)
    problems, warnings = [], []
    suppressed = [i for i in _as_list(getattr(gc, "suppress_tokens", None)) if i in eos_ids]
    if suppressed:
        problems.append(f"suppress_tokens contains {ctx.named_list(suppressed)}: EOS can never be generated.")
    bad = [seq for seq in (getattr(gc, "bad_words_ids", None) or []) if len(seq) == 1 and seq[0] in eos_ids]
    if bad:
        problems.append(f"bad_words_ids bans {ctx.named_list([s[0] for s in bad])}: EOS can never be generated.")
    begin = [i for i in _as_list(getattr(gc, "begin_suppress_tokens", None)) if i in eos_ids]
    if begin:
        warnings.append(f"begin_suppress_tokens contains {ctx.named_list(begin)}: EOS is banned at the first step.")
    min_new = getattr(gc, "min_new_tokens", None) or 0
    if min_new > 0:
        warnings.append(f"min_new_tokens = {min_new}: EOS is banned for the first {min_new} new tokens.")
    min_length = getattr(gc, "min_length", None) or 0
    if min_length > 0:
        warnings.append(f"min_length = {min_length}: EOS is banned until prompt + output reach {min_length} tokens.")
    bias = getattr(gc, "sequence_bias", None) or {}
    items = bias.items() if isinstance(bias, dict) else [(tuple(k), v) for k, v in bias]
    for key, value in items:
        if len(key) == 1 and key[0] in eos_ids and value < 0:
            (problems if value <= -10 else warnings).append(f"sequence_bias gives {ctx.named(key[0])} {value}.")
    penalty = getattr(gc, "repetition_penalty", None) or 1.0
    if penalty > 1.0:
        warnings.append(f"repetition_penalty = {penalty}: once an EOS/end token is in the prompt (every chat turn "
                        "ends with one) its logit is divided by it.")
    data = {"problems": problems, "warnings": warnings}
    fields = ("suppress_tokens, bad_words_ids, begin_suppress_tokens, min_new_tokens, min_length, sequence_bias, "
              "repetition_penalty")
    if not problems and not warnings:
        return Finding("generation_config_blocks_eos", title, "ok", f"None of {fields} touches the EOS ids "
                       f"{ctx.named_list(sorted(eos_ids))}.", why, "Nothing to fix.", data)
    fix = ("Remove the EOS ids from these settings, e.g.\n```python\ngc = model.generation_config\n"
           "gc.suppress_tokens = [t for t in (gc.suppress_tokens or []) if t not in eos_ids] or None\n"
           "gc.bad_words_ids = None\ngc.min_new_tokens = None\ngc.min_length = 0\n"
           "gc.save_pretrained(output_dir)\n```")
    return Finding("generation_config_blocks_eos", title, "problem" if problems else "warning",
                   " ".join(problems + warnings), why, fix, data)


def _row_norms(weight: torch.Tensor) -> torch.Tensor:
    return torch.cat([weight[i:i + 8192].detach().float().norm(dim=1) for i in range(0, weight.shape[0], 8192)])


def _identical_rows(weight: torch.Tensor, row: int) -> int:
    target = weight[row].detach()
    return sum(int((weight[i:i + 8192].detach() == target).all(dim=1).sum()) for i in range(0, weight.shape[0], 8192)) - 1


def check_eos_embedding(ctx: _Context) -> Finding:
    """7. EOS rows of the input/output embeddings look trained, and the tokenizer fits the embeddings."""
    title = "EOS embedding rows look trained"
    why = (
        "A newly added EOS starts with an untrained embedding row (zeros, a copy of other rows, or an outlier norm). "
        "Its output row decides p(EOS): if it was never trained, the model cannot put probability on stopping. "
        "Token ids at or beyond the number of embedding rows crash or read garbage."
    )
    base, tokenizer = ctx.base, ctx.tokenizer
    layers = [("input", base.get_input_embeddings())]
    output = base.get_output_embeddings()
    tied = output is not None and output.weight.data_ptr() == layers[0][1].weight.data_ptr()
    if output is not None and not tied:
        layers.append(("output", output))
    rows = layers[0][1].weight.shape[0]
    ids = [i for i in ctx.end_ids]
    problems, warnings, notes, data = [], [], [], {"tokenizer_length": len(tokenizer), "embedding_rows": rows,
                                                  "base_vocab_size": getattr(tokenizer, "vocab_size", None),
                                                  "rows": {}}
    if len(tokenizer) > rows:
        problems.append(f"The tokenizer has {len(tokenizer)} tokens but the embeddings only {rows} rows: "
                        f"ids {rows}..{len(tokenizer) - 1} are out of range.")
    elif len(tokenizer) < rows:
        notes.append(f"{rows} embedding rows for {len(tokenizer)} tokens (padding rows are normal).")
    if tied:
        notes.append("Input and output embeddings are tied (one matrix).")
    base_vocab = getattr(tokenizer, "vocab_size", None)
    for kind, layer in layers:
        weight = layer.weight
        if weight.dim() != 2 or not weight.is_floating_point():
            notes.append(f"The {kind} embedding is quantized; its rows were not inspected.")
            continue
        norms = _row_norms(weight)
        mean, std = norms.mean().item(), norms.std().item()
        for token_id in ids:
            if token_id >= weight.shape[0]:
                problems.append(f"{ctx.named(token_id)} has no {kind} embedding row ({weight.shape[0]} rows).")
                continue
            norm = norms[token_id].item()
            z = (norm - mean) / std if std > 0 else 0.0
            copies = _identical_rows(weight, token_id)
            data["rows"][f"{kind}:{token_id}"] = {"norm": round(norm, 4), "z": round(z, 2), "identical_rows": copies}
            text = (f"{kind} row of {ctx.named(token_id)}: norm {norm:.3g} vs mean {mean:.3g} +- {std:.2g} "
                    f"(z = {z:+.1f})")
            # The output row sets the EOS logit, so it decides whether the model can stop; the input row only
            # shapes what the model does with an EOS already in its context.
            severe = problems if kind == "output" or tied else warnings
            if norm == 0.0:
                reason = " - the row is all zeros"
                if getattr(layer, "padding_idx", None) == token_id:
                    reason += " (it is the embedding's padding_idx, which is never trained: pad_token_id is this EOS)"
                severe.append(text + reason + ".")
            elif abs(z) >= Z_PROBLEM:
                severe.append(text + " - far outside every other row.")
            elif abs(z) >= Z_WARNING:
                warnings.append(text + " - unusual.")
            elif copies > 0:
                warnings.append(text + f" - bit-identical to {copies} other row(s), as rows that were never "
                                "trained are.")
            else:
                notes.append(text + ".")
    added = [i for i in ids if base_vocab is not None and i >= base_vocab]
    if added:
        notes.append(f"{ctx.named_list(added)} were added after the base vocabulary ({base_vocab} tokens): their "
                     "rows only learn what fine-tuning teaches them.")
    data["added_end_ids"] = added
    found = " ".join(problems + warnings + notes)
    fix = ("Make the tokenizer and embeddings agree and train the EOS rows:\n```python\n"
           "model.resize_token_embeddings(len(tokenizer))\n# full fine-tune, or with LoRA:\n"
           "LoraConfig(..., modules_to_save=['embed_tokens', 'lm_head'])\n```\n"
           "A row that was zeroed or copied needs training (or re-initialising from the mean of the trained rows).")
    status = "problem" if problems else "warning" if warnings else "ok"
    return Finding("eos_embedding", title, status, found, why, fix if status != "ok" else "Nothing to fix.", data)


def check_adapter_trains_new_tokens(ctx: _Context) -> Finding:
    """7b. With a LoRA adapter, added special tokens need trained embedding/lm_head rows (modules_to_save)."""
    title = "LoRA adapter trains the rows of added special tokens"
    why = (
        "LoRA only trains low-rank deltas of the target layers. A special token added for fine-tuning (a new EOS, "
        "<|im_end|> on a base model...) keeps its untrained embedding and lm_head rows unless those modules are "
        "saved in full (modules_to_save) or the token rows are trained (trainable_token_indices), so the model "
        "never learns to emit it."
    )
    if not ctx.has_adapter:
        return Finding("adapter_trains_new_tokens", title, "not_applicable", "No adapter is loaded.", why,
                       "Nothing to check.")
    model, tokenizer = ctx.model, ctx.tokenizer
    name = getattr(model, "active_adapter", None) or "default"
    if isinstance(name, (list, tuple)):
        name = name[0]
    config = model.peft_config[name]
    modules = set(getattr(config, "modules_to_save", None) or [])
    targets = getattr(config, "target_modules", None) or []
    targets = {targets} if isinstance(targets, str) else set(targets)
    trainable = getattr(config, "trainable_token_indices", None) or []
    trainable_ids = set()
    for value in (trainable.values() if isinstance(trainable, dict) else [trainable]):
        trainable_ids |= set(value)
    saved_in = any(m.split(".")[-1] in _EMBEDDING_NAMES for m in modules)
    saved_out = any(m.split(".")[-1] in _OUTPUT_NAMES for m in modules)
    tied = bool(getattr(ctx.base.config, "tie_word_embeddings", False))
    base_vocab = getattr(tokenizer, "vocab_size", None) or 0
    rows = ctx.base.get_input_embeddings().weight.shape[0]
    added_ids = sorted(i for i in getattr(tokenizer, "added_tokens_decoder", {}) if i >= base_vocab)
    new_end = [i for i in ctx.end_ids if i >= base_vocab]
    data = {"adapter": ctx.bundle.info.adapter, "modules_to_save": sorted(modules), "target_modules": sorted(targets),
            "trainable_token_indices": sorted(trainable_ids), "added_token_ids": added_ids, "new_end_ids": new_end}
    found = (f"Adapter {ctx.bundle.info.adapter!r}: modules_to_save = {sorted(modules) or None}, target_modules = "
             f"{sorted(targets)}, trainable_token_indices = {sorted(trainable_ids) or None}. Tokenizer has "
             f"{len(tokenizer)} tokens, base vocabulary {base_vocab}, {rows} embedding rows.")
    if not added_ids and not new_end:
        return Finding("adapter_trains_new_tokens", title, "ok",
                       found + " No tokens were added beyond the base vocabulary, so nothing new needs training.",
                       why, "Nothing to fix.", data)
    covered = (saved_in and (saved_out or tied)) or all(i in trainable_ids for i in (new_end or added_ids))
    lora_on_embeddings = any(t.split(".")[-1] in _EMBEDDING_NAMES | _OUTPUT_NAMES for t in targets)
    found += f" Added tokens: {ctx.named_list(added_ids[:8])}" + (" ..." if len(added_ids) > 8 else "") + "."
    if covered:
        return Finding("adapter_trains_new_tokens", title, "ok",
                       found + " Their embedding and output rows are trained by the adapter.", why,
                       "Nothing to fix.", data)
    fix = ("Train the new rows with the adapter:\n```python\nLoraConfig(..., modules_to_save=['embed_tokens', 'lm_head'])\n"
           f"# or only the new tokens:\nLoraConfig(..., trainable_token_indices={(new_end or added_ids)[:8]})\n```")
    if lora_on_embeddings:
        return Finding("adapter_trains_new_tokens", title, "warning",
                       found + " The embeddings are LoRA targets, so only a low-rank update reaches the new rows.",
                       why, fix, data)
    return Finding("adapter_trains_new_tokens", title, "problem",
                   found + " Neither modules_to_save nor trainable_token_indices cover them: their rows are still the "
                   "untrained initial values.", why, fix, data)


def check_sample_ends_with_eos(ctx: _Context) -> Finding:
    """8. How many training examples end with EOS after tokenisation, and how many lose it to truncation."""
    title = "Training examples end with EOS"
    why = (
        "The model only learns to stop if the EOS follows the answer in the tokenised training data and survives "
        "truncation at max_length. Examples without it teach the model to run on into the next text."
    )
    if ctx.sample is None:
        return Finding("sample_ends_with_eos", title, "not_applicable",
                       "No training sample given (pass --sample FILE.jsonl).", why, "Nothing to check.")
    examples = ctx.sample_examples
    total = len(examples)
    with_end = [e for e in examples if e.end_index is not None]
    truncated = [e for e in with_end if e.end_index >= ctx.max_length]
    as_text = [e for e in examples if e.end_index is None and e.eos_as_text]
    kept = len(with_end) - len(truncated)
    data = {"examples": total, "end_with_eos": len(with_end), "truncated_before_eos": len(truncated),
            "fraction_end_with_eos": len(with_end) / total, "fraction_truncated": len(truncated) / total,
            "eos_as_text_not_id": len(as_text), "max_length": ctx.max_length}
    how = ("prompt/response rendered with the chat template" if ctx.template and "error" not in ctx.template
           else "prompt + response tokenised with tokenizer(...)")
    found = [f"{len(with_end)}/{total} examples ({len(with_end) / total:.0%}) have an EOS/end token "
             f"{ctx.named_list(ctx.end_ids)} right after the answer ({how}; 'text' lines via tokenizer(text)); "
             f"{len(truncated)}/{total} ({len(truncated) / total:.0%}) lose it to truncation at max_length="
             f"{ctx.max_length}."]
    if as_text:
        example = as_text[0]
        tail = example.full_ids[len(example.prefix_ids):][-6:]
        found.append(f"{len(as_text)} example(s) end with the text {example.eos_as_text!r}, which tokenises as "
                     f"{ctx.pieces(tail)}, not as an EOS id (first: {example.label})"
                     + (f"; this tokenizer's EOS is {ctx.tokenizer.eos_token!r}." if example.eos_as_text !=
                        ctx.tokenizer.eos_token else "."))
    missing = total - kept
    if missing == 0:
        return Finding("sample_ends_with_eos", title, "ok", found[0], why, "Nothing to fix.", data)
    fix = ("Append the EOS id to every example and keep it when truncating:\n```python\n"
           "ids = tokenizer(prompt + response, add_special_tokens=True)['input_ids'][: max_length - 1]\n"
           "ids.append(tokenizer.eos_token_id)\n```\nor render prompt/response with tokenizer.apply_chat_template, "
           "and raise max_length (or drop over-long examples) so the ending survives.")
    status = "problem" if missing / total >= 0.5 else "warning"
    return Finding("sample_ends_with_eos", title, status, " ".join(found), why, fix, data)


def _p_stop(ctx: _Context, examples: list[_Example], stop_ids: list[int],
           other_ids: list[int]) -> tuple[list[float], dict[int, list[float]]]:
    """Teacher-forced next-token probability after each answer: summed over stop ids, and per other end id."""
    model, device = ctx.model, ctx.bundle.device
    output = ctx.base.get_output_embeddings()
    vocab = output.weight.shape[0] if output is not None else None
    valid = [i for i in stop_ids if vocab is None or i < vocab]
    others = [i for i in other_ids if vocab is None or i < vocab]
    p_stop, p_other = [], {i: [] for i in others}
    sequences = [example.prefix_ids[-ctx.max_length:] for example in examples]
    for start in range(0, len(sequences), 8):
        batch = sequences[start:start + 8]
        width = max(len(ids) for ids in batch)
        # Right padding under a zero attention mask leaves every real position's logits unchanged.
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        for row, ids in enumerate(batch):
            probabilities = logits[row, len(ids) - 1].float().softmax(-1)
            p_stop.append(float(probabilities[valid].sum()) if valid else 0.0)
            for token_id in others:
                p_other[token_id].append(float(probabilities[token_id]))
    return p_stop, p_other


def _summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fmt(summary: dict) -> str:
    return f"min {summary['min']:.3g} / median {summary['median']:.3g} / max {summary['max']:.3g}"


def check_p_eos_at_answer_end(ctx: _Context) -> Finding:
    """9. Teacher-forced p(EOS) right after complete answers: near zero means stopping was never learned."""
    title = "Model puts probability on EOS where an answer ends"
    why = (
        "Feeding a complete answer and reading the next-token distribution shows whether the model learned to "
        "stop there. A chat model typically gives the stop token tens of percent; near zero means it will go on "
        "(lack of EOS in training, masked EOS labels, an untrained EOS row, or a base model)."
    )
    stop = ctx.stop_ids or ([ctx.tokenizer_eos_id] if ctx.tokenizer_eos_id is not None else [])
    if not stop:
        return Finding("p_eos_at_answer_end", title, "not_applicable", "There is no EOS id to measure.", why,
                       "See eos_ids_agree.")
    examples = [e for e in ctx.examples if e.prefix_ids][:MAX_FORCED_EXAMPLES]
    source = (f"{len(examples)} answer(s) from your sample" if ctx.sample is not None
              else f"{len(examples)} built-in question/answer pairs"
              + (" rendered with the chat template" if ctx.template and "error" not in ctx.template else ""))
    template_end = ctx.template.get("end_id") if ctx.template else None
    template_other = template_end if template_end is not None and template_end not in stop and (
        template_end in ctx.end_like or template_end in ctx.all_eos_ids) else None
    other_ids = [i for i in [template_other, *ctx.end_like, *ctx.all_eos_ids] if i is not None and i not in stop]
    other_ids = list(dict.fromkeys(other_ids))
    p_stop, p_other = _p_stop(ctx, examples, stop, other_ids)
    summary = _summary(p_stop)
    lowest = min(range(len(p_stop)), key=p_stop.__getitem__)
    data = {"p_eos": [round(p, 6) for p in p_stop], **{k: round(v, 6) for k, v in summary.items()},
            "examples": [e.label for e in examples], "stop_ids": stop, "other_end_ids": {}}
    found = [f"p({', '.join(ctx.token(i) for i in stop)}) right after the answer, over {source}: {_fmt(summary)} "
             f"(lowest: {examples[lowest].label})."]
    for token_id, values in p_other.items():
        other_summary = _summary(values)
        data["other_end_ids"][token_id] = {k: round(v, 6) for k, v in other_summary.items()}
        role = "the template's turn end, not a stop id" if token_id == template_other else "not a stop id"
        found.append(f"{ctx.named(token_id)} ({role}) gets {_fmt(other_summary)}.")
    if ctx.has_adapter:
        with ctx.bundle.adapter_disabled():
            p_base, _ = _p_stop(ctx, examples, stop, [])
        base_summary = _summary(p_base)
        data["without_adapter"] = {k: round(v, 6) for k, v in base_summary.items()}
        found.append(f"With the adapter switched off: {_fmt(base_summary)}.")
    median = summary["median"]
    if median >= P_EOS_WARNING:
        return Finding("p_eos_at_answer_end", title, "ok", " ".join(found) + " The model has learned to stop.", why,
                       "Nothing to fix. If it still rambles on open questions, cap max_new_tokens or bias EOS up "
                       "with an EOS-reward logits processor.", data)
    fix = ("Find the cause above (EOS missing from training data, pad == EOS masking, untrained EOS rows), fix it and "
           "fine-tune again. Until then stop it at inference: set max_new_tokens, add stop strings "
           "(generate(..., stop_strings=['\\n\\n'], tokenizer=tokenizer)) or raise the EOS logit with a logits "
           "processor.")
    preferred = [i for i, values in p_other.items() if statistics.median(values) > max(median, P_EOS_PROBLEM)]
    if preferred:
        fix = (f"The model wants to end with {ctx.named(preferred[0])}, which generation does not stop on; "
               f"stop on it:\n```python\nmodel.generation_config.eos_token_id = {stop + preferred[:1]}\n```")
    status = "problem" if median < P_EOS_PROBLEM else "warning"
    return Finding("p_eos_at_answer_end", title, status, " ".join(found), why, fix, data)


CHECKS = (
    check_eos_ids_agree,
    check_pad_is_eos,
    check_eos_string_splits,
    check_tokenizer_appends_eos,
    check_chat_template_eos,
    check_generation_config_blocks_eos,
    check_eos_embedding,
    check_adapter_trains_new_tokens,
    check_sample_ends_with_eos,
    check_p_eos_at_answer_end,
)


def diagnose(bundle: LoadedModel, *, sample: list[dict] | None = None, max_length: int = 512,
             probe: bool = True) -> list[Finding]:
    """Run every check on a loaded model (and optionally a training sample); one Finding per check.

    ``probe=False`` skips the forward passes of the teacher-forced p(EOS) check.
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    if sample is not None and not isinstance(sample, list):
        raise ValueError(f"sample must be a list of dicts or None, got {type(sample).__name__}")
    if sample is not None and not sample:
        raise ValueError("sample must contain at least 1 example, got an empty list")
    ctx = _Context(bundle, sample, max_length)
    findings = []
    for check in CHECKS:
        if check is check_p_eos_at_answer_end and not probe:
            findings.append(Finding("p_eos_at_answer_end", "Model puts probability on EOS where an answer ends",
                                    "not_applicable", "Skipped (probe=False / --no-probe).",
                                    "Measures p(EOS) right after complete answers.", "Run without --no-probe."))
            continue
        try:
            findings.append(check(ctx))
        except Exception as error:  # one odd tokenizer/model must not hide the other findings
            name = check.__name__.removeprefix("check_")
            findings.append(Finding(name, name.replace("_", " ").capitalize(), "warning",
                                    f"The check could not run: {type(error).__name__}: {error}",
                                    (check.__doc__ or "").strip(), "Report this with the model you used."))
    return findings


# --------------------------------------------------------------------------------------------------
# Reports


def _counts(findings: list[Finding]) -> dict:
    return {status: sum(f.status == status for f in findings) for status in STATUSES}


def report_markdown(findings: list[Finding], *, title: str = "EOS doctor") -> str:
    """A readable report: a summary line, then each finding with icon, what was found, why and the fix."""
    counts = _counts(findings)
    parts = [f"## {title}", "",
             f"**{counts['problem']} problem(s), {counts['warning']} warning(s), {counts['ok']} ok, "
             f"{counts['not_applicable']} not applicable**", ""]
    for finding in findings:
        parts += [f"### {STATUS_ICONS[finding.status]} {finding.title} — {finding.status.replace('_', ' ')}",
                  f"`{finding.id}`", "", f"**Found:** {finding.found}", "", f"**Why it matters:** {finding.why}", "",
                  f"**Fix:** {finding.fix}", ""]
    return "\n".join(parts).rstrip() + "\n"


def report_json(findings: list[Finding]) -> str:
    """``{"summary": {status: count}, "findings": [Finding.to_dict(), ...]}`` as indented JSON."""
    return json.dumps({"summary": _counts(findings), "findings": [f.to_dict() for f in findings]}, indent=2,
                      ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m playground doctor``: exit 0 when nothing is a problem, 1 when something is, 2 on load errors."""
    from playground.cli import add_model_arguments, load_from_args

    parser = argparse.ArgumentParser(prog="python -m playground doctor",
                                     description="EOS doctor: find out why a model doesn't stop.")
    add_model_arguments(parser)
    parser.add_argument("--sample", default=None, help="JSONL training sample: {prompt, response} or {text} per line")
    parser.add_argument("--max-length", type=int, default=512, help="training max_length used for truncation (>= 2)")
    parser.add_argument("--no-probe", action="store_true", help="skip the teacher-forced p(EOS) forward passes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    if args.max_length < 2:
        parser.error(f"--max-length must be an integer >= 2, got {args.max_length}")
    try:
        sample = load_sample(args.sample) if args.sample else None
    except (OSError, ValueError) as error:
        print(f"error: could not read --sample: {error}", file=sys.stderr)
        return 2
    try:
        bundle = load_from_args(args)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    findings = diagnose(bundle, sample=sample, max_length=args.max_length, probe=not args.no_probe)
    if args.json:
        print(report_json(findings))
    else:
        print(report_markdown(findings, title=f"EOS doctor — {bundle.info.name}"))
    return 1 if any(f.status == "problem" for f in findings) else 0
