"""The Compare page's settings: their defaults, and a link that restores them (the URL query).

A team demo is a link: ``?prompt=...&max_new_tokens=80&columns=3&c1=baseline&c2=eos_reward&c3=seed_article``.
Every setting the page has is a query key; a column's interventions are joined with ``+`` (``baseline`` for
none). Opening such a link fills the page with those settings; a key the page does not know, or a value it
cannot use, is named in a notice and the default is kept.

    >>> query = to_query({**PAGE_DEFAULTS, "max_new_tokens": 40, "columns": [["ban_eos"], ["eos_reward", "stop_strings"]]})
    >>> from_query(dict(__import__("urllib.parse").parse.parse_qsl(query)))[0]["columns"]
    [['ban_eos'], ['eos_reward', 'stop_strings']]
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from .interventions import INTERVENTION_NAMES

MAX_COLUMNS = 4
PROMPT = "What can I do in Paris?"  # the article's prompt; SmolLM2 rambles on it for hundreds of tokens


@dataclass(frozen=True)
class Field:
    kind: type  # str, bool, int or float
    default: object
    low: float | None = None
    high: float | None = None


# The first Run with these tells the story on the embedded SmolLM2-135M-Instruct (measured; checked by
# tests/test_links.py): baseline rambles to the 80-token limit, the EOS ramp from step 40 ends the answer at
# step 68 right after "paradise.", and the article's processor cuts it at step 8: "Bonjour, welcome to the
# City of". The ramp stops at the same sentence for start ratios 0.4-0.6 and strengths 10-16.
FIELDS: dict[str, Field] = {
    "prompt": Field(str, PROMPT),
    "system_prompt": Field(str, ""),
    "use_chat_template": Field(bool, True),
    "max_new_tokens": Field(int, 80, 1, 2048),
    "reward_start_ratio": Field(float, 0.5, 0, 1),
    "temperature": Field(float, 0.0, 0, 2),
    "top_p": Field(float, 1.0, 0.05, 1),
    "top_k": Field(int, 0, 0, 200),
    "seed": Field(int, 0, 0, 2**32 - 1),
    "strength": Field(float, 12.0, 0, 40),
    "stop_strings": Field(str, "\\n\\n"),
    "min_new_tokens": Field(int, 32, 0, 256),
    "repetition_penalty": Field(float, 1.0, 0.5, 2),
    "no_repeat_ngram_size": Field(int, 0, 0, 10),
    "min_p": Field(float, 0.0, 0, 1),
    "typical_p": Field(float, 1.0, 0.01, 1),
}
DEFAULT_COLUMNS = [[], ["eos_reward"], ["seed_article"], ["stop_strings"]]
PAGE_DEFAULTS: dict = {**{name: f.default for name, f in FIELDS.items()}, "columns": DEFAULT_COLUMNS[:3]}


def column_name(interventions: list[str]) -> str:
    """A column as a link shows it: its interventions joined with "+" (or "baseline"), then ``@MODEL`` when the
    column names its model (an item ``"@MODEL"``, as the page's picker adds it).

    >>> column_name(["eos_reward", "@my-run"]), column_name(["@base"]), column_name([])
    ('eos_reward@my-run', 'baseline@base', 'baseline')
    """
    model = "".join(name for name in interventions if name.startswith("@"))
    names = [name for name in interventions if not name.startswith("@")]
    return ("+".join(names) or "baseline") + model


def to_query(settings: Mapping) -> str:
    """The query string for these settings (only what differs from the defaults, so links stay short)."""
    pairs = []
    for name, f in FIELDS.items():
        value = settings.get(name, f.default)
        if value != f.default:
            pairs.append((name, ("true" if value else "false") if f.kind is bool else f"{value:g}" if f.kind is float else str(value)))
    columns = settings.get("columns", PAGE_DEFAULTS["columns"])
    if columns != PAGE_DEFAULTS["columns"]:
        pairs.append(("columns", str(len(columns))))
        pairs += [(f"c{i + 1}", column_name(list(c))) for i, c in enumerate(columns)]
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)


def _parse(name: str, f: Field, text: str):
    if f.kind is str:
        return text
    if f.kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(number) or (f.kind is int and number != int(number)):
        raise ValueError(f"{name} must be a {'whole ' if f.kind is int else ''}number, got {text!r}")
    if not f.low <= number <= f.high:
        raise ValueError(f"{name} must be between {f.low:g} and {f.high:g}, got {text}")
    return f.kind(number)


def _parse_column(key: str, text: str) -> list[str]:
    text, at, model = text.rpartition("@") if "@" in text else (text, "", "")
    if at and not model.strip():
        raise ValueError(f"{key}: a column's model goes after '@' (e.g. baseline@base)")
    names = [] if text.strip() in ("", "baseline") else [n.strip() for n in text.split("+") if n.strip()]
    unknown = [n for n in names if n not in INTERVENTION_NAMES]
    if unknown:
        raise ValueError(f"{key}: unknown intervention {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(INTERVENTION_NAMES)})")
    return names + ([f"@{model.strip()}"] if at else [])


def from_query(params: Mapping[str, str]) -> tuple[dict, list[str]]:
    """Settings from a URL query (defaults for what it leaves out) and a sentence per key it could not use."""
    settings, problems = dict(PAGE_DEFAULTS), []
    for key, text in params.items():
        if key in FIELDS:
            try:
                settings[key] = _parse(key, FIELDS[key], text)
            except ValueError as error:
                problems.append(f"{error}; kept {FIELDS[key].default!r}")
        elif not (key == "columns" or (key[:1] == "c" and key[1:].isdigit()) or key.startswith("__")):
            problems.append(f"unknown setting {key!r} ignored")
    count = len(settings["columns"])
    if "columns" in params:
        try:
            count = _parse("columns", Field(int, 3, 1, MAX_COLUMNS), params["columns"])
        except ValueError as error:
            problems.append(f"{error}; kept {count}")
    columns = [list(c) for c in (DEFAULT_COLUMNS if "columns" in params else settings["columns"])]
    columns += [[] for _ in range(MAX_COLUMNS - len(columns))]
    for index in range(MAX_COLUMNS):
        key = f"c{index + 1}"
        if key in params:
            try:
                columns[index] = _parse_column(key, params[key])
            except ValueError as error:
                problems.append(f"{error}; kept {column_name(columns[index])!r}")
    settings["columns"] = columns[:count]
    return settings, problems
