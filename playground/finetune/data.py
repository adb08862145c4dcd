"""Training data: the user's file (JSONL or CSV) or the built-in set shipped with the package.

The built-in set (``data/finetune_qa.jsonl``) is 79 short question/answer pairs written by hand for this lab, not
distilled from any model: facts, two-sentence explanations, lists, yes/no, code, poems, French/Spanish/German,
instructions and loop bait, every answer complete and ending cleanly (a sentence end or a closed code block). They
cover the kinds of prompt in the Evaluate set without repeating its questions. Recipes that need conversations
(``last_turn_only``) chain three consecutive pairs into one chat.

>>> examples = builtin_examples()
>>> len(examples), sorted(examples[0])
(79, ['prompt', 'response'])
>>> len(builtin_examples(conversations=True)[0]["messages"])
6
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..prompts import check_messages

BUILTIN_DATA = Path(__file__).parent / "data" / "finetune_qa.jsonl"
MAX_FILE_BYTES = 16 * 1024 * 1024
TURNS_PER_CHAT = 3


@dataclass
class TrainingData:
    """Examples (``{"prompt", "response"}``, ``{"messages"}`` or ``{"text"}``), where they came from, and the lines
    that were skipped with the reason (the good ones still train)."""

    examples: list[dict]
    source: str  # "builtin" or the file's name
    sha256: str
    problems: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"source": self.source, "examples": len(self.examples), "sha256": self.sha256}


def _check(example, where: str) -> dict:
    """One example in one of the three forms, or ValueError naming the line and field."""
    if not isinstance(example, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(example).__name__}")
    if "messages" in example:
        return {"messages": check_messages(example["messages"], where, to_answer=False)}
    if "prompt" in example or "response" in example:
        for key in ("prompt", "response"):
            if not isinstance(example.get(key), str) or not example[key].strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string")
        return {"prompt": example["prompt"], "response": example["response"]}
    if "text" in example:
        if not isinstance(example["text"], str) or not example["text"].strip():
            raise ValueError(f"{where}: 'text' must be a non-empty string")
        return {"text": example["text"]}
    raise ValueError(f"{where}: expected 'prompt' and 'response', 'messages' or 'text', got keys {sorted(example)}")


def parse_examples(raw: bytes, kind: str, source: str) -> TrainingData:
    """Examples from a file's bytes: ``kind`` "jsonl" (one object per line) or "csv" (a header row with
    prompt,response or text)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{source}: not UTF-8 text") from None
    rows: list[tuple[str, object]] = []
    if kind == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not ({"prompt", "response"} <= set(reader.fieldnames) or "text" in reader.fieldnames):
            raise ValueError(f"{source}: a CSV file needs a header row with 'prompt' and 'response' columns, or 'text'")
        rows = [(f"{source}, row {number}", {k: v for k, v in row.items() if k in ("prompt", "response", "text")})
                for number, row in enumerate(reader, start=2)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{source}, line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((f"{source}, line {number}", ValueError(f"not valid JSON ({error.msg})")))
    examples, problems = [], []
    for where, row in rows:
        try:
            if isinstance(row, ValueError):
                raise ValueError(f"{where}: {row}")
            examples.append(_check(row, where))
        except ValueError as error:
            problems.append(str(error))
    if not examples:
        raise ValueError(f"{source}: no usable example" + (f" ({problems[0]})" if problems else " (the file is empty)"))
    return TrainingData(examples, source, hashlib.sha256(raw).hexdigest(), problems)


def read_examples(path, max_bytes: int = MAX_FILE_BYTES) -> TrainingData:
    """A training file: ``.csv`` as CSV, anything else as JSONL."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ValueError(f"data file {path.name!r} could not be read: {error.strerror or error}") from None
    if size > max_bytes:
        raise ValueError(f"data file {path.name!r} is {size / 1024 / 1024:.1f} MB; at most "
                         f"{max_bytes / 1024 / 1024:g} MB is read")
    return parse_examples(path.read_bytes(), "csv" if path.suffix.lower() == ".csv" else "jsonl", path.name)


def as_conversations(examples: list[dict], turns: int = TURNS_PER_CHAT) -> list[dict]:
    """Consecutive prompt/response pairs chained into chats of ``turns`` exchanges (other forms kept as they are)."""
    pairs = [e for e in examples if "prompt" in e]
    chats = [{"messages": [m for e in pairs[i:i + turns] for m in (
        {"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["response"]})]}
        for i in range(0, len(pairs) - turns + 1, turns)]
    return chats + [e for e in examples if "prompt" not in e]


def builtin_examples(conversations: bool = False) -> list[dict]:
    examples = parse_examples(BUILTIN_DATA.read_bytes(), "jsonl", "builtin").examples
    return as_conversations(examples) if conversations else examples


def builtin_data(conversations: bool = False) -> TrainingData:
    raw = BUILTIN_DATA.read_bytes()
    return TrainingData(builtin_examples(conversations), "builtin" + (" (as 3-turn chats)" if conversations else ""),
                        hashlib.sha256(raw).hexdigest())
