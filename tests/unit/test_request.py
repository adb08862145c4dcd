"""One request for every door: column specs read back what they write, the settings table in the docs is the
schema's, and the Python API refuses what compare refuses."""

from __future__ import annotations

import pytest

from playground.request import column_from_json, column_to_json, parse_column
from tests.support import ROOT
# Two ramps at different strengths in one comparison, one with its own stop strings.
COLUMNS = ["baseline", "eos_reward(strength=30,reward_start_ratio=0.2)",
           'eos_reward(strength=8,reward_start_ratio=0.2)+stop_strings(strings=Light|"\\n")']


def test_column_specs_read_back_what_they_write():
    for text in [*COLUMNS, "ban_eos@base", "eos_reward(at_boundary=true,schedule=exponential)+min_new_tokens(n=4)"]:
        column = parse_column(text)
        assert parse_column(column.name) == column_from_json(column_to_json(column)) == column
    # Older forms still name the same columns: names joined with "+", bare names in JSON.
    assert parse_column("eos_reward + stop_strings").name == column_from_json(["eos_reward", "stop_strings"]).name \
        == "eos_reward+stop_strings"
    assert column_from_json({"model": "base", "interventions": [{"name": "ban_eos"}]}).name == "ban_eos@base"


def test_the_docs_list_every_setting_as_the_schema_declares_it():
    from playground.request import settings_table

    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert settings_table() in api  # regenerate: python -c "from playground.request import settings_table; print(settings_table())"


def test_the_python_api_refuses_what_compare_refuses():
    from playground.engine import Settings

    with pytest.raises(ValueError, match=r"^temperature must be between 0 and 2, got 2.5$"):
        Settings(temperature=2.5).validate(vocab_size=49152)
