"""Prompt sets for an evaluation: a file (JSON lines with ``prompt`` or ``messages``, CSV with a ``prompt`` column,
or one prompt per line), a list sent by a program, or the built-in set. A line that cannot run is reported by its
number and skipped; the rest run."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..jsonlines import loads_line
from ..prompts import check_messages
from ..space.policy import check_encodable

BUILTIN_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts.jsonl"
MAX_FILE_BYTES = 1_000_000  # a prompt file larger than this is read up to this size (the rest is reported)
MAX_PROMPTS = 1000
MAX_PROMPT_CHARS = 20_000


@dataclass
class Prompt:
    """One prompt of a set: a chat (``messages``, the last one the user's) and where it came from."""

    messages: list[dict]
    where: str = ""  # "line 3" of the user's file, "item 2" of an API list, "builtin 5"
    category: str | None = None

    @property
    def text(self) -> str:
        """The user's last turn: what Compare would take as its prompt."""
        return self.messages[-1]["content"]

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages[0]["role"] == "system" else None

    @property
    def history(self) -> list[dict]:
        """The turns before the last user turn, without a leading system message."""
        return [m for m in self.messages[:-1] if m["role"] != "system"]

    def to_dict(self) -> dict:
        data = {"where": self.where, "text": self.text}
        if self.system is not None or self.history:
            data["messages"] = self.messages
        if self.category:
            data["category"] = self.category
        return data


@dataclass
class PromptSet:
    """Prompts that can run, and one sentence per input that cannot (naming its line)."""

    prompts: list[Prompt]
    problems: list[str] = field(default_factory=list)
    source: str = ""


def prompt_from_record(record, where: str, max_chars: int = MAX_PROMPT_CHARS) -> Prompt:
    """A Prompt from ``{"prompt": str}``, ``{"messages": [{"role", "content"}...]}`` or a bare string; ValueError
    naming ``where`` otherwise. Other keys are ignored (``category`` is kept)."""
    if isinstance(record, str):
        record = {"prompt": record}
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with a 'prompt' string or a 'messages' list, got {type(record).__name__}")
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise ValueError(f"{where}: 'prompt' must be a string, got {type(record['prompt']).__name__}")
        messages = [{"role": "user", "content": record["prompt"]}]
    elif "messages" in record:
        messages = check_messages(record["messages"], where, to_answer=True)
    else:
        found = ", ".join(sorted(map(str, record))) or "none"
        raise ValueError(f"{where}: needs a 'prompt' string or a 'messages' list; found keys: {found}")
    if not messages[-1]["content"].strip():
        raise ValueError(f"{where}: the prompt is empty")
    for index, message in enumerate(messages):
        check_encodable(message["content"], f"{where}: {'the prompt' if len(messages) == 1 else f'message {index + 1}'}")
    length = sum(len(m["content"]) for m in messages)
    if length > max_chars:
        raise ValueError(f"{where}: the prompt is {length} characters; at most {max_chars} are accepted")
    category = record.get("category")
    return Prompt(messages, where, category if isinstance(category, str) else None)


def _decoded_lines(data: bytes, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; a line that is not UTF-8 is reported and skipped."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            yield number, raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            problems.append(f"line {number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                            "skipped — save the file as UTF-8")


def parse_prompts(data: bytes, kind: str, *, max_prompts: int = MAX_PROMPTS, max_chars: int = MAX_PROMPT_CHARS,
                  source: str = "") -> PromptSet:
    """Prompts from a file's bytes: ``kind`` is "jsonl" (``prompt`` or ``messages`` per line), "csv" (a
    ``prompt`` column) or "text" (one prompt per line). Bad lines are reported by line number and skipped."""
    if kind not in ("jsonl", "csv", "text"):
        raise ValueError(f"kind must be jsonl, csv or text, got {kind!r}")
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark (Excel writes one)
    problems: list[str] = []
    prompts: list[Prompt] = []
    if not data.strip():
        return PromptSet([], ["line 1: the file is empty — put one prompt per line"], source)

    def add(record, where: str) -> None:
        try:
            prompts.append(prompt_from_record(record, where, max_chars))
        except ValueError as error:
            problems.append(f"{error}; skipped")

    if kind == "csv":
        lines = _decoded_lines(data, problems)
        position = {"line": 0}

        def track():
            for number, text in lines:
                position["line"] = number
                yield text

        reader = csv.reader(track())
        try:
            header = next(reader)
        except StopIteration:
            header = []
        columns = [name.strip().lower() for name in header]
        if "prompt" not in columns:
            found = ", ".join(repr(h) for h in header) or "nothing"
            problems.append(f"line {position['line'] or 1}: the CSV header needs a 'prompt' column; found {found}")
            return PromptSet([], problems, source)
        column = columns.index("prompt")
        try:
            for row in reader:
                where = f"line {position['line']}"
                if not any(cell.strip() for cell in row):
                    continue
                if column >= len(row) or not row[column].strip():
                    problems.append(f"{where}: the 'prompt' cell is empty; skipped")
                    continue
                add(row[column], where)
        except csv.Error as error:
            problems.append(f"line {position['line']}: not valid CSV ({error}); the rest of the file is skipped")
    else:
        for number, text in _decoded_lines(data, problems):
            if not text.strip():
                continue
            where = f"line {number}"
            if kind == "text":
                add(text, where)
                continue
            try:
                record = loads_line(text)
            except ValueError as error:
                problems.append(f"{where}: {error}; skipped")
                continue
            add(record, where)
    if len(prompts) > max_prompts:
        problems.append(f"{prompts[max_prompts].where}: more than {max_prompts} prompts; this one and the rest are skipped")
        del prompts[max_prompts:]
    if not prompts and not problems:
        problems.append("line 1: the file holds no prompt")
    return PromptSet(prompts, problems, source)


def file_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(suffix, "text")


def read_prompts(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_prompts: int = MAX_PROMPTS,
                 max_chars: int = MAX_PROMPT_CHARS) -> PromptSet:
    """Prompts from a file (format from its extension: .jsonl/.json, .csv, anything else one prompt per line).

    A file over ``max_bytes`` is read up to the last whole line within the cap, and the first line left out is
    named. ValueError when the file cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise ValueError(f"prompts: cannot read {str(path)!r}: {error.strerror or error}") from None
    cut = None
    if len(data) > max_bytes:
        data = data[:max_bytes]
        data = data[: data.rfind(b"\n") + 1]
        cut = data.count(b"\n") + 1
    prompts = parse_prompts(data, file_kind(path), max_prompts=max_prompts, max_chars=max_chars, source=path.name)
    if cut is not None:
        prompts.problems.append(f"line {cut}: the file is over the cap of {max_bytes:,} bytes; lines from {cut} on "
                                "were not read")
    return prompts


def builtin_prompts() -> PromptSet:
    """The set shipped with the package: open questions that ramble, short answers, yes/no, lists, code, poems,
    other languages and multi-turn chats."""
    prompts = parse_prompts(BUILTIN_PROMPTS.read_bytes(), "jsonl", source="builtin")
    for index, prompt in enumerate(prompts.prompts, start=1):
        prompt.where = f"builtin {index}"
    return prompts


def prompts_from_items(items: Sequence, *, max_prompts: int = MAX_PROMPTS, max_chars: int = MAX_PROMPT_CHARS) -> PromptSet:
    """Prompts sent by a program: a list of strings or ``{"prompt"}`` / ``{"messages"}`` objects."""
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"prompts must be \"builtin\" or a list of strings or {{\"prompt\"/\"messages\"}} objects, "
                         f"got {type(items).__name__}")
    prompts, problems = [], []
    for number, item in enumerate(items, start=1):
        try:
            prompts.append(prompt_from_record(item, f"item {number}", max_chars))
        except ValueError as error:
            problems.append(f"{error}; skipped")
    if len(prompts) > max_prompts:
        problems.append(f"{prompts[max_prompts].where}: more than {max_prompts} prompts; this one and the rest are skipped")
        del prompts[max_prompts:]
    if not items:
        problems.append("prompts: the list is empty")
    return PromptSet(prompts, problems, "request")
