"""Debian's Chromium driven by Playwright, for the tests that look at the reviewer UI.

The browser is `/usr/bin/chromium`; Playwright never downloads one here. On CI
(`CI=true`) a missing browser or a missing htmx fails the run instead of skipping.
Playwright is imported only when a browser is launched or driven.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import charter.server.ui
from _ci import missing

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HTMX = Path(charter.server.ui.__file__).parent / "static/vendor/htmx.min.js"
#: Screenshots of the pages, for people to look at (git-ignored).
ARTIFACTS = Path(__file__).parent / "ui" / "artifacts"
#: How long any one browser step may take before the test fails.
STEP_MS = 15_000


@contextmanager
def chromium() -> Iterator[Any]:
    """Chromium, launched for the `with` block (missing, it skips the test, or fails in CI)."""
    if not CHROMIUM.exists():
        missing(
            "no /usr/bin/chromium: `apt-get install -y --no-install-recommends chromium`",
            "CI must run the browser tests",
        )
    if not HTMX.exists():
        missing(
            "htmx is not fetched: run `python scripts/fetch_htmx.py`",
            "CI must run the browser tests",
        )
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only browser tests need it

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield launched
        launched.close()


class Pages:
    """Pages on one server, each in a fresh browser context; what they report is kept.

    `close` closes them and fails the test if any page logged an error or raised one.
    """

    def __init__(self, browser: Any, url: str) -> None:
        self.browser = browser
        self.url = url
        self.contexts: list[Any] = []
        self.problems: list[str] = []

    def open(self) -> Any:
        context = self.browser.new_context(
            base_url=self.url, viewport={"width": 1360, "height": 900}
        )
        context.set_default_timeout(STEP_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        assert not self.problems, f"the browser reported errors: {self.problems}"


def sign_in_page(page: Any, key: str, where: str = "/ui/fleet") -> None:
    """Go to `where`, sign in with `key` on the form it leads to, and be back at `where`."""
    from playwright.sync_api import expect  # noqa: PLC0415 - only browser tests need it

    page.goto(where)
    expect(page).to_have_url(re.compile(r"/ui/signin"))
    page.fill("#key", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(where) + r"$"))


def shot(page: Any, name: str) -> None:
    """A full-page screenshot `name.png` in `ARTIFACTS`."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")  # noqa: T201 - the path is for the person running the tests
