"""The fine-tune story in real Chromium, as a fine-tuner walks it: train a short eos_as_text from the Fine-tune tab,
close the page mid-training and open it again (the training is there, with its progress), compare the adapter
with the base, diagnose it (the first problem: the end written as text), and evaluate base against adapter.

The app is one of its own (it adds adapters to its model, which would change other tests' default columns), and
writes its adapters into a temporary folder."""

from __future__ import annotations

import pytest

from tests.browser.pages import fill_and_keep, open_page, wait_until_finished
from tests.support import launch_app

TRAINING = 15 * 60_000  # ms: a few steps of the app's training on a busy 2-core machine


@pytest.fixture(scope="module")
def story_app(smollm, tmp_path_factory):
    yield from launch_app(env={"PLAYGROUND_ADAPTERS_DIR": str(tmp_path_factory.mktemp("adapters"))})


def fine_tune_tab(page):
    page.get_by_role("tab", name="Fine-tune").click()
    return page.locator("#finetune-status")


def pick(page, selector: str, option: str) -> None:
    """Choose ``option`` in the dropdown ``selector`` as a user does: open it, click the option."""
    page.locator(f"{selector} input").click()
    page.locator(selector).get_by_role("option", name=option, exact=True).click()  # its own list, not another's
    page.keyboard.press("Escape")


def status_has(page, text: str, timeout: int = TRAINING) -> None:
    """Wait until the status says ``text``; on a timeout, say what it said instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("(text) => (document.querySelector('#finetune-status') || {}).innerText?.includes(text)",
                               arg=text, timeout=timeout)
    except PlaywrightTimeout:
        raise AssertionError(f"the status never said {text!r}; it says "
                             f"{page.locator('#finetune-status').inner_text()!r}") from None


def test_a_page_opened_during_a_training_shows_it_and_its_stop_writes_the_adapter(browser, story_app):  # noqa: F811
    """The default suite's short variant: a training started elsewhere (another client), a page opened meanwhile
    that shows it running, and Stop from that page, which writes what it learned."""
    from gradio_client import Client

    client = Client(story_app, verbose=False)
    started = client.submit("correct", None, 40, "left", api_name="/finetune")  # started elsewhere
    page = open_page(browser, story_app)
    try:
        fine_tune_tab(page)
        status_has(page, "Training left (correct): step 1/40")
        page.locator("#finetune-stop").click()
        status_has(page, "Written to")
        status = page.locator("#finetune-status").inner_text()
        assert "Adapter left (correct)" in status and "stopped, adapter kept" in status and "/left" in status
        assert page.locator("#finetune-diagnose").is_visible()
    finally:
        started.cancel()
        page.close()


@pytest.mark.slow
def test_train_close_reopen_compare_diagnose_and_evaluate(browser, story_app, tmp_path):  # noqa: F811
    page = open_page(browser, story_app)
    fine_tune_tab(page)
    pick(page, "#finetune-recipe", "eos_as_text")
    page.wait_for_function("() => document.querySelector('#finetune-name textarea, #finetune-name input')"
                           ".placeholder === 'eos_as_text'", timeout=30_000)  # an empty name is the recipe's
    fill_and_keep(page.locator("#finetune-steps input"), "3")
    page.locator("#finetune-train").click()
    status_has(page, "step 1/3")
    page.close()  # mid-training: the training goes on without the page

    page = open_page(browser, story_app)
    fine_tune_tab(page)
    status_has(page, "Training eos_as_text")  # the reopened page follows it
    assert "step" in page.locator("#finetune-status").inner_text()
    status_has(page, "Written to")
    status = page.locator("#finetune-status").inner_text()
    assert "Adapter eos_as_text" in status and "step 3/3" in status and "/eos_as_text" in status
    assert "Written to /" in status  # the absolute folder, to open

    page.locator("#finetune-compare").click()  # the page opens Compare with baseline@base | baseline@eos_as_text
    page.wait_for_url("**?columns=2*", timeout=60_000)
    page.locator("#run").wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelector('#picker-1').innerText.includes('@eos_as_text')",
                           timeout=60_000)
    assert "@base" in page.locator("#picker-0").inner_text()
    fill_and_keep(page.locator("#max-new-tokens input"), "12")
    page.locator("#run").click()
    base, adapter = wait_until_finished(page, 2)
    assert base.startswith("baseline@base") and adapter.startswith("baseline@eos_as_text")

    fine_tune_tab(page)
    status_has(page, "Written to", timeout=60_000)  # a page opened after the training shows how it ended
    page.locator("#finetune-diagnose").click()  # the Doctor tab, on @eos_as_text, with its training examples
    page.wait_for_function("() => (document.querySelector('#doctor-report') || {}).innerText?.includes('Passed')",
                           timeout=TRAINING)
    assert "@eos_as_text" in page.locator("#doctor-model").inner_text() or \
        page.locator("#doctor-model input").input_value() == "@eos_as_text"
    report = page.locator("#doctor-report")
    assert "@eos_as_text" in report.locator("h2").first.inner_text()
    first = report.locator("h3").first.inner_text()
    assert "Training examples without an EOS id after the answer" in first and "problem" in first

    page.get_by_role("tab", name="Evaluate").click()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What can I do in Paris?\nName a primary colour.\n", encoding="utf-8")
    page.locator("#evaluate-file input[type=file]").set_input_files(str(prompts))
    page.get_by_text("prompts.txt").first.wait_for(timeout=120_000)  # an upload on a busy machine
    fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), "8")
    pick(page, "#evaluate-picker-0", "@base")
    pick(page, "#evaluate-picker-1", "@eos_as_text")
    page.locator("#evaluate-run").click()
    page.locator("#evaluate-status").get_by_text("4 of 4 rows").wait_for(timeout=TRAINING)  # done, not started
    summary = page.locator("#evaluate-summary").inner_text()
    assert "baseline@base" in summary and "eos_reward@eos_as_text" in summary
    page.close()
