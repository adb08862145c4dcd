"""The Compare page's settings: their defaults, and a link that restores them (the URL query).

A team demo is a link: ``?prompt=...&max_new_tokens=80&columns=3&c1=baseline&c2=eos_reward(strength=8)&c3=seed_article``.
Every setting of :data:`playground.request.SETTINGS` is a query key (read by the same rule as in every other
door); a column is its text form (:func:`playground.request.format_column`). Opening such a link fills the page
with those settings; a key the page does not know, or a value it cannot use, is named in a notice and the default
is kept.

    >>> query = to_query({**PAGE_DEFAULTS, "max_new_tokens": 40, "columns": [parse_column("ban_eos"), parse_column("eos_reward(strength=8)+stop_strings")]})
    >>> [c.name for c in from_query(dict(__import__("urllib.parse").parse.parse_qsl(query)))[0]["columns"]]
    ['ban_eos', 'eos_reward(strength=8)+stop_strings']
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from .request import DEFAULTS, MAX_COLUMNS, SETTINGS, Column, check_setting, parse_column

# The first Run with these tells the story on the embedded SmolLM2-135M-Instruct (measured; checked by
# tests/engine/test_links.py): baseline rambles to the 80-token limit, the EOS ramp from step 40 ends the answer at
# step 68 right after "paradise.", and the article's processor cuts it at step 8: "Bonjour, welcome to the
# City of". The ramp stops at the same sentence for start ratios 0.4-0.6 and strengths 10-16.
DEFAULT_COLUMNS = [parse_column(text) for text in ("baseline", "eos_reward", "seed_article", "stop_strings")]
PAGE_DEFAULTS: dict = {**DEFAULTS, "columns": DEFAULT_COLUMNS[:3]}
__all__ = ["MAX_COLUMNS", "PAGE_DEFAULTS", "DEFAULT_COLUMNS", "to_query", "from_query", "parse_column"]


def to_query(settings: Mapping) -> str:
    """The query string for these settings (only what differs from the defaults, so links stay short)."""
    pairs = []
    for name, s in SETTINGS.items():
        value = settings.get(name, s.default)
        if value != s.default:
            pairs.append((name, s.text(value)))
    columns = list(settings.get("columns", PAGE_DEFAULTS["columns"]))
    if columns != PAGE_DEFAULTS["columns"]:
        pairs.append(("columns", str(len(columns))))
        pairs += [(f"c{i + 1}", column.name) for i, column in enumerate(columns)]
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)


def from_query(params: Mapping[str, str]) -> tuple[dict, list[str]]:
    """Settings from a URL query (defaults for what it leaves out) and a sentence per key it could not use."""
    settings, problems = dict(PAGE_DEFAULTS), []
    for key, text in params.items():
        if key in SETTINGS:
            try:
                settings[key] = check_setting(key, text)
            except ValueError as error:
                problems.append(f"{error}; kept {SETTINGS[key].default!r}")
        elif not (key == "columns" or (key[:1] == "c" and key[1:].isdigit()) or key.startswith("__")):
            problems.append(f"unknown setting {key!r} ignored")
    count = len(settings["columns"])
    if "columns" in params:
        text = params["columns"]
        if text.strip().isdigit() and 1 <= int(text) <= MAX_COLUMNS:
            count = int(text)
        else:
            problems.append(f"columns must be between 1 and {MAX_COLUMNS}, got {text!r}; kept {count}")
    columns = list(DEFAULT_COLUMNS if "columns" in params else settings["columns"])
    columns += [Column()] * (MAX_COLUMNS - len(columns))
    for index in range(MAX_COLUMNS):
        key = f"c{index + 1}"
        if key in params:
            try:
                columns[index] = parse_column(params[key])
            except ValueError as error:
                problems.append(f"{key}: {error}; kept {columns[index].name!r}")
    settings["columns"] = columns[:count]
    return settings, problems
