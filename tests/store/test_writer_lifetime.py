"""The ledger writer process never outlives the process that started it.

Each test starts a real parent process that opens `Charter(..., writer="process")`, kills
that parent with SIGKILL (no cleanup of any kind runs), and waits a bounded time for the
writer to be gone. SQLite only: the writer process is a SQLite file's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from charter.examples import EXAMPLE_POLICY
from charter.store import open_store, verify_store

WAIT = 10.0  # seconds a writer may take to notice its parent is gone


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie only waits to be reaped: it counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


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


def start_parent(db: Path, *, fork_a_holder: bool) -> tuple[subprocess.Popen[str], int, int | None]:
    """A process with a `Charter` on a writer process: (it, the writer's pid, the holder's).

    With `fork_a_holder` the parent forks a process that keeps every descriptor it had,
    the writer's request pipe included, so the writer never sees that pipe end.
    """
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from charter import Charter
        charter = Charter({str(EXAMPLE_POLICY)!r}, {str(db)!r}, writer="process")
        holder = 0
        if {fork_a_holder!r}:
            holder = os.fork()
            if holder == 0:
                time.sleep(60)
                os._exit(0)
        print(os.getpid(), holder, flush=True)
        sys.stdin.read()
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert parent.stdout is not None
    pid, holder = (int(word) for word in parent.stdout.readline().split())
    assert pid == parent.pid
    [writer] = writer_children(parent.pid)
    return parent, writer, holder or None


def kill_quietly(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_writer_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL the parent: its writer process is gone soon after, and the ledger verifies."""
    db = tmp_path / "c.db"
    parent, writer, _ = start_parent(db, fork_a_holder=False)
    try:
        parent.kill()
        parent.wait(timeout=WAIT)
        assert gone_within(writer, WAIT)
    finally:
        kill_quietly(writer)
        parent.kill()
        parent.wait(timeout=WAIT)
    with open_store(db, read_only=True) as store:
        assert verify_store(store).ok


def test_the_writer_exits_even_while_its_pipe_is_held_open(tmp_path: Path) -> None:
    """A process the parent forked keeps the writer's pipe open; the writer exits anyway.

    The pipe never ends here, so the writer can only go by hearing that its parent died.
    """
    db = tmp_path / "c.db"
    parent, writer, holder = start_parent(db, fork_a_holder=True)
    try:
        assert holder is not None
        assert alive(holder)
        parent.kill()
        parent.wait(timeout=WAIT)
        assert gone_within(writer, WAIT)
        assert alive(holder)  # the pipe was still open all along
    finally:
        kill_quietly(holder)
        kill_quietly(writer)
        parent.kill()
        parent.wait(timeout=WAIT)
    with open_store(db, read_only=True) as store:
        assert verify_store(store).ok
