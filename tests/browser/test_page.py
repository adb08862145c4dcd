"""The page in real Chromium, as a new user meets it: the first click with the defaults, one screen, click a
token to inspect it, arrows to move, links that restore settings, a narrow phone screen."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser.pages import fill_and_keep, open_page, wait_until_finished
from tests.support import ARTIFACTS, ROOT

# Every text value each column's token view shows, recorded in the page as it changes.
RECORD_VIEWS = """() => {
  window.viewHistory = [[], [], [], []];
  for (let i = 0; i < 4; i++) {
    const view = document.querySelector(`#tokens-${i} .token-view`);
    if (!view) continue;  // a hidden column is not in the page
    new MutationObserver(() => window.viewHistory[i].push(view.textContent))
      .observe(view, { childList: true, subtree: true, characterData: true });
  }
}"""

# The live chart's plotly traces, by kind: the selected step's marker as [column, step].
SELECTED_ON_CHART = """() => {
  const point = document.querySelector('#chart .js-plotly-plot').data.find(t => t.meta.kind === 'selected');
  return point ? [point.meta.column, point.x[0]] : null;
}"""


def inside_viewport(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    viewport = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 120) <= viewport["height"] \
        and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]


@pytest.fixture(scope="module")
def first_run(browser, app_server):
    """A new user's first click: the defaults, at 1400×900, with the bytes the browser receives counted."""
    page = open_page(browser, app_server)
    page.evaluate(RECORD_VIEWS)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    received = {"bytes": 0}
    cdp.on("Network.dataReceived", lambda event: received.__setitem__("bytes", received["bytes"] + event["dataLength"]))
    page.locator("#run").click()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        statuses = wait_until_finished(page, 3)
        page.wait_for_function("() => document.querySelector('#inspector').innerText.includes('step')", timeout=30_000)
    finally:  # what the page showed, finished or not
        page.screenshot(path=str(ARTIFACTS / "playground.png"))
    history = page.evaluate("() => window.viewHistory")
    yield page, statuses, received["bytes"], history
    page.close()


def test_first_click_with_the_defaults_shows_three_different_endings(first_run):
    page, statuses, _, _ = first_run
    baseline, ramp, article = statuses
    assert baseline.startswith("baseline") and "hit max new tokens (80)" in baseline
    assert ramp.startswith("eos_reward") and "stopped by EOS at step" in ramp
    assert article.startswith("seed_article") and "stopped by EOS at step" in article
    assert int(re.search(r"step (\d+)", article).group(1)) < 16  # the article's processor cuts it within a few tokens
    story = page.locator("#story").inner_text()
    assert "baseline hit the 80-token limit" in story
    assert "(a sentence end)" in story and "(mid-sentence)" in story  # in words: the ramp ends cleanly, the article cuts
    shutil.copy(ARTIFACTS / "playground.png", ROOT / "docs" / "screenshot.png")  # the README's picture, at the defaults


def test_the_text_and_the_chart_share_one_screen(first_run):
    page = first_run[0]
    for width, height in ((1400, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("() => window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        for selector in ("#tokens-0", "#chart .js-plotly-plot", "#inspector", "#story"):
            assert inside_viewport(page, selector), f"{selector} is off screen at {width}×{height}"
    page.set_viewport_size({"width": 1400, "height": 900})


def test_streamed_token_views_only_grow_and_carry_only_what_is_new(first_run):
    page, statuses, received, history = first_run
    for column in range(3):
        texts = [t for t in history[column] if t.strip()]
        if column < 2:  # the article's column may finish within one update
            assert len(texts) >= 2, "the column should stream in several updates"
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    tokens = sum(int(n) for n in re.findall(r"hit max new tokens \((\d+)\)", " ".join(statuses)))
    tokens += sum(int(n) + 1 for n in re.findall(r"stopped by EOS at step (\d+)", " ".join(statuses)))
    # Re-sending each column's whole view and chart at every update would cost tens of KB per token here.
    assert received / tokens < 2048, f"{received} bytes for {tokens} tokens"


def test_clicking_a_token_inspects_that_step_and_arrows_move_one_step(first_run):
    page = first_run[0]
    assert "eos_reward" in page.locator("#inspector").inner_text()  # opens on the ramp's stop
    assert "would need +" in page.locator("#inspector").inner_text()
    token = page.locator("#tokens-0 [data-s='5']")
    token.scroll_into_view_if_needed()
    token.click()
    page.wait_for_function("() => document.querySelector('#inspector').innerText.includes('step 5 ·')", timeout=30_000)
    text = page.locator("#inspector").inner_text()
    assert text.startswith("baseline") and "chose" in text and "argmax" in text
    assert page.locator("#tokens-0 [data-s='5'].sel").count() == 1  # marked in the text
    assert page.evaluate(SELECTED_ON_CHART) == [0, 5]  # and on the chart
    page.locator("#story").click()  # focus leaves the token, as after any click on the page
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#inspector').innerText.includes('step 6 ·')", timeout=30_000)
    assert page.locator("#tokens-0 [data-s='6'].sel").count() == 1


# Per column of the live chart: its solid line's points and its stop marker's [symbol, name] (null: none drawn).
CHART_COLUMNS = """() => {
  const traces = document.querySelector('#chart .js-plotly-plot').data;
  const own = traces.filter(t => t.meta.kind === 'own');
  const stop = (t) => traces.find(s => s.meta.kind === 'stop' && s.meta.column === t.meta.column);
  return own.map(t => ({ name: t.name, dash: t.line.dash, points: t.x.length,
                         stop: stop(t) ? [stop(t).marker.symbol, stop(t).name] : null }));
}"""


def test_the_live_chart_is_plotly_with_a_line_and_a_stop_marker_per_column_and_three_modes(first_run):
    page = first_run[0]
    assert inside_viewport(page, "#chart .js-plotly-plot")
    columns = sorted(page.evaluate(CHART_COLUMNS), key=lambda c: c["name"])
    assert [c["name"] for c in columns] == ["baseline", "eos_reward", "seed_article"]
    assert all(c["dash"] == "solid" and c["stop"] for c in columns)
    # each marker and its name as the server's PAGE_CONFIG gives them (page.js copies no stop reason)
    assert [c["stop"] for c in columns] == [["square", "baseline stopped: max new tokens"],
                                            ["star", "eos_reward stopped: eos"], ["star", "seed_article stopped: eos"]]
    assert next(c for c in columns if c["name"] == "baseline")["points"] == 80
    assert page.locator("#chart .legendtext").count() == 3  # one legend entry per column (toggles its lines)
    axis = "() => { const l = document.querySelector('#chart .js-plotly-plot')._fullLayout; return [l.yaxis.type, l.yaxis.title.text]; }"
    assert page.evaluate(axis) == ["log", "p(EOS)"]
    for mode, expected in (("linear", ["linear", "p(EOS)"]), ("margin", ["linear", "EOS behind by"]), ("log", ["log", "p(EOS)"])):
        page.locator(f"#chart button[data-mode={mode}]").click()
        page.wait_for_function(f"() => ({axis})().join() === {','.join(expected)!r}", timeout=10_000)
        assert page.locator(f"#chart button[data-mode={mode}].on").count() == 1


def test_clicking_a_point_on_the_chart_inspects_that_step(first_run):
    page = first_run[0]
    page.locator("#chart .js-plotly-plot").scroll_into_view_if_needed()
    x, y = page.evaluate("""() => {
      const gd = document.querySelector('#chart .js-plotly-plot'), l = gd._fullLayout;
      const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
      return [box.left + l.xaxis.l2p(7), box.top + box.height / 2];
    }""")
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelector('#inspector').innerText.includes('step 7 ·')", timeout=30_000)
    assert page.evaluate(SELECTED_ON_CHART)[1] == 7


def test_a_newline_token_is_visible_and_clickable(first_run):
    page = first_run[0]
    newline = page.locator("[id^=tokens-] [data-s]", has_text="↵").first
    step = int(newline.get_attribute("data-s"))
    box = newline.bounding_box()
    assert box["width"] > 3  # drawn as ↵, not zero-width
    newline.click()
    page.wait_for_function(f"() => document.querySelector('#inspector').innerText.includes('step {step} ·')", timeout=30_000)
    assert "\\n" in page.locator("#inspector .head").inner_text()  # the token, as Python writes it


def test_what_if_it_had_stopped_here_decodes_a_branch_beside_the_columns(first_run):
    """Pick EOS in the inspector at a baseline step: a fourth column forks there and stops by EOS at that step."""
    page = first_run[0]
    page.locator("#tokens-0 [data-s='3']").click()
    page.wait_for_function("() => document.querySelector('#inspector').innerText.startsWith('baseline · step 3 ·')",
                           timeout=30_000)
    page.locator("#inspector tr.eos button.branch").click()
    page.wait_for_function("() => /stopped by EOS at step 3/.test((document.querySelector('#status-3') || {}).innerText)",
                           timeout=120_000)
    assert page.locator("#status-3").inner_text().startswith("baseline → '<|im_end|>' at step 3")
    page.wait_for_function("() => document.querySelector('#story').innerText.includes('at step 3')", timeout=30_000)
    assert page.locator("#chart .legendtext").all_text_contents().count("baseline → '<|im_end|>' at step 3") == 1  # on the chart
    assert page.locator("#tokens-3 [data-s]").count() == 4  # three tokens shared with the baseline, then EOS


def visible_columns(page) -> list[str]:
    return [status.inner_text() for status in page.locator("[id^=status-]").all() if status.is_visible()]


def test_three_branches_beside_a_three_column_run_and_one_removed(first_run):
    """Branches beyond the run's columns (up to the stated limit), each with "remove"; removing one renumbers
    the rest, the chart included."""
    page = first_run[0]
    for step in (1, 2, 4):  # EOS at these baseline steps: each branch stops at once
        if sum("→" in s for s in visible_columns(page)) >= 3:
            break
        count = len(visible_columns(page))
        page.locator(f"#tokens-0 [data-s='{step}']").click()
        page.wait_for_function(f"() => document.querySelector('#inspector').innerText.startsWith('baseline · step {step} ·')",
                               timeout=30_000)
        page.locator("#inspector tr.eos button.branch").click()
        page.wait_for_function(f"() => /stopped by EOS at step {step}/.test((document.querySelector('#status-{count}') || {{}}).innerText)",
                               timeout=120_000)
        # The branch's last update (its "remove", the inspector on it) lands just after that status: wait for it
        # before inspecting the next token, or it replaces the inspector between the check and the click.
        page.wait_for_function(f"() => (document.querySelector('#remove-{count}') || {{}}).offsetParent != null",
                               timeout=30_000)
    columns = visible_columns(page)
    assert len(columns) == 6 and sum("→" in s for s in columns) == 3
    # "remove" comes with a branch's last update, just after the status that says it stopped
    page.wait_for_function("() => [...document.querySelectorAll('.remove-branch')].filter(b => b.offsetParent).length === 3",
                           timeout=30_000)
    removed = columns[4].split(" — ")[0]
    page.locator("#remove-4").click()
    page.wait_for_function("() => !document.querySelector('#status-5') || !document.querySelector('#status-5').offsetParent",
                           timeout=30_000)
    assert [s.split(" — ")[0] for s in visible_columns(page)] == [s.split(" — ")[0] for s in columns[:4] + columns[5:]]
    page.wait_for_function(f"() => !document.querySelector('#chart').textContent.includes({removed!r})", timeout=10_000)
    assert len(page.evaluate(CHART_COLUMNS)) == 5
    assert removed not in page.locator("#story").inner_text()


def test_picking_an_example_marks_the_results_from_the_previous_run(first_run):
    page = first_run[0]
    assert page.locator("#stale-note").is_hidden()
    page.locator("#examples input").click()
    page.get_by_role("option", name="Write a haiku about the sea.").click()
    page.wait_for_function("() => document.body.classList.contains('stale-results')", timeout=10_000)
    assert page.locator("#stale-note").is_visible() and "previous run" in page.locator("#stale-note").inner_text()
    assert float(page.evaluate("() => getComputedStyle(document.querySelector('#story')).opacity")) < 1


def test_the_evaluate_table_fits_1400_px(browser, app_server, tmp_path):
    page = open_page(browser, app_server)
    try:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("Say hi.\nName a colour.\n")
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#evaluate-file input[type=file]").set_input_files(str(prompts))
        page.locator("#evaluate-file").get_by_label("prompts.txt").wait_for(timeout=30_000)  # uploaded
        fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), "6")
        page.locator("#evaluate-run").click()
        page.wait_for_function("() => /of 4 rows/.test(document.querySelector('#evaluate-status').innerText)", timeout=300_000)
        table = page.locator("#evaluate-summary table").first
        table.scroll_into_view_if_needed()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400
        overflow = page.evaluate("""() => [...document.querySelectorAll('#evaluate-summary *')]
                                     .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
                                     .map(e => e.className)""")
        assert overflow == [], f"scrolls sideways: {overflow}"
        assert "NLL/token" in page.locator("#evaluate-summary").inner_text()
        page.screenshot(path=str(ARTIFACTS / "evaluate-1400.png"))
    finally:
        page.close()


def test_a_link_restores_its_settings_and_names_what_it_cannot_use(browser, app_server):
    page = open_page(browser, app_server + "?prompt=Say%20hello&max_new_tokens=12&temperature=0.5&columns=2"
                                          "&c1=ban_eos&c2=eos_reward%2Bstop_strings&colour=red")
    try:
        page.wait_for_function("() => document.querySelector('#prompt textarea').value === 'Say hello'", timeout=30_000)
        assert page.locator("#max-new-tokens input[type=number]").input_value() == "12"
        assert page.locator("#temperature input[type=number]").input_value() == "0.5"
        assert page.locator("#status-1").is_visible() and not page.locator("#status-2").is_visible()
        assert "ban_eos" in page.locator("#picker-0").inner_text()
        assert "stop_strings" in page.locator("#picker-1").inner_text()
        page.get_by_text("unknown setting 'colour' ignored").wait_for(timeout=10_000)
        page.locator("#run").click()
        statuses = wait_until_finished(page, 2)
        assert "hit max new tokens (12)" in statuses[0]  # EOS banned: it runs to the linked limit
        page.locator("#copy-link").click()
        page.wait_for_function("() => (document.querySelector('#link textarea, #link input') || {}).value?.includes('max_new_tokens=12')",
                               timeout=30_000)
        link = page.locator("#link textarea, #link input").first.input_value()
        assert "c1=ban_eos" in link and "temperature=0.5" in link and "prompt=Say%20hello" in link
    finally:
        page.close()


def test_a_narrow_screen_stays_readable(browser, app_server):
    page = open_page(browser, app_server, width=390, height=844)
    try:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 400  # no sideways scrolling
        assert page.locator("#run").is_visible() and page.locator("#prompt textarea").is_visible()
        page.screenshot(path=str(ARTIFACTS / "narrow.png"), full_page=True)
    finally:
        page.close()


def test_the_tabs_share_one_strip_and_each_shows_only_its_own_page(browser, app_server):
    page = open_page(browser, app_server)
    try:
        assert [tab.inner_text() for tab in page.get_by_role("tab").all()] == ["Compare", "EOS doctor", "Evaluate",
                                                                             "Fine-tune", "Learn"]
        own_text = {"Compare": "#run", "EOS doctor": "#doctor-sample", "Evaluate": "#evaluate-run",
                    "Fine-tune": "text=Train a LoRA adapter", "Learn": "#learn-lesson"}
        for name in ["Learn", "Fine-tune", "Evaluate", "EOS doctor", "Compare"]:
            page.get_by_role("tab", name=name).click()
            page.locator(own_text[name]).first.wait_for(timeout=10_000)
            shown = [other for other, selector in own_text.items() if page.locator(selector).first.is_visible()]
            assert shown == [name], f"on {name}, the page also shows {shown}"
    finally:
        page.close()


def test_max_new_tokens_is_a_log_scale_slider_beside_its_box_and_the_next_run_uses_it(browser, app_server):
    page = open_page(browser, app_server + "?prompt=Say%20hello&columns=1&c1=ban_eos&max_new_tokens=1000")
    try:
        compare = page.locator("#controls")
        assert compare.locator("input[type=range]").count() == 3  # max new tokens, reward start ratio, temperature
        scale = page.locator("#max-new-tokens-scale input[type=range]")
        assert float(scale.input_value()) == pytest.approx(9.97, abs=0.01)  # the link's 1000 moved the slider
        scale.fill("3")  # 2^3: as easy to reach as 1024 (position 10)
        page.wait_for_function("() => document.querySelector('#max-new-tokens input[type=number]').value === '8'",
                               timeout=10_000)
        page.locator("#run").click()
        statuses = wait_until_finished(page, 1)
        assert "hit max new tokens (8)" in statuses[0]  # EOS banned: it runs to the slider's limit
        fill_and_keep(page.locator("#max-new-tokens input[type=number]"), "64")  # the box moves the slider back
        page.wait_for_function("() => document.querySelector('#max-new-tokens-scale input[type=range]').value === '6'",
                               timeout=10_000)
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#evaluate-max-new-scale input[type=range]").fill("4")
        page.wait_for_function("() => document.querySelector('#evaluate-max-new input[type=number]').value === '16'",
                               timeout=10_000)
    finally:
        page.close()


def test_a_public_page_names_no_host_path_and_still_loads_plotly(browser, public_app_server):
    import sys
    import urllib.request

    import plotly

    host_paths = {str(Path(plotly.__file__).parent.parent), "site-packages", str(Path.home()), sys.prefix, str(ROOT)}
    for route in ("", "config"):
        body = urllib.request.urlopen(public_app_server + route, timeout=30).read().decode()
        assert "eos-assets/plotly.min.js" in body  # the head names the app's own route
        assert not [path for path in host_paths if path in body], f"/{route} shows a host path"
    script = urllib.request.urlopen(public_app_server + "eos-assets/plotly.min.js", timeout=30)
    assert "max-age=31536000" in script.headers["Cache-Control"] and len(script.read()) > 1_000_000
    page = open_page(browser, public_app_server)  # waits for window.Plotly: the chart's script loaded from that route
    page.close()


UPLOAD_BOXES = """() => [...document.querySelectorAll('.block:has(> button.upload-container)')].filter(b => b.offsetParent)
  .map(block => {
    const box = (e) => e.getBoundingClientRect();
    const label = box(block.querySelector('label[data-testid=block-label]')), drop = box(block.querySelector('button.upload-container'));
    const range = document.createRange();  // what the drop area says, icon included (its wrapper is taller)
    range.selectNodeContents(block.querySelector('[data-testid=upload-text]'));
    const text = range.getBoundingClientRect();
    return { label_over_drop: label.bottom > drop.top + 1, text_cut: text.top < drop.top - 1 || text.bottom > drop.bottom + 1 };
  })"""


def test_every_upload_box_shows_its_label_and_its_drop_text_whole(browser, app_server):
    page = open_page(browser, app_server)
    try:
        for tab in ("Fine-tune", "Evaluate", "EOS doctor"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(500)
            boxes = page.evaluate(UPLOAD_BOXES)
            assert boxes and all(box == {"label_over_drop": False, "text_cut": False} for box in boxes), (tab, boxes)
            if tab == "Fine-tune":
                page.screenshot(path=str(ARTIFACTS / "finetune-1400.png"))
    finally:
        page.close()
