"""`charter serve` as a subprocess spoken to over TCP, and `charter keys` for its store.

`serve` starts the example policy's server on 127.0.0.1 under `timeout`, so it stops by
itself even if the test process dies, and returns once it answers; `Serving.stop` stops
it (SIGTERM, then SIGKILL) and returns what it wrote to standard error.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx2
from typer.testing import CliRunner

from charter.cli import app
from charter.examples import EXAMPLE_POLICY

#: Seconds a test server lives at most, even if the test dies.
LIFETIME = "180"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_key(store: str, *args: str) -> str:
    """`charter keys create --store STORE ARGS...` in process; returns the secret."""
    result = CliRunner().invoke(app, ["keys", "create", "--store", store, *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@dataclass
class Serving:
    """A `charter serve` subprocess and the URL it answers on."""

    url: str
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


def serve(
    store: str,
    *options: str,
    lifetime: str = LIFETIME,
    ready: str = "/healthz",
    within: float = 30,
) -> Serving:
    """`charter serve` on `store` (a SQLite file or a PostgreSQL URL), with `options`.

    Returns once `ready` answers 200; a server that exits first, or does not answer
    within `within` seconds, fails the test with what it wrote to standard error.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            *("timeout", lifetime, sys.executable, "-m", "charter", "serve"),
            *("--policy", str(EXAMPLE_POLICY), "--store", store),
            *("--host", "127.0.0.1", "--port", str(port), *options),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Serving(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{running.stop()}")
        try:
            if httpx2.get(f"{running.url}{ready}", timeout=1).status_code == 200:
                return running
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            said = running.stop()
            raise AssertionError(f"the server did not answer {ready} within {within:g} s:\n{said}")
        time.sleep(0.1)
