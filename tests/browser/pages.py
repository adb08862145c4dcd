"""Driving the page in Chromium the way a person does: open it and wait until it is ready, type into a field
until the page keeps the text, wait until every column has finished."""

from __future__ import annotations

from playground.bench.page import FINISHED  # the bench drives the page the same way


def open_page(browser, url: str, width: int = 1400, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="domcontentloaded")  # Gradio keeps a connection open: never "networkidle"
    page.locator("#run").wait_for(timeout=60_000)
    page.wait_for_function("() => window.eosPlayground !== undefined && window.Plotly !== undefined", timeout=60_000)
    page.wait_for_timeout(500)  # the link's settings land just after the page appears
    return page


def fill_and_keep(field, text: str, tries: int = 4) -> None:
    """Type ``text`` into ``field`` (a locator) and wait until the page holds it. A textbox inside an accordion is
    rendered when the accordion first opens, and Gradio may mount it again just after (gradio#12535): typing that
    lands in between is dropped. Twice in CI, never here; so type again, up to ``tries`` times, and say what was
    lost if it never holds. The test's own checks (the server used the value) come after."""
    seen = []
    for _ in range(tries):
        field.fill(text)
        field.blur()  # Gradio takes a textbox's value on change; let it land before a button reads the inputs
        try:
            field.page.wait_for_function("([el, text]) => el.isConnected && el.value === text",
                                         arg=[field.element_handle(), text], timeout=5_000)
            field.page.wait_for_timeout(300)
            now = field.input_value(timeout=5_000)  # in the element the page shows now
            if now == text:
                return
            seen.append(f"value now {now!r}")
        except Exception as error:  # noqa: BLE001 - a detached element or a timeout: type again
            seen.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    raise AssertionError(f"the field never kept {text!r} after {tries} tries: {seen}")


def wait_until_finished(page, columns: int) -> list[str]:
    page.wait_for_function(
        f"""() => [...Array({columns}).keys()].map(i => document.querySelector('#status-' + i))
                 .every(e => e && /{FINISHED}/.test(e.innerText))""", timeout=900_000)
    page.wait_for_function("() => document.querySelector('#story').innerText.includes('.')", timeout=30_000)
    return [page.locator(f"#status-{i}").inner_text() for i in range(columns)]
