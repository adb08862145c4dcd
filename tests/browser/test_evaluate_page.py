"""Evaluate in real Chromium: upload a prompt file, give a column its own parameters, run, read the summary and
the charts, open a row in Compare and download the report."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

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
