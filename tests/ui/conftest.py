"""Fixtures for the reviewer UI: a real `charter serve`, keys, and Debian's Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _ui import Server, start_server

from _browser import Pages, chromium


@pytest.fixture
def server(store_target: str) -> Iterator[Server]:
    """A real `charter serve`, once per store (a SQLite file, a PostgreSQL database)."""
    running = start_server(store_target)
    yield running
    running.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium for this folder's tests, closed after them.

    Playwright's sync API keeps an event loop running in the thread until it stops, and
    tests of other folders that run later may run their own.
    """
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser: Any, server: Server) -> Iterator[Callable[[], Any]]:
    """Open pages in fresh browser contexts (one per reviewer); page errors fail the test."""
    pages = Pages(browser, server.url)
    yield pages.open
    pages.close()
