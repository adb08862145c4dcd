"""The doctor tab's training-example view in real Chromium: upload a sample, pick a line, and see which tokens are
supervised: a masked end token is visibly struck out, a supervised one is shaded and badged."""

from __future__ import annotations

import json

from tests.browser.pages import open_page
from tests.doctor_cases import CHAT, labelled, row


END_STYLE = """(element) => { const s = getComputedStyle(element); const badge = element.querySelector('.sv-end');
  return {line: s.textDecorationLine, background: s.backgroundColor, color: s.color,
          badge: badge ? badge.getBoundingClientRect().width > 0 && getComputedStyle(badge).display !== 'none' : false,
          label: element.querySelector('.sv-label').textContent}; }"""


def show(page, number: int) -> None:
    page.locator("#doctor-example-number input").fill(str(number))
    page.locator("#doctor-example-button").click()
    page.wait_for_function(f"() => (document.querySelector('#doctor-example') || {{}}).innerText?.includes('Example {number}:')",
                           timeout=60_000)


def test_a_masked_end_token_is_struck_out_and_a_supervised_one_badged(browser, app_server, tokenizer, tmp_path):  # noqa: F811
    good = labelled(tokenizer, CHAT)
    masked = {"input_ids": good["input_ids"], "labels": good["labels"][:good["end"]] + [-100] * 2}
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps(masked) + "\n" + json.dumps(row(good)) + "\n")
    page = open_page(browser, app_server)
    try:
        page.get_by_role("tab", name="EOS doctor").click()
        page.locator("#doctor-sample input[type=file]").set_input_files(str(sample))
        page.get_by_text("sample.jsonl").first.wait_for(timeout=30_000)
        answer_end = f"#doctor-example .sv-tok[title^='index {good['end']} ']"
        show(page, 1)
        struck = page.locator(answer_end).evaluate(END_STYLE)
        assert "line-through" in struck["line"] and struck["label"] == "-100"
        assert struck["background"] == "rgb(238, 238, 238)"  # grey: not a training target
        assert f"2 at {good['end']}: masked (label -100)" in page.locator("#doctor-example").inner_text()
        show(page, 2)
        badged = page.locator(answer_end).evaluate(END_STYLE)
        assert badged["badge"] and badged["label"] == "2" and "line-through" not in badged["line"]
        assert badged["background"] == "rgb(200, 230, 201)"  # green: supervised
        assert page.locator(answer_end + " .sv-end").inner_text() == "end"
    finally:
        page.close()
