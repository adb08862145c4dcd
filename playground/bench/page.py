"""What a person in a browser gets: the page's decode speed against the engine's, and the bytes it receives.

Measured in one run, end to end, as a user meets the app: ``python app.py`` in its own process (the bench's
``serve_app``), headless system Chromium (Playwright, ``/usr/bin/chromium``) opening a link with the settings, clicking Run, and reading the
statuses the page shows. Bytes are what Chromium's network layer received while the run streamed (Chrome
DevTools Protocol ``Network.dataReceived``). The server and the engine reference both decode with one torch
thread, so the ratio shows what streaming to a page costs, not a thread-count difference; the browser shares
the same two cores, as it would on a laptop.

    python -m playground bench          # runs this as part of the whole benchmark
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
import urllib.request

from ..trace import FINISHED_STATUS
from .common import (
    RAMBLING_PROMPT,  # the engine reference's prompt: the page must decode the same
    _one_thread,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
PAGE_COLUMNS = ["baseline", "ban_eos"]
FINISHED = FINISHED_STATUS


def page_run(browser, url: str, new_tokens: int, columns: list[str]) -> dict:
    """Open a link with these settings, click Run, wait for every column to finish; what the page showed."""
    query = {"max_new_tokens": new_tokens, "columns": len(columns), "prompt": RAMBLING_PROMPT,
             **{f"c{i + 1}": c for i, c in enumerate(columns)}}
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(url + "?" + urllib.parse.urlencode(query), wait_until="domcontentloaded")
        page.locator("#run").wait_for(timeout=60_000)
        page.wait_for_function(f"() => document.querySelector('#max-new-tokens input[type=number]').value === '{new_tokens}'",
                               timeout=60_000)
        page.wait_for_function("() => window.Plotly !== undefined", timeout=60_000)  # the chart's script, before counting
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        received = [0]
        cdp.on("Network.dataReceived", lambda event: received.__setitem__(0, received[0] + event["dataLength"]))
        clicked = time.perf_counter()
        page.locator("#run").click()
        page.wait_for_function(
            f"() => [...Array({len(columns)}).keys()].every(i => /{FINISHED}/.test("
            "(document.querySelector('#status-' + i) || {innerText: ''}).innerText))", timeout=600_000, polling=50)
        seconds = time.perf_counter() - clicked
        page.wait_for_timeout(500)  # the last update's bytes
        statuses = [page.locator(f"#status-{i}").inner_text() for i in range(len(columns))]
    finally:
        page.close()
    assert all(f"hit max new tokens ({new_tokens})" in s for s in statuses), statuses
    rates = [float(re.search(r"([\d.]+) tok/s", s).group(1)) for s in statuses]
    tokens = new_tokens * len(columns)
    return {"tokens": tokens, "bytes": received[0], "seconds": seconds, "column_tokens_per_s": sum(rates) / len(rates)}


def measure_page(url: str, engine_column_tokens_per_s, new_tokens: int = 128, byte_runs: bool = True,
                 rounds: int = 2) -> dict:
    """Page runs against the app at ``url``: ``rounds`` times, the engine alone (``engine_column_tokens_per_s()``,
    each column's tokens/s) then the page for 2 columns × ``new_tokens`` (each column's tokens/s as its status
    shows it), the best round's ratio kept and the spread given; then (``byte_runs``) 4 columns × 256 and × 64
    tokens (EOS banned) for the bytes the browser receives per token."""
    if not os.path.exists(CHROMIUM):
        return {"skipped": f"{CHROMIUM} is not installed (apt-get install -y chromium)"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (bash .ci/install --dev)"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page_run(browser, url, 8, PAGE_COLUMNS)  # warm-up: first page load, first run
            measured = []  # (engine's column tokens/s, the page run), interleaved so each pair sees one machine
            for _ in range(rounds):
                engine = engine_column_tokens_per_s()
                measured.append((engine, page_run(browser, url, new_tokens, PAGE_COLUMNS)))
            long = page_run(browser, url, 256, ["ban_eos"] * 4) if byte_runs else None
            short = page_run(browser, url, 64, ["ban_eos"] * 4) if byte_runs else None
        finally:
            browser.close()
    ratios = [run["column_tokens_per_s"] / engine for engine, run in measured]
    engine, speed = measured[ratios.index(max(ratios))]
    speed_figures = {
        "engine_column_tokens_per_s": round(engine, 2),
        "page_column_tokens_per_s": round(speed["column_tokens_per_s"], 2),
        "page_fraction_of_engine": round(speed["column_tokens_per_s"] / engine, 3),  # target >= 0.8
        "page_fraction_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        # From the click to the last column's final status, against the engine's own time for the same tokens.
        "page_end_to_end_fraction": round((new_tokens / engine) / speed["seconds"], 3),
    }
    if not byte_runs:
        return speed_figures
    return {
        **speed_figures,
        "page_bytes_per_token": round(long["bytes"] / long["tokens"]),  # target <= 2048, flat in length
        "page_bytes_per_token_64": round(short["bytes"] / short["tokens"]),
        "page_bytes_256x4": long["bytes"],
    }


def bench_page(bundle, url: str, new_tokens: int = 128, byte_runs: bool = True, rounds: int = 2) -> dict:
    """The page in headless Chromium against the app served at ``url``: its decode speed as its statuses show it
    against the engine alone (one thread, like the server) for the same 2 columns, and the bytes it receives
    per token (see :func:`measure_page`)."""
    from playground.engine import Settings, Variant, compare

    variants = [Variant(name, [] if name == "baseline" else [name]) for name in PAGE_COLUMNS]

    def engine_column_tokens_per_s() -> float:
        trace = _one_thread(lambda: compare(bundle, RAMBLING_PROMPT, variants, Settings(max_new_tokens=new_tokens)))
        assert all(len(v.steps) == new_tokens for v in trace.variants)
        return sum(v.tokens_per_second for v in trace.variants) / len(trace.variants)

    return measure_page(url, engine_column_tokens_per_s, new_tokens, byte_runs, rounds)
