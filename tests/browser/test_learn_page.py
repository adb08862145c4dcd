"""The Learn tab in real Chromium: a student walks two lessons (predict → run → feedback pointing at the step,
the inspector opened there, the stage row marked → "now you" → feedback), progress stays in the browser, and an
embedded lesson fits an iframe of 900×700 without horizontal scrolling."""

from __future__ import annotations

import json
import re


RUN_TIMEOUT = 240_000  # a lesson's run on a busy 2-core machine


def open_lesson(context, url: str, title: str):
    """The page at ``url``, once the lesson titled ``title`` is shown (the link's lesson lands just after the page)."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")  # Gradio keeps a connection open: never "networkidle"
    page.locator("#learn-lesson").wait_for(state="visible", timeout=60_000)
    page.wait_for_function("() => window.eosPlayground !== undefined && window.eosLearn !== undefined", timeout=60_000)
    page.wait_for_function("(title) => document.querySelector('#learn-lesson').innerText.includes(title)", arg=title,
                           timeout=60_000)
    return page


def pick(page, group: str, label: str) -> None:
    page.locator(f"#{group}").get_by_label(label, exact=True).check()


def feedback(page, element: str) -> str:
    box = page.locator(f"#{element}")
    page.wait_for_function(f"() => (document.querySelector('#{element}') || {{}}).innerText?.includes(\"This run's answer\")",
                           timeout=RUN_TIMEOUT)
    return box.inner_text()


def inspected(page) -> tuple[int, int, str | None]:
    """The Learn inspector's column and step, and the stage row it marks."""
    page.wait_for_selector("#learn-inspector .inspector[data-step]", timeout=30_000)
    box = page.locator("#learn-inspector .inspector")
    row = page.locator("#learn-inspector tr.why td").first
    return int(box.get_attribute("data-column")), int(box.get_attribute("data-step")), \
        row.inner_text() if row.count() else None


def selected_on_chart(page):
    return page.evaluate("""() => {
      const plot = document.querySelector('#learn-chart .js-plotly-plot');
      const point = plot && plot.data.find(t => t.meta && t.meta.kind === 'selected');
      return point ? [point.meta.column, point.x[0]] : null;
    }""")


def test_a_student_walks_two_lessons_and_progress_stays_in_the_browser(browser, app_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Lesson 4 (EOS), by its link: the Learn tab opens on it.
    page = open_lesson(context, app_server + "?lesson=4", "4. EOS, and how a model stops")
    assert page.locator('button[role="tab"][aria-selected="true"]').inner_text().strip() == "Learn"
    # Run before predicting: refused with a sentence, nothing runs.
    page.locator("#learn-run").click()
    page.get_by_text("choose your answer before Run").first.wait_for(timeout=30_000)
    page.locator("#learn-number input, #learn-number textarea").first.fill("7")
    page.locator("#learn-run").click()
    text = feedback(page, "learn-feedback")
    step = int(re.search(r"This run's answer: step (\d+)", text).group(1))
    assert ("Right" in text) == (abs(step - 7) <= 2)  # the question's tolerance: 2 steps
    assert f"See column 1 at step {step} on the chart, and the 'raw' row in the inspector" in text
    # The page points at that step: the inspector opened there, the stage row marked, the chart's marker on it.
    assert inspected(page) == (0, step, "raw")
    page.wait_for_function("() => document.querySelector('#learn-chart .js-plotly-plot')", timeout=30_000)
    assert selected_on_chart(page) == [0, step]
    assert page.locator(f'#learn-tokens-0 [data-s="{step}"].sel').count() == 1
    # Now you: make the column ban_eos, predict its stop reason, run again.
    page.locator("#learn-now").wait_for(state="visible")
    assert "ban_eos" in page.locator("#learn-change").inner_text()
    pick(page, "learn-change-column", "ban_eos")
    pick(page, "learn-now-choice", "max new tokens")
    page.locator("#learn-now-run").click()
    now = feedback(page, "learn-now-feedback")
    assert "Right: you said max_new_tokens. This run's answer: max_new_tokens." in now
    assert page.locator("#learn-status-0").inner_text().startswith("ban_eos")
    assert inspected(page)[2] == "interventions"
    stored = json.loads(page.evaluate("() => localStorage.getItem('eos-learn')"))
    assert stored["done"] == ["eos"] and len(stored["predictions"]) == 2
    page.close()

    # Lesson 1 in the same browser: lesson 4 is marked done; a yes/no prediction, then the temperature slider.
    page = open_lesson(context, app_server + "?lesson=1", "1. The next token")
    page.wait_for_function("() => document.querySelector('#learn-progress a[data-lesson=\"eos\"]').classList.contains('done')")
    assert "1 of 8 lessons done · 2 predictions made" in page.locator("#learn-progress").inner_text()
    pick(page, "learn-choice", "no")
    page.locator("#learn-run").click()
    text = feedback(page, "learn-feedback")
    assert re.search(r"This run's answer: (yes|no)\.", text)
    assert inspected(page)[:2] == (0, 0)
    temperature = page.locator("#learn-change-temperature input[type='number']")
    temperature.fill("1")
    temperature.blur()
    page.wait_for_timeout(500)
    pick(page, "learn-now-choice", "no")
    page.locator("#learn-now-run").click()
    now = feedback(page, "learn-now-feedback")
    answer = re.search(r"This run's answer: (yes|no)\.", now).group(1)
    right = answer == "no"  # the page marks the feedback with its badge (no emoji: a font may not have them)
    assert page.locator(f"#learn-now-feedback .status-mark.{'ok' if right else 'problem'}").count() == 1
    assert ("Right" in now) == right
    stored = json.loads(page.evaluate("() => localStorage.getItem('eos-learn')"))
    assert stored["done"] == ["eos", "greedy"] and len(stored["predictions"]) == 4
    context.close()


def test_an_embedded_lesson_fits_900_by_700_without_horizontal_scrolling(browser, app_server):
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = open_lesson(context, app_server + "?lesson=2&embed=1", "2. Temperature")
    page.wait_for_timeout(500)
    # Only the lesson: no title, no other tabs, no footer.
    assert not page.locator("#title").is_visible()
    assert not page.get_by_role("tab", name="Compare").is_visible()
    assert page.locator("footer").count() == 0 or not page.locator("footer").first.is_visible()
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 900
    # After a run too, with the tokens, the chart and the inspector's stage table on the page.
    pick(page, "learn-choice", "yes")
    page.locator("#learn-run").click()
    feedback(page, "learn-feedback")
    page.wait_for_timeout(500)
    assert page.locator("#learn-inspector tr.why").count() == 1
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 900
    context.close()
