"""Hand it over (issue 34): a comparison as one HTML file that a person opens offline, explores and replays, and
any saved trace opened again in the page. Real model, real app, real Chromium."""

from __future__ import annotations

import json
import os
import re

import pytest

from playground.bench.page import CHROMIUM, CHROMIUM_ARGS, FINISHED
from playground.handover import column_fixes, handover_html, read_trace
from playground.service import Playground
from playground.trace import saved_json
from playground.views import _p

browser_only = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
# A prompt and a token that would run if the file or the page ever used them as markup.
HOSTILE_PROMPT = '</script><script>window.pwned = 1</script> Name a colour.'
HOSTILE_TOKEN = '</s><img src=x onerror="window.pwned = 2">'


@pytest.fixture(scope="module")
def playground(smollm):
    return Playground(smollm)


@pytest.fixture(scope="module")
def trace(playground):
    """A real two-column comparison of the hostile prompt (24 tokens, stages read), one token made hostile as a
    saved file could hold it."""
    comparison = playground.comparison(prompt=HOSTILE_PROMPT, columns=["baseline", "eos_reward(strength=12)"],
                                       max_new_tokens=24)
    for finished in playground.stream(comparison):
        pass
    data = json.loads(saved_json(finished))
    data["variants"][0]["steps"][2]["token"] = HOSTILE_TOKEN
    return read_trace(json.dumps(data))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def offline_page(browser, path):
    """The file in a context with the network off; every request that is not the file is recorded and refused."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_offline(True)
    asked = []
    context.route(re.compile(r"^(?!file:).*"), lambda route: (asked.append(route.request.url), route.abort()))
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.ready === 'true' && window.Plotly !== undefined", timeout=60_000)
    page.wait_for_selector("#chart .js-plotly-plot", timeout=30_000)
    return page, asked


@pytest.mark.browser
@browser_only
def test_the_file_opens_offline_and_shows_the_trace(browser, trace, playground, tmp_path):
    fixes = column_fixes(playground, trace)
    path = tmp_path / "comparison.html"
    path.write_text(handover_html(trace, fixes, playground.bundle.info.stop_token_ids), encoding="utf-8")
    assert path.stat().st_size < 5e6
    page, asked = offline_page(browser, path)
    # Model, prompt and settings; the hostile prompt and token are text.
    assert page.locator("header .prompt").inner_text() == HOSTILE_PROMPT
    assert trace.model in page.locator("header").inner_text()
    assert HOSTILE_TOKEN in page.locator("#tokens-0").inner_text()
    for index, variant in enumerate(trace.variants):
        assert re.search(FINISHED, page.locator(f"#status-{index}").inner_text())
        assert page.locator(f"#tokens-{index} [data-s]").count() == len(variant.steps)
    assert page.locator("#story li").count() == len(trace.variants)
    # A click on a token: the inspector shows that step's numbers from the trace; → moves one step.
    step = trace.variants[1].steps[3]
    page.locator('#tokens-1 [data-s="3"]').click()
    head = page.locator("#inspector .head").inner_text()
    assert "step 3" in head and f"p {_p(step.p_chosen)}" in head and f"raw {_p(step.p_chosen_raw)}" in head
    top = step.top_k[0]
    row = page.locator("#inspector table.topk tr", has_text=repr(top.token)).first.inner_text()
    assert _p(top.p_raw) in row and _p(top.p) in row
    assert page.locator("#inspector table.stages tr").count() == len(step.stages) + 2  # header, stages, the pick
    page.keyboard.press("ArrowRight")
    assert "step 4" in page.locator("#inspector .head").inner_text()
    # The chart: both columns' lines, log and linear; the selected step marked on it.
    traces = page.evaluate("() => document.querySelector('#chart .js-plotly-plot').data.map(t => t.meta.kind)")
    assert traces.count("own") == 2 and traces.count("after") == 2 and "selected" in traces
    page.locator(".eos-chart-toolbar button[data-mode=linear]").click()
    page.wait_for_function("() => document.querySelector('#chart .js-plotly-plot').layout.yaxis.type === 'linear'")
    # Copy this fix: the server's code for each column, in the file.
    page.locator("#fix-1 summary").click()
    assert page.locator('#fix-1 pre[data-kind="generate"]').inner_text().strip() == fixes[1]["generate"].strip()
    # Replay streams the columns again and ends as the comparison ended.
    page.locator("#replay").click()
    page.wait_for_function("() => document.body.dataset.replay === 'running'")
    page.wait_for_function("() => /replaying · [1-9]/.test(document.querySelector('#status-0').innerText)", timeout=10_000)
    page.wait_for_function("() => document.body.dataset.replay === 'done'", timeout=60_000)
    for index, variant in enumerate(trace.variants):
        assert page.locator(f"#tokens-{index} [data-s]").count() == len(variant.steps)
        assert re.search(FINISHED, page.locator(f"#status-{index}").inner_text())
    assert page.evaluate("() => window.pwned") is None
    assert asked == []  # nothing was fetched
    page.context.close()
