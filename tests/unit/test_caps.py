"""Evaluations inside the caps (issue 25), before any model: a sweep's cells counted before any is built, and
prompt lines read with a depth and size limit."""

from __future__ import annotations

import pytest

from playground.evaluate.prompt_files import parse_prompts, prompts_from_items
from playground.evaluate.sweep import Sweep
from playground.jsonlines import loads_line

DEEP = "[" * 200_000 + "]" * 200_000


def test_a_grid_is_refused_by_its_count_before_any_cell_is_built(monkeypatch):
    def built(self):
        raise AssertionError("a cell was built before the grid was allowed")

    monkeypatch.setattr(Sweep, "cells", built)
    spec = " ".join(f"{key}={','.join(str(v) for v in range(1, 300))}" for key in ("strength", "reward_start_ratio"))
    spec = spec[:1990]
    with pytest.raises(ValueError, match=r"^sweep: \d+ × \d+ = [\d,]+ cells; at most 64"):
        Sweep.parse(spec)
    with pytest.raises(ValueError, match="^sweep is 2001 characters long; at most 2000"):
        Sweep.parse("strength=" + "4" * 1992)
    monkeypatch.undo()
    assert len(Sweep.parse("strength=1,2,3,4 reward_start_ratio=0.1,0.2,0.3,0.4 at_boundary=true,false "
                           "force_at_end=true,false").cells()) == 64


def test_a_deeply_nested_prompt_line_is_named_and_skipped():
    data = (DEEP + "\n" + '{"prompt": "Say hi."}\n' + '{"prompt": "x' + "y" * 50 + '"}\n').encode()
    prompts = parse_prompts(data, "jsonl")
    assert [p.text for p in prompts.prompts] == ["Say hi.", "x" + "y" * 50]
    assert prompts.problems == ["line 1: nested more than 64 levels deep; at most 64 are read; skipped"]


def test_a_lone_surrogate_in_a_prompt_gets_a_sentence():
    prompts = prompts_from_items(["Hi \ud83d there", {"messages": [{"role": "user", "content": "ok"}]}])
    assert len(prompts.prompts) == 1
    assert prompts.problems[0].startswith("item 1: the prompt contains an invalid character at position 3 (U+D83D")


@pytest.mark.parametrize("text, message", [
    ('{"a": "' + "[" * 100 + '"}', None),  # brackets inside a string are text
    ('{"a": "\\"[[["}', None),
    ("x" * 1_000_001, "1,000,001 characters long; at most 1,000,000 are read per line"),
    ("{nope", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
])
def test_loads_line_limits(text, message):
    if message is None:
        assert isinstance(loads_line(text), dict)
    else:
        with pytest.raises(ValueError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
            loads_line(text)
