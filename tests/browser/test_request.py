"""One request for every door, in the page: a link with column parameters runs in Chromium the same columns the
CLI runs."""

from __future__ import annotations

import json

import pytest

from playground.cli import main
from playground.links import to_query
from playground.request import DEFAULTS, parse_column

PARIS = "What can I do in Paris?"
N = 24
# Two ramps at different strengths in one comparison, one with its own stop strings.
COLUMNS = ["baseline", "eos_reward(strength=30,reward_start_ratio=0.2)",
           'eos_reward(strength=8,reward_start_ratio=0.2)+stop_strings(strings=Light|"\\n")']


@pytest.mark.slow
def test_a_link_with_column_parameters_runs_the_same_columns_in_chromium(browser, smollm, app_server, monkeypatch,
                                                                         capsys):

    query = to_query({**DEFAULTS, "prompt": PARIS, "max_new_tokens": N, "columns": [parse_column(c) for c in COLUMNS]})
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    assert main(["compare", "--prompt", PARIS, "--max-new-tokens", str(N), "--json",
                 *[part for column in COLUMNS for part in ("--column", column)]]) == 0
    cli = json.loads(capsys.readouterr().out)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(app_server + "?" + query, wait_until="domcontentloaded")
    page.locator("#run").wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelector('#params-1 input, #params-1 textarea')?.value.includes('strength=30')",
                           timeout=30_000)
    assert "Light" in page.locator("#params-2 input, #params-2 textarea").first.input_value()
    page.locator("#run").click()
    page.wait_for_function("""() => [0, 1, 2].every(i => /stopped|hit max|stop string/.test(
                               document.querySelector('#status-' + i).innerText))""", timeout=300_000)
    statuses = [page.locator(f"#status-{i}").inner_text() for i in range(3)]
    page.close()
    for status, variant in zip(statuses, cli["variants"]):
        assert status.startswith(variant["name"])
        assert f"({len(variant['token_ids'])})" in status or f"step {len(variant['steps']) - 1}" in status
