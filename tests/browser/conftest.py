"""The browser tier: Debian's Chromium, headless, driven by Playwright. Without it the tier is skipped, saying why."""

from __future__ import annotations

import os

import pytest

from playground.bench.page import CHROMIUM, CHROMIUM_ARGS  # the bench drives the page the same way


def pytest_collection_modifyitems(config, items):
    if not os.path.exists(CHROMIUM):
        skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install -y chromium)")
        for item in items:
            if item.get_closest_marker("browser"):
                item.add_marker(skip)


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
