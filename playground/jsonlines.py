"""One line of a JSONL file a visitor sent (an Evaluate prompt file, a doctor sample), parsed within limits.

``json.loads`` recurses once per nested bracket: 200 000 of them (400 KB) raise RecursionError, which no caller
expects. :func:`loads_line` measures the nesting first (strings skipped) and refuses a line that is too deep or
too long with a sentence, before the parser sees it.

    >>> loads_line('{"prompt": "Hi [{"}')
    {'prompt': 'Hi [{'}
    >>> loads_line("[" * 100 + "]" * 100)
    Traceback (most recent call last):
    ...
    ValueError: nested more than 64 levels deep; at most 64 are read
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 64  # a chat with tool calls nests 5 or 6 levels
MAX_LINE_CHARS = 1_000_000
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """How deeply the brackets outside JSON strings nest (an unbalanced line still gets a number); counting
    stops once the depth passes ``stop_above``."""
    depth = deepest = 0
    for char in _NOT_BRACKETS.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def loads_line(text: str, *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_LINE_CHARS):
    """``json.loads(text)`` for a line of at most ``max_chars`` characters nested at most ``max_depth`` deep;
    ValueError with a sentence (no line number: the caller names the line) otherwise."""
    if len(text) > max_chars:
        raise ValueError(f"{len(text):,} characters long; at most {max_chars:,} are read per line")
    if nesting_depth(text, stop_above=max_depth) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep; at most {max_depth} are read")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
