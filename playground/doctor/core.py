"""What every check shares: the Finding form, the training sample, and the context computed once per diagnosis."""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from playground.decoder import RunStopped
from playground.jsonlines import loads_line
from playground.models import BASE, LoadedModel, eos_token_ids, embedded_gguf_path
from playground.prompts import check_messages

STATUSES = ("ok", "warning", "problem", "not_applicable")
STATUS_ICONS = {"ok": "✅", "warning": "⚠️", "problem": "❌", "not_applicable": "➖"}
# What fixes a finding, cheapest first: a generate() argument, the model's files, or the training (and a retrain).
ACTIONS = ("generation", "files", "retrain")

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

# EOS strings people write into training text by hand (often copied from another model family).
COMMON_EOS_STRINGS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<|eot_id|>", "<eos>", "<|end|>")
_END_LIKE_NAMES = {
    "endoftext", "end_of_text", "im_end", "eot_id", "eom_id", "end", "eos", "end_of_turn",
    "end_of_turn_token", "end_of_sentence", "eot", "endofturn", "return", "end_of_message",
}


@dataclass
class Finding:
    """One check's verdict, in plain words, with the actual ids/tokens and a concrete fix.

    ``action`` says what fixes a warning or problem: ``"generation"`` (an argument of generate(), no retraining),
    ``"files"`` (the model's config/tokenizer files; ``data["repair"]`` then says what to write) or ``"retrain"``.
    """

    id: str
    title: str
    status: str
    found: str
    why: str
    fix: str
    data: dict = field(default_factory=dict)  # the numbers behind ``found`` (ids, fractions, p values)
    action: str | None = None
    weight: float = 0.0  # how much it explains the measured failure (set by :func:`.ranking.weigh`)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)} or None, got {self.action!r}")

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
    if "messages" in example:
        return {"messages": check_messages(example["messages"], where, to_answer=False)}
    if "input_ids" in example and "labels" in example:
        ids, labels = example["input_ids"], example["labels"]
        for key, values in (("input_ids", ids), ("labels", labels)):
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{where}: {key!r} must be a non-empty list of integers")
        if len(ids) != len(labels):
            raise ValueError(f"{where}: 'input_ids' has {len(ids)} ids but 'labels' has {len(labels)}")
        return {"input_ids": ids, "labels": labels}
    raise ValueError(
        f"{where}: expected {{\"prompt\": ..., \"response\": ...}}, {{\"text\": ...}}, {{\"messages\": [...]}} or "
        f"{{\"input_ids\": [...], \"labels\": [...]}}, got keys {sorted(example)}"
    )


def load_sample(path) -> list[dict]:
    """Read a JSONL training sample, one object per line: ``{"prompt", "response"}``, ``{"text"}``,
    ``{"messages": [{"role", "content"}, ...]}`` (a conversation, rendered with the chat template) or
    ``{"input_ids", "labels"}`` (pre-tokenised, exactly as the trainer saw it; -100 = not supervised).

    Blank lines are skipped. Anything else raises ``ValueError`` naming the file and line number.
    """
    path = Path(path)
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                example = loads_line(line)
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from None
            examples.append(_check_example(example, f"{path}, line {number}"))
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return examples


# --------------------------------------------------------------------------------------------------
# Shared context


def as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    values = value if isinstance(value, (list, tuple)) else [value]
    return [int(v) for v in values if v is not None]


def looks_like_end(token: str) -> bool:
    """Special tokens that by name end a text or a turn (</s>, <|im_end|>, <|eot_id|>, <end_of_turn>, ...)."""
    if token == "</s>":
        return True
    core = re.sub(r"[<>|｜/\[\]]", "", token).lower().replace("▁", "_").replace(" ", "_")
    return core in _END_LIKE_NAMES


def source_gguf(bundle: LoadedModel) -> Path | None:
    """The GGUF file a bundle was loaded from (``load_model`` records it in ``info.source``), if any."""
    source = bundle.info.source or ""
    if source.startswith("gguf "):
        return Path(source.removeprefix("gguf "))
    if source.startswith("embedded "):
        return embedded_gguf_path()
    return None


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids two token lists share."""
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


@dataclass
class Example:
    """One example tokenised the way training would see it, split at the end of the answer."""

    label: str
    text: str
    prefix_ids: list[int]  # everything up to and including the last answer token
    full_ids: list[int]  # the whole example
    end_index: int | None  # index in full_ids of the end token that follows the answer, if any
    eos_as_text: str | None = None  # the end-token string the answer text itself ended with, when it did
    labels: list[int] | None = None  # pre-tokenised examples: the labels the trainer used
    messages: list[dict] | None = None  # conversations: the turns
    answer_start: int | None = None  # index in full_ids of the answer's first token, when the format says
    prompt: list[dict] | str | None = None  # what inference is given: the turns before the answer, or prompt text


class Context:
    """Everything the checks share, computed once: EOS ids from all three sources, the rendered template,
    and the sample (or built-in probes) tokenised and split at the end of each answer."""

    def __init__(self, bundle: LoadedModel, sample, max_length: int, *, gguf=None, stop_strings=None, artifacts=(),
                 compare_with: LoadedModel | None = None, repetition_penalty: float | None = None,
                 model: str | None = None, cancel: threading.Event | None = None):
        self.bundle = bundle
        self.cancel = cancel  # set when whoever asked has gone: the checks stop at their next forward pass
        self.tokenizer = tokenizer = bundle.tokenizer
        self.model = bundle.model
        # The model examined, as a column names it: ``base`` or a loaded adapter (None: the one a column without
        # @NAME runs). A bundle built around an in-memory PeftModel names its adapter only in ``info.adapter``.
        self.model_name = bundle.resolve_model(model)
        self.adapter_reference = (bundle.adapters.get(self.model_name) if bundle.adapters
                                  else bundle.info.adapter if self.model_name == BASE else None)
        self.has_adapter = self.adapter_reference is not None and hasattr(bundle.model, "get_base_model")
        self.base = bundle.model.get_base_model() if self.has_adapter else bundle.model
        self.generation_config = getattr(self.base, "generation_config", None)
        self.max_length = max_length
        self.gguf_path = Path(gguf) if gguf is not None else source_gguf(bundle)
        self.stop_strings = list(stop_strings or [])
        self.artifacts = [Path(a) for a in artifacts or ()]
        self.compare_with = compare_with  # an earlier checkpoint (SFT before DPO) to compare p(EOS) with
        self.repetition_penalty = repetition_penalty  # the one you serve with, when not the generation config's
        self.tokenizer_eos_id = tokenizer.eos_token_id
        self.config_eos_ids = as_list(getattr(self.base.config, "eos_token_id", None))
        self.stop_ids = as_list(getattr(self.generation_config, "eos_token_id", None))
        self.all_eos_ids = eos_token_ids(tokenizer, self.base)
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        candidates = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        for token_id in self.special_ids:
            candidates.setdefault(token_id, tokenizer.convert_ids_to_tokens(token_id))
        self.end_like = {int(i): str(t) for i, t in candidates.items() if looks_like_end(str(t))}
        self.special_ids |= set(candidates)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self._whitespace: dict[int, bool] = {}
        self.row_stats: dict = {}  # embedding statistics per matrix kind, shared by the weight checks
        self.answer_end_scores: dict = {}  # logits after each answer per model, shared by the p(EOS) checks
        # Whether tokenizer(text) appends an EOS by itself (decides how the answer prefix is cut).
        encoded_a = tokenizer("a")["input_ids"]
        self.encoded_a = encoded_a
        self.appends_eos = bool(encoded_a) and encoded_a[-1] in self.all_eos_ids
        self.template = self._probe_template()
        self.end_ids = list(self.all_eos_ids)
        template_end = self.template_end
        if template_end is not None and template_end not in self.end_ids and (
            template_end in self.end_like or template_end in self.special_ids
        ):
            self.end_ids.append(template_end)
        self.sample = [_check_example(ex, f"sample example {i + 1}") for i, ex in enumerate(sample)] if sample else None
        self.sample_examples = [self.encode(ex, f"sample example {i + 1}") for i, ex in enumerate(self.sample or [])]
        # The sample's pre-tokenised rows: their labels are what the trainer saw, not a guess at a collator.
        self.labelled_examples = [e for e in self.sample_examples if e.labels is not None]
        self.probe_examples = [
            self.encode({"prompt": q, "response": a}, f"probe {q!r}") for q, a in PROBE_PAIRS
        ]

    def stop_if_cancelled(self) -> None:
        """RunStopped once :attr:`cancel` is set (between checks, and between the probe's forward passes)."""
        if self.cancel is not None and self.cancel.is_set():
            raise RunStopped("the doctor stopped: whoever asked for it has gone")

    @contextlib.contextmanager
    def stoppable(self, model):
        """``model``'s forward passes stop between two of its layers once :attr:`cancel` is set: one pass over 8
        long examples takes 30 s on a busy 2-core CPU, too long to wait for a page that has gone."""
        if self.cancel is None:
            yield
            return
        layers = [layer for module in model.modules() if isinstance(module, torch.nn.ModuleList) for layer in module]
        handles = [layer.register_forward_pre_hook(lambda module, args: self.stop_if_cancelled()) for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def using(self):
        """The examined model switched on for the forward passes and weight reads of a check."""
        return self.bundle.using(self.model_name if self.bundle.adapters else None)

    # -- token helpers -------------------------------------------------------------------------
    def token(self, token_id: int | None) -> str:
        if token_id is None:
            return "None"
        try:
            return repr(self.tokenizer.convert_ids_to_tokens(int(token_id)))
        except Exception:  # an id beyond the vocabulary
            return "'<out of vocabulary>'"

    def token_id(self, token: str) -> int | None:
        """The id of a token in the vocabulary, or None (convert_tokens_to_ids answers unknown tokens with unk)."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        return token_id if token_id is not None and self.tokenizer.convert_ids_to_tokens(token_id) == token else None

    def named(self, token_id: int | None) -> str:
        return f"{self.token(token_id)} (id {token_id})"

    def named_list(self, ids) -> str:
        return "[" + ", ".join(self.named(i) for i in ids) + "]" if ids else "[] (none)"

    def pieces(self, ids) -> str:
        return "[" + ", ".join(self.token(i) for i in ids) + "]"

    def is_whitespace(self, token_id: int) -> bool:
        if token_id not in self._whitespace:
            self._whitespace[token_id] = (token_id not in self.special_ids
                                          and not self.tokenizer.decode([token_id]).strip())
        return self._whitespace[token_id]

    def first_non_whitespace(self, ids) -> tuple[int, int] | None:
        for index, token_id in enumerate(ids):
            if not self.is_whitespace(token_id):
                return index, token_id
        return None

    def is_end(self, token_id: int) -> bool:
        """An id anything treats as an end (EOS ids, the template's turn end) or an end-like special token."""
        return token_id in self.end_ids or token_id in self.end_like

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

    @property
    def template_ok(self) -> bool:
        return self.template is not None and "error" not in self.template

    @property
    def template_end(self) -> int | None:
        """The first non-whitespace token the template writes after an assistant reply."""
        return self.template.get("end_id") if self.template else None

    def end_run_after_answer(self, text: str) -> list[int]:
        """The end tokens written right after the probe answer in a rendered ``text`` (whitespace skipped)."""
        answer = PROBE_PAIRS[0][1]
        run = []
        for token_id in self.tokenizer(text[text.rfind(answer) + len(answer):], add_special_tokens=False)["input_ids"]:
            if self.is_whitespace(token_id):
                continue
            if not self.is_end(token_id):
                break
            run.append(token_id)
        return run

    @property
    def template_end_run(self) -> list[int]:
        """The end tokens the template writes right after an assistant reply, in order."""
        return self.end_run_after_answer(self.template["text"]) if self.template_ok else []

    @property
    def template_special_ids(self) -> list[int]:
        """The special tokens a rendered one-turn conversation contains (role markers, turn ends), in order."""
        if not self.template_ok:
            return []
        ids = self.tokenizer(self.template["text"], add_special_tokens=False)["input_ids"]
        return list(dict.fromkeys(i for i in ids if i in self.special_ids))

    def assistant_header_ids(self) -> list[int] | None:
        """The tokens the template writes before an assistant reply (add_generation_prompt's addition)."""
        if not self.template_ok:
            return None
        user = [{"role": "user", "content": PROBE_PAIRS[0][0]}]
        try:
            with_prompt = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            without = self.tokenizer.apply_chat_template(user, tokenize=False)
        except Exception:
            return None
        if not with_prompt.startswith(without) or with_prompt == without:
            return None
        ids = self.tokenizer(with_prompt[len(without):], add_special_tokens=False)["input_ids"]
        while ids and self.is_whitespace(ids[-1]):  # "\n" after the header may merge with the reply's first piece
            ids = ids[:-1]
        return ids or None

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

    def _encode_ids(self, ids: list[int], labels: list[int], label: str) -> Example:
        """A pre-tokenised example: the answer ends before the trailing run of end (and whitespace) tokens."""
        cut = len(ids)
        while cut > 0 and (self.is_end(ids[cut - 1]) or self.is_whitespace(ids[cut - 1])):
            cut -= 1
        first = self.first_non_whitespace(ids[cut:])
        end_index = cut + first[0] if first and first[1] in self.end_ids else None
        return Example(label, self.tokenizer.decode(ids), ids[:cut], ids, end_index, labels=labels)

    def encode(self, example: dict, label: str) -> Example:
        tokenizer = self.tokenizer
        if "input_ids" in example:
            return self._encode_ids(example["input_ids"], example["labels"], label)
        eos_as_text, messages, answer_start, prompt = None, None, None, None
        if "messages" in example and not self.template_ok:
            raise ValueError(f"{label}: 'messages' needs a tokenizer with a working chat template")
        if "text" in example:
            text, add_special = example["text"], True
            answer_end, eos_as_text = self._answer_end_of_text(text)
        elif "messages" in example or self.template_ok:
            messages = example.get("messages") or [{"role": "user", "content": example["prompt"]},
                                                   {"role": "assistant", "content": example["response"]}]
            text, add_special = tokenizer.apply_chat_template(messages, tokenize=False), False
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            prompt = messages[:last]
            # An end string typed into a reply is text the model learns to print, whatever the template adds.
            for message in messages:
                if message["role"] == "assistant" and eos_as_text is None:
                    eos_as_text = self._answer_end_of_text(message["content"])[1]
            response = messages[last]["content"]
            kept, matched = self._answer_end_of_text(response)
            position = text.rfind(response)
            if position < 0 and response.strip():
                response = response.strip()
                position = text.rfind(response)
            if position >= 0:
                answer_end = position + (kept if matched else len(response))
            else:  # the template rewrote the reply: treat the rendering like a raw text example
                answer_end, _ = self._answer_end_of_text(text)
            answer_start = position if position >= 0 else None
        else:
            text, add_special = example["prompt"] + example["response"], True
            kept, eos_as_text = self._answer_end_of_text(example["response"])
            answer_end = len(example["prompt"]) + (kept if eos_as_text else len(example["response"]))
            answer_start, prompt = len(example["prompt"]), example["prompt"]
        prefix = tokenizer(text[:answer_end], add_special_tokens=add_special)["input_ids"]
        if add_special and self.appends_eos and prefix and prefix[-1] in self.all_eos_ids:
            prefix = prefix[:-1]
        full = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        split = _common_prefix(prefix, full)
        first = self.first_non_whitespace(full[split:])
        end_index = split + first[0] if first and first[1] in self.end_ids else None
        if answer_start is not None:
            before = tokenizer(text[:answer_start], add_special_tokens=add_special)["input_ids"]
            if add_special and self.appends_eos and before and before[-1] in self.all_eos_ids:
                before = before[:-1]
            answer_start = _common_prefix(before, full)
        return Example(label, text, prefix, full, end_index, eos_as_text, messages=example.get("messages"),
                       answer_start=answer_start, prompt=prompt)

    @property
    def examples(self) -> list[Example]:
        return self.sample_examples if self.sample is not None else self.probe_examples
