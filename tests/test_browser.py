"""The page in real Chromium: set sliders, Run, both columns finish, charts render, a screenshot is saved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def page(app_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(app_server, wait_until="domcontentloaded")  # Gradio keeps a connection open: never "networkidle"
        page.get_by_role("button", name="Run", exact=True).wait_for(timeout=60_000)
        yield page
        browser.close()


def set_slider(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=False).locator("visible=true").first
    # A Gradio slider has a number box and a range input with the same label; the number box takes typing.
    number = page.locator(f'input[type="number"][aria-label*="{label}"]').first
    target = number if number.count() else box
    target.fill(str(value))
    target.press("Enter")


def wait_for_both_columns(page) -> None:
    page.wait_for_function(
        """() => ['#status-0', '#status-1'].map(id => document.querySelector(id))
                 .every(e => e && /stopped by EOS|hit max new tokens|stop string|repetition/.test(e.innerText))""",
        timeout=300_000,
    )


def test_run_streams_both_columns_to_a_stop_and_draws_charts(page):
    set_slider(page, "Max new tokens", 80)
    set_slider(page, "Reward start ratio", 0.5)
    page.get_by_role("button", name="Run", exact=True).click()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait_for_both_columns(page)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=30_000)
    finally:  # what the page showed, finished or not
        page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    texts = [page.locator(f"#status-{i}").inner_text() for i in range(2)]
    assert "hit max new tokens (80)" in texts[0]  # baseline rambles to the limit
    assert "stopped by EOS" in texts[1]  # the ramp column ends it
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 4  # raw + final for two columns
    assert page.locator(".js-plotly-plot .barlayer").count() >= 1
    assert page.locator("#tokens-0 .token-view span").count() == 80
    assert page.get_by_text("Download trace (JSON)").is_visible()
