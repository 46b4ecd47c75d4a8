"""Helpers for the reviewer UI tests: a real `charter serve`, keys, and Debian's Chromium.

The server runs as a subprocess on 127.0.0.1 on a fresh ledger (a SQLite file, or a
PostgreSQL database through `--store`), under `timeout` so it stops by itself even if
the test process dies. The browser is
`/usr/bin/chromium` driven by Playwright; Playwright never downloads a browser here. On
CI (`CI=true`) a missing browser or a missing htmx fails the run instead of skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

import charter.server.ui
from charter.cli import app
from charter.examples import EXAMPLE_POLICY

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
ARTIFACTS = Path(__file__).parent / "artifacts"
LIFETIME = "180"  # seconds a test server may live at most
#: How long any one browser step may take before the test fails.
STEP_MS = 15_000


def missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI must run the browser tests)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_key(db: str, *args: str) -> str:
    """`charter keys create ...` in process; returns the secret."""
    result = CliRunner().invoke(app, ["keys", "create", "--store", db, *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@dataclass
class Keys:
    alice: str  # reviewer in finance: refunds are routed to her
    bob: str  # reviewer in ops only
    agent: str  # support-bot


@dataclass
class Server:
    url: str
    db: str  # the store: a SQLite file, or a PostgreSQL URL
    keys: Keys
    process: subprocess.Popen[str]

    def stop(self) -> str:
        """Stop the server; returns what it wrote to standard error."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        assert self.process.stderr is not None
        return self.process.stderr.read()


def start_server(db: str) -> Server:
    """`charter serve` on the fresh ledger `db` (a SQLite file or a PostgreSQL URL).

    With Alice (finance), Bob (ops) and an agent key.
    """
    keys = Keys(
        alice=create_key(
            db, "--role", "reviewer", "--label", "alice@example.com", "--groups", "finance"
        ),
        bob=create_key(db, "--role", "reviewer", "--label", "bob@example.com", "--groups", "ops"),
        agent=create_key(db, "--role", "agent", "--agent", "support-bot"),
    )
    port = free_port()
    process = subprocess.Popen(
        [
            "timeout",
            LIFETIME,
            sys.executable,
            "-m",
            "charter",
            "serve",
            "--policy",
            str(EXAMPLE_POLICY),
            "--store",
            db,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Server(f"http://127.0.0.1:{port}", db, keys, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{running.stop()}")
        try:
            if httpx2.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                return running
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise AssertionError("the server did not answer /healthz within 30 s")
        time.sleep(0.1)
