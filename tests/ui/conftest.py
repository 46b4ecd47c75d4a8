"""Fixtures for the reviewer UI: a real `charter serve`, keys, and Debian's Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _ui import CHROMIUM, CHROMIUM_ARGS, HTMX, STEP_MS, Server, missing, start_server


@pytest.fixture
def server(store_target: str) -> Iterator[Server]:
    """A real `charter serve`, once per store (a SQLite file, a PostgreSQL database)."""
    running = start_server(store_target)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing("no /usr/bin/chromium: `apt-get install -y --no-install-recommends chromium`")
    if not HTMX.exists():
        missing("htmx is not fetched: run `python scripts/fetch_htmx.py`")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only browser tests need it

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Any, server: Server) -> Iterator[Callable[[], Any]]:
    """Open pages in fresh browser contexts (one per reviewer); page errors fail the test."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_page() -> Any:
        context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
        context.set_default_timeout(STEP_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems, f"the browser reported errors: {problems}"
