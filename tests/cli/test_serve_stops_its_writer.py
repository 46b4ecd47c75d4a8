"""`charter serve` stopped with SIGTERM closes its ledger writer process before it exits.

SQLite only: the writer process is a SQLite file's (`--ledger-writer process`); on
PostgreSQL `charter serve` commits from a thread, and has no such child to stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from charter.examples import EXAMPLE_POLICY
from charter.store import open_store, verify_store

SCRIPT = Path(sys.executable).with_name("charter")
WAIT = 60.0  # seconds for the server to start, or to stop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie only waits to be reaped: it counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def writer_children(parent: int) -> list[int]:
    """The ledger writer processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"_writer_main" in command:
            found.append(int(entry.name))
    return found


def test_sigterm_stops_the_writer_before_the_server_exits(tmp_path: Path) -> None:
    """SIGTERM: the server drains, closes its writer, then ends by the signal; none is left."""
    db = tmp_path / "c.db"
    port = free_port()
    command = ["serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db), "--port", str(port)]
    server = subprocess.Popen(
        [str(SCRIPT), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writers: list[int] = []
    try:
        deadline = time.monotonic() + WAIT
        while not listening(port):
            assert server.poll() is None, "the server exited before it listened"
            assert time.monotonic() < deadline, "the server did not start listening"
            time.sleep(0.1)
        writers = writer_children(server.pid)
        assert len(writers) == 1
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=WAIT) == -signal.SIGTERM
        # The server waited for its writer (and reaped it) before it ended.
        assert not alive(writers[0])
    finally:
        for pid in writers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        server.wait(timeout=WAIT)
    with open_store(db, read_only=True) as store:
        assert verify_store(store).ok
        assert store.count() >= 1  # the policy deployment, committed through the writer
