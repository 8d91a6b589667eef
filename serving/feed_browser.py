"""Open the feed page in a real browser: Debian's Chromium driven by Playwright.

Used by `mmrec serve screenshot` (README's picture) and the browser test. Chromium comes
from Debian's `chromium` package (`.ci/run` installs it; Playwright's own browser download
cannot reach its CDN here), Playwright from PyPI.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmrec.errors import UserError

CHROMIUM = "/usr/bin/chromium"
# Headless as root, with nothing reaching out: without the background-networking flags
# Chromium keeps trying Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1400, "height": 1000}
LOAD_TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    """The Chromium binary, None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@contextmanager
def feed_page(url: str) -> Iterator:
    """A Playwright page showing the feed at `url` (e.g. http://127.0.0.1:3000/feed/) after its
    first answer is on screen."""
    from playwright.sync_api import sync_playwright

    binary = chromium_path()
    if binary is None:
        raise UserError("Chromium is not installed: `apt-get install chromium` (Debian)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(LOAD_TIMEOUT_MS)
            page.goto(url)
            page.wait_for_selector("body[data-loaded]")
            yield page
        finally:
            browser.close()


def wait_for_refresh(page, previous: str | None) -> str:
    """Wait until the page has shown a new answer since `previous` (its data-loaded stamp)."""
    page.wait_for_function(
        "(previous) => document.body.dataset.loaded && document.body.dataset.loaded !== previous",
        arg=previous,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('img')].every((img) => img.complete)"
    )
    return page.evaluate("() => document.body.dataset.loaded")
