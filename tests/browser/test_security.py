"""Safe to share, in the page: a refused input's title reaches the toast, and Gradio's own "Error" badge does not
cover the Model panel's line."""

from __future__ import annotations

import re

from tests.support import ARTIFACTS


def test_the_page_shows_the_error_title_in_the_toast_and_keeps_the_model_line_visible(browser, app_server):
    """Gradio 6.31 heads every toast "Error": the title must be in the message, and Gradio's "Error" badge must not
    cover the Model panel's line."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_server, wait_until="domcontentloaded")
    page.get_by_role("button", name="Run", exact=True).wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"^Model: ")).first.click()  # the Model panel, titled by what is loaded
    page.get_by_label("Load another model").fill("/etc")
    page.get_by_role("button", name="Load", exact=True).click()
    toast = page.locator("[data-testid=toast-body]").first
    toast.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # the toast slides in
    page.screenshot(path=str(ARTIFACTS / "load-error-toast.png"))
    text = toast.inner_text()
    assert "Model not loaded — the previous model is still in use" in text and "/etc is not a Hugging Face" in text
    badges = page.locator("[data-testid=status-tracker] span.error")
    assert badges.count() >= 1 and badges.filter(visible=True).count() == 0  # Gradio's badge is there, hidden
    assert page.get_by_text("SmolLM2-135M-Instruct", exact=True).first.is_visible()
    page.locator("[data-testid=toast-close]").first.click()
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Check your input", exact=True).wait_for(timeout=30_000)
    assert "prompt is empty" in page.locator("[data-testid=toast-body]").first.inner_text()
    page.close()
