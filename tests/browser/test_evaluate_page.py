"""Evaluate in real Chromium: upload a prompt file, give a column its own parameters, run, read the summary and
the charts, open a row in Compare and download the report; a page sees and stops an evaluation it did not start
(local mode) or only its own (public mode)."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

from gradio_client import Client

from tests.browser.pages import fill_and_keep, open_page
from tests.support import ARTIFACTS


def test_evaluate_tab_uploads_runs_and_downloads(browser, app_server, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is the capital of France?"}\n{"prompt": "What can I do in Paris?"}\nnot json\n',
                       encoding="utf-8")
    page = open_page(browser, app_server, height=2000)
    try:
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#evaluate-file input[type=file]").set_input_files(str(prompts))
        page.locator("#evaluate-file").get_by_label("prompts.jsonl").wait_for(timeout=30_000)  # uploaded
        fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), "8")
        page.locator("#evaluate-column-params").get_by_text("Each column's own parameters").click()  # column 2's own strength
        fill_and_keep(page.locator("#evaluate-params-1 textarea, #evaluate-params-1 input").first, "strength=4")
        page.locator("#evaluate-run").click()
        page.locator("#evaluate-status").get_by_text("4 of 4 rows").wait_for(timeout=180_000)
        assert "eos_reward(strength=4)" in page.locator("#evaluate-summary").inner_text()
        page.wait_for_function("() => document.querySelectorAll('#evaluate-lengths .js-plotly-plot, "
                               "#evaluate-reasons .js-plotly-plot').length == 2", timeout=30_000)
        assert "line 3: not valid JSON" in page.locator("#evaluate-status").inner_text()
        assert page.locator("#evaluate-prompts tbody tr").count() == 2
        link = page.locator("#evaluate-prompts a.open-compare").first.get_attribute("href")
        assert urllib.parse.parse_qs(link[1:])["c2"] == ["eos_reward(strength=4)"]
        with page.expect_download() as download:
            page.locator("#evaluate-json").click()
        report = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert report["rows_done"] == 4 and report["settings"]["max_new_tokens"] == 8
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "evaluate.png"), full_page=True)
        page.close()


def start_evaluation(browser, url: str, max_new_tokens: str = "32"):
    """A page that starts an evaluation of the built-in prompts (long enough to act on while it runs)."""
    page = open_page(browser, url)
    page.get_by_role("tab", name="Evaluate").click()
    fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), max_new_tokens)
    page.locator("#evaluate-run").click()
    return page


def wait_for_info(client, key: str, wanted, seconds: float = 120) -> float:
    """Seconds until /info's ``key`` is ``wanted`` (AssertionError after ``seconds``)."""
    start = time.time()
    while client.predict(api_name="/info")[key] != wanted:
        assert time.time() - start < seconds, f"{key} is not {wanted} after {seconds} s"
        time.sleep(0.1)
    return time.time() - start


def elsewhere_on_a_new_page(browser, url: str):
    """A second page on the Evaluate tab, and what it says about evaluations it did not start."""
    page = open_page(browser, url)
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_timeout(1500)  # the tab's select event fills the note
    return page, page.locator("#evaluate-elsewhere").inner_text()


def test_a_local_page_sees_and_stops_an_evaluation_it_did_not_start_and_a_closed_one_stops(browser, app_server):
    client = Client(app_server, verbose=False)
    first = start_evaluation(browser, app_server)
    wait_for_info(client, "active_generations", 1)
    second, note = elsewhere_on_a_new_page(browser, app_server)
    assert "An evaluation started elsewhere (another page or a program) is running" in note
    second.locator("#evaluate-stop").click()
    first.locator("#evaluate-status").get_by_text("stopped").wait_for(timeout=120_000)  # its report says so
    assert wait_for_info(client, "active_generations", 0, 30) < 30
    # A page that starts one and closes: Gradio closes the handler, which stops the evaluation.
    third = start_evaluation(browser, app_server)
    wait_for_info(client, "active_generations", 1)
    third.close()
    seconds = wait_for_info(client, "active_generations", 0, 60)
    # Its rows leave the decode batch at the loop's next step, just after the handler ends (once read at 5 in CI).
    seconds += wait_for_info(client, "rows_in_flight", 0, 60)
    print(f"\nthe closed page's evaluation stopped and its rows left {seconds:.1f} s after the close")
    assert seconds < 15
    first.close()
    second.close()


def test_a_public_page_sees_and_stops_only_its_own_evaluation(browser, public_app_server):
    client = Client(public_app_server, verbose=False)
    first = start_evaluation(browser, public_app_server, "16")
    wait_for_info(client, "active_generations", 1)
    second, note = elsewhere_on_a_new_page(browser, public_app_server)
    assert note.strip() == ""  # a stranger's evaluation is not shown
    second.locator("#evaluate-stop").click()
    second.wait_for_timeout(3000)
    assert client.predict(api_name="/info")["active_generations"] == 1  # nor stopped by another page
    first.locator("#evaluate-stop").click()  # its own page stops it
    first.locator("#evaluate-status").get_by_text("stopped").wait_for(timeout=120_000)
    assert wait_for_info(client, "active_generations", 0, 30) < 30
    first.close()
    second.close()
