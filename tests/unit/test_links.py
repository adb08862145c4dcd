"""The page's links: a link restores every setting, names what it cannot use and keeps the default, sets the
number of columns, and links shared before column specs open the same columns."""

from __future__ import annotations

import urllib.parse

import pytest

from playground.links import PAGE_DEFAULTS, from_query, to_query
from playground.request import SETTINGS, parse_column


def _query(settings: dict) -> dict:
    return dict(urllib.parse.parse_qsl(to_query(settings)))


def test_a_link_round_trips_every_setting():
    settings = {"prompt": "Ünïcode & spaces?", "system_prompt": "Be brief.", "use_chat_template": False,
                "max_new_tokens": 40, "reward_start_ratio": 0.3, "temperature": 0.7, "top_p": 0.9, "top_k": 50,
                "seed": 7, "strength": 8.5, "stop_strings": "\\n\\n,END", "min_new_tokens": 10,
                "repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "min_p": 0.05, "typical_p": 0.9,
                "columns": [parse_column(c) for c in ("ban_eos", "eos_reward(strength=16)+stop_strings(strings=\"\\n\"|END)",
                                                      "baseline@base")]}
    assert set(settings) - {"columns"} == set(SETTINGS)
    restored, problems = from_query(_query(settings))
    assert problems == [] and restored == settings


def test_a_link_with_only_the_defaults_is_empty_and_restores_the_defaults():
    assert to_query(PAGE_DEFAULTS) == ""
    assert from_query({}) == (PAGE_DEFAULTS, [])


def test_a_link_names_what_it_cannot_use_and_keeps_the_default():
    restored, problems = from_query({"max_new_tokens": "lots", "temperature": "9", "use_chat_template": "maybe",
                                     "c2": "eos_reward+nonsense", "columns": "7", "colour": "red"})
    assert restored["max_new_tokens"] == PAGE_DEFAULTS["max_new_tokens"]
    assert restored["temperature"] == PAGE_DEFAULTS["temperature"]
    assert restored["columns"] == PAGE_DEFAULTS["columns"]
    text = " | ".join(problems)
    for expected in ("max_new_tokens must be a whole number, got 'lots'", "temperature must be between 0 and 2",
                     "use_chat_template must be true or false", "c2: unknown intervention 'nonsense'",
                     "columns must be between 1 and 4", "unknown setting 'colour'"):
        assert expected in text


@pytest.mark.parametrize("count", [1, 2, 4])
def test_a_link_sets_the_number_of_columns(count):
    restored, problems = from_query({"columns": str(count), "c1": "ban_eos"})
    assert problems == [] and len(restored["columns"]) == count and restored["columns"][0].name == "ban_eos"


def test_links_shared_before_column_specs_open_the_same_columns():
    restored, problems = from_query({"columns": "2", "c1": "baseline", "c2": "eos_reward+stop_strings"})
    assert problems == [] and [c.name for c in restored["columns"]] == ["baseline", "eos_reward+stop_strings"]
