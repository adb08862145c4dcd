"""Hand it over (issue 34): a comparison as one HTML file that a person opens offline, explores and replays, and
any saved trace opened again in the page. Real model, real app, real Chromium."""

from __future__ import annotations

import re

import pytest

from playground.bench.page import FINISHED
from playground.handover import column_fixes, handover_html, read_trace
from playground.trace import saved_json
from playground.views import _p
from tests.support import HOSTILE_PROMPT, HOSTILE_TOKEN


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


def test_the_file_opens_offline_and_shows_the_trace(browser, hostile, playground, tmp_path):
    fixes = column_fixes(playground, hostile)
    path = tmp_path / "comparison.html"
    path.write_text(handover_html(hostile, fixes, playground.bundle.info.stop_token_ids), encoding="utf-8")
    assert path.stat().st_size < 5e6
    page, asked = offline_page(browser, path)
    # Model, prompt and settings; the hostile prompt and token are text.
    assert page.locator("header .prompt").inner_text() == HOSTILE_PROMPT
    assert hostile.model in page.locator("header").inner_text()
    assert HOSTILE_TOKEN in page.locator("#tokens-0").inner_text()
    for index, variant in enumerate(hostile.variants):
        assert re.search(FINISHED, page.locator(f"#status-{index}").inner_text())
        assert page.locator(f"#tokens-{index} [data-s]").count() == len(variant.steps)
    assert page.locator("#story li").count() == len(hostile.variants)
    # A click on a token: the inspector shows that step's numbers from the trace; → moves one step.
    step = hostile.variants[1].steps[3]
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
    for index, variant in enumerate(hostile.variants):
        assert page.locator(f"#tokens-{index} [data-s]").count() == len(variant.steps)
        assert re.search(FINISHED, page.locator(f"#status-{index}").inner_text())
    assert page.evaluate("() => window.pwned") is None
    assert asked == []  # nothing was fetched
    page.context.close()


def model_lines_dropped(code: str) -> str:
    """A fix without where it loads the model from: the app serving a page names this machine's copy, a file names
    the hub id; everything else (prompt, interventions, generate() arguments) must be the same."""
    before, _, after = code.partition("MODEL = ")
    return "\n".join(line for line in before.splitlines() if not line.startswith("# ")) + after.partition("\n")[2]


# The code box's whole text (CodeMirror draws only the lines on screen); its view hangs on the content element.
SNIPPET = "(() => { const e = document.querySelector('#fix-snippet .cm-content'); const tile = e && (e.cmView || e.cmTile); " \
          "return tile ? tile.view.state.doc.toString() : ''; })()"


def open_in_app(page, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("#open-trace").click()
    chooser.value.set_files(str(path))


def toast(page, saying: str) -> str:
    """The text of the toast that says ``saying`` (earlier toasts may still be on screen)."""
    body = page.locator("[data-testid=toast-body]", has_text=saying).first
    body.wait_for(timeout=30_000)
    return body.inner_text()


def test_export_then_open_shows_the_same_views_and_fix_and_branches(browser, app_server, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_server, verbose=False)
    *_, last = client.submit(prompt="Name three colours.", columns=["baseline", "ban_eos"], max_new_tokens=16,
                             api_name="/compare")
    with pytest.raises(AppError, match="trace_id: no trace 'nope' here"):
        client.predict("nope", api_name="/export_html")
    exported = tmp_path / "comparison.html"
    exported.write_bytes(open(client.predict(last["trace_id"], api_name="/export_html"), "rb").read())
    trace = read_trace(exported.read_bytes())
    assert [v.name for v in trace.variants] == ["baseline", "ban_eos"] and len(trace.variants[0].steps) == 16

    file_page, _ = offline_page(browser, exported)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_server, wait_until="domcontentloaded")
    page.locator("#open-trace").wait_for(timeout=60_000)
    page.wait_for_function("() => window.eosPlayground !== undefined && window.Plotly !== undefined", timeout=60_000)
    open_in_app(page, exported)
    page.wait_for_function(f"() => [0, 1].every(i => /{FINISHED}/.test(document.querySelector('#status-' + i).innerText))",
                           timeout=60_000)
    page.wait_for_selector("#chart .js-plotly-plot", timeout=30_000)
    # The same views: statuses, tokens, story, the inspector on the same step; the controls hold the trace's settings.
    for index in range(2):
        assert page.locator(f"#status-{index}").inner_text().strip() == file_page.locator(f"#status-{index}").inner_text().strip()
        assert page.locator(f"#tokens-{index} .token-view").inner_text() == file_page.locator(f"#tokens-{index}").inner_text()
    assert page.locator("#story li").all_inner_texts() == file_page.locator("#story li").all_inner_texts()
    for view in (page, file_page):
        view.locator('#tokens-1 [data-s="5"]').first.click()
    page.wait_for_function("() => document.querySelector('#inspector').innerText.includes('step 5')", timeout=30_000)
    assert page.locator("#inspector .head").inner_text() == file_page.locator("#inspector .head").inner_text()
    assert page.locator("#inspector td.num").all_inner_texts() == file_page.locator("#inspector td.num").all_inner_texts()
    assert page.locator("#prompt textarea").input_value() == "Name three colours."
    assert page.evaluate("() => document.getElementById('columns-row').classList.contains('stale')") is False
    # The same Copy this fix for the column the page offers first (ban_eos), but for where the model is loaded from.
    page.get_by_text("Copy this fix", exact=True).click()
    page.wait_for_function(f"() => ({SNIPPET}).includes('ban_eos')", timeout=30_000)
    shown = page.evaluate(f"() => {SNIPPET}")
    in_file = file_page.locator('#fix-1 pre[data-kind="generate"]').text_content()
    assert model_lines_dropped(shown).rstrip() == model_lines_dropped(in_file).rstrip()
    # "try" works on the opened trace: a new column decoded from the inspected step.
    page.locator("#inspector button.branch").first.click()
    page.wait_for_function(f"() => /{FINISHED}/.test(document.querySelector('#status-2')?.innerText || '')", timeout=120_000)
    page.close()
    file_page.context.close()


def test_the_page_refuses_a_damaged_file_and_shows_a_hostile_trace_as_text(browser, app_server, hostile, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_server, wait_until="domcontentloaded")
    page.locator("#open-trace").wait_for(timeout=60_000)
    text = saved_json(hostile)
    for name, content, sentence in [("truncated.json", text[: len(text) // 2], "damaged JSON"),
                                    ("future.json", text.replace('"schema_version": 1', '"schema_version": 2', 1),
                                     "follows schema 2")]:
        (tmp_path / name).write_text(content, encoding="utf-8")
        open_in_app(page, tmp_path / name)
        assert "Cannot open this trace" in toast(page, sentence)
    (tmp_path / "hostile.json").write_text(text, encoding="utf-8")
    open_in_app(page, tmp_path / "hostile.json")
    page.wait_for_function("() => document.querySelector('#prompt textarea').value.includes('pwned')", timeout=30_000)
    page.wait_for_function(f"() => /{FINISHED}/.test(document.querySelector('#status-0').innerText)", timeout=30_000)
    assert page.locator("#prompt textarea").input_value() == HOSTILE_PROMPT
    assert HOSTILE_TOKEN in page.locator("#tokens-0 .token-view").inner_text()
    assert page.evaluate("() => window.pwned") is None
    # Another visitor's page meanwhile: none of it.
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(app_server, wait_until="domcontentloaded")
    other.locator("#open-trace").wait_for(timeout=60_000)
    other.wait_for_timeout(2000)
    assert other.locator("#status-0").inner_text().strip() == "idle"
    assert "pwned" not in other.locator("#prompt textarea").input_value()
    other.close()
    page.close()
