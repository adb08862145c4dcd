"""Text that can hold a token, a prompt, a file name or a model's words shows as written in the page itself: a
column named after markup, in real Chromium (tests/unit and tests/engine feed every view the same text)."""

from __future__ import annotations

import re
from urllib.parse import quote

from tests.browser.pages import open_page, wait_until_finished


def test_a_column_named_with_markup_shows_as_text_in_chromium(browser, app_server):
    """The page itself: a stop string of tags, emphasis and dollars names a column; its status, the story and the
    chart's legend show it as written and no script element appears. Then the doctor's report draws its marks."""
    column = 'stop_strings(strings="</s>"|"<script>alert(1)</script>"|"**b**"|"$$x$$")'
    page = open_page(browser, f"{app_server}?prompt=Hi&columns=1&max_new_tokens=3&c1={quote(column)}")
    page.evaluate("() => { window.alerted = false; window.alert = () => { window.alerted = true; }; }")
    scripts = page.evaluate("() => document.scripts.length")
    page.locator("#run").click()
    wait_until_finished(page, 1)
    page.wait_for_function("() => document.querySelector('#chart .legendtext') !== null", timeout=30_000)
    status = page.locator("#status-0").text_content()
    story = page.locator("#story").text_content()
    legend = page.locator("#chart .legendtext").first.text_content()
    for shown in (status, story, legend):
        assert all(piece in shown for piece in ['"</s>"', '"<script>alert(1)</script>"', '"**b**"', '"$$x$$"']), shown
    assert page.evaluate("() => document.scripts.length") == scripts and not page.evaluate("() => window.alerted")
    assert page.locator("#status-0 strong").count() == 1  # the name, in bold: our own markup
    assert page.locator("#story strong, #story em, #status-0 em, .katex").count() == 0
    # The doctor's report marks each finding with a badge the page's CSS draws (no emoji font here).
    page.get_by_role("tab", name="EOS doctor").click()
    page.get_by_role("button", name="Examine the model").click()
    page.wait_for_function("() => document.querySelector('#doctor-report').innerText.includes('problem(s)')",
                           timeout=300_000)
    marks = page.evaluate("""() => [...document.querySelectorAll('#doctor-report .status-mark')]
                             .map(e => [e.classList[1], e.getBoundingClientRect().width > 8])""")
    assert ["warning", True] in marks and ["ok", True] in marks  # SmolLM2: pad == EOS is its one warning
    assert not re.search("[\u2705\u274c\u26a0]", page.locator("#doctor-report").text_content())
