"""The ledger writer in a child process: the group-commit contract, across a process line.

Everything here runs a real child process on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.ledger import EventError, LedgerEntry, NewEvent, verify_chain
from charter.store import (
    IndexChange,
    ProcessCommitWriter,
    SQLiteStore,
    StoreError,
    open_store,
    verify_store,
)

AT = "2025-01-31T09:30:00Z"


def event(n: int, kind: str = "decision") -> NewEvent:
    return NewEvent(kind, AT, {"n": n, "verdict": "allow", "context": {"confidence": 0.82}})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "charter.db"


@pytest.fixture
def store(path: Path) -> SQLiteStore:
    with open_store(path) as opened:
        yield opened  # type: ignore[misc]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


class TestContract:
    def test_threads_get_contiguous_verified_entries(self, store: SQLiteStore) -> None:
        """Events from 8 threads commit with contiguous seqs and the same bytes as stored."""
        results: list[LedgerEntry] = []
        lock = threading.Lock()

        def work(writer: ProcessCommitWriter, worker: int) -> None:
            futures = [writer.submit(event(worker * 1000 + n)) for n in range(50)]
            entries = [future.result(timeout=30) for future in futures]
            with lock:
                results.extend(entries)

        with ProcessCommitWriter(store, max_batch=64) as writer:
            threads = [threading.Thread(target=work, args=(writer, w)) for w in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(entry.seq for entry in results) == list(range(1, 401))
        assert verify_chain(store.entries()).ok
        by_seq = {entry.seq: entry for entry in results}
        assert all(by_seq[e.seq] == e for e in store.entries())

    def test_one_event_loop_many_appends(self, store: SQLiteStore) -> None:
        """Awaited appends from one loop all resolve, in submission order."""

        async def main(writer: ProcessCommitWriter) -> list[LedgerEntry]:
            futures = [writer.submit_async(event(n)) for n in range(2_000)]
            return list(await asyncio.gather(*futures))

        with ProcessCommitWriter(store) as writer:
            entries = asyncio.run(main(writer))
        assert [e.seq for e in entries] == list(range(1, 2_001))
        assert [e.payload_object()["n"] for e in entries] == list(range(2_000))
        assert verify_store(store).ok

    def test_blocking_callers_after_the_loop_has_gone(self, store: SQLiteStore) -> None:
        """Once a loop read the answers and then closed, blocking callers still get theirs."""

        async def main(writer: ProcessCommitWriter) -> None:
            await writer.submit_async(event(1))

        with ProcessCommitWriter(store) as writer:
            asyncio.run(main(writer))
            started = time.monotonic()
            assert writer.submit(event(2)).result(timeout=10).seq == 2
            assert time.monotonic() - started < 5

    def test_bad_time_fails_at_submit(self, store: SQLiteStore) -> None:
        """A malformed kind or time raises in `submit`, as with the thread writer."""
        with ProcessCommitWriter(store) as writer:
            good = writer.submit(event(1))
            with pytest.raises(EventError, match="RFC 3339"):
                writer.submit(NewEvent("decision", "yesterday", {}))
            assert good.result(timeout=10).seq == 1

    def test_unencodable_payload_fails_only_its_caller(self, store: SQLiteStore) -> None:
        """NaN is refused by the child for its own event; the rest of the batch commits."""
        with ProcessCommitWriter(store) as writer:
            before = writer.submit(event(1))
            bad = writer.submit(NewEvent("decision", AT, {"x": float("nan")}))
            after = writer.submit(event(2))
            with pytest.raises(EventError, match=r"\$\.x"):
                bad.result(timeout=10)
            assert [before.result().seq, after.result().seq] == [1, 2]
        assert store.count() == 2

    def test_unpicklable_payload_fails_at_submit(self, store: SQLiteStore) -> None:
        """A payload holding something that is not data at all never leaves the caller."""
        with ProcessCommitWriter(store) as writer, pytest.raises(EventError):
            writer.submit(NewEvent("decision", AT, {"x": threading.Lock()}))

    def test_group_commits_together_or_not_at_all(self, store: SQLiteStore, path: Path) -> None:
        """A group with one event the database refuses commits none of its events."""
        sqlite3.connect(path, isolation_level=None).execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON ledger_entries"
            " WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with ProcessCommitWriter(store) as writer:
            futures = writer.submit_many([(event(1), None), (event(2, kind="boom"), None)])
            for future in futures:
                with pytest.raises(IntegrityError, match="boom"):
                    future.result(timeout=10)
            assert writer.submit(event(3)).result(timeout=10).seq == 1
        assert [e.kind for e in store.entries()] == ["decision"]

    def test_index_changes_commit_with_their_entries(self, store: SQLiteStore) -> None:
        """A decisions-index insert travels with its event and is in the index after."""
        change = IndexChange(
            "d-1", {"agent": "a", "action": "crm.note", "verdict": "allow"}, insert=True
        )
        with ProcessCommitWriter(store) as writer:
            entry = writer.submit(event(1), change).result(timeout=10)
        row = store.decision_row(decision_id="d-1")
        assert row is not None
        assert row["seq"] == entry.seq

    def test_closed_writer_refuses_events(self, store: SQLiteStore) -> None:
        """Submitting after `close` raises `StoreError`; closing twice is fine."""
        writer = ProcessCommitWriter(store)
        writer.close()
        writer.close()
        with pytest.raises(StoreError, match="closed"):
            writer.submit(event(1))

    def test_close_commits_everything_submitted(self, store: SQLiteStore) -> None:
        """`close` returns once every submitted event is committed and answered."""
        writer = ProcessCommitWriter(store)
        futures = [writer.submit(event(n)) for n in range(500)]
        writer.close()
        assert all(f.done() for f in futures)
        assert store.count() == 500

    def test_memory_store_is_refused(self) -> None:
        """A child process cannot share an in-memory database."""
        with open_store("sqlite://") as memory, pytest.raises(StoreError, match="SQLite"):
            ProcessCommitWriter(memory)


@pytest.fixture
def frozen() -> object:
    """Freeze a writer's child (SIGSTOP) for the test's body; always thaw it after."""
    stopped: list[int] = []

    def freeze(writer: ProcessCommitWriter) -> None:
        os.kill(writer.pid, signal.SIGSTOP)
        stopped.append(writer.pid)

    yield freeze
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def thaw(writer: ProcessCommitWriter) -> None:
    os.kill(writer.pid, signal.SIGCONT)


class TestIdleCommitsInline:
    """A lone event on an idle writer commits on the loop's thread; anything else queues."""

    def test_a_lone_loop_append_commits_without_the_child(
        self, store: SQLiteStore, frozen: Any
    ) -> None:
        """With the child frozen, a lone awaited append still commits, index and all."""
        values = {"agent": "a", "action": "crm.note", "verdict": "allow"}
        change = IndexChange("d-1", values, insert=True)

        async def main(writer: ProcessCommitWriter) -> LedgerEntry:
            return await asyncio.wait_for(writer.submit_async(event(1), change), 10)

        with ProcessCommitWriter(store) as writer:
            frozen(writer)
            entry = asyncio.run(main(writer))
            thaw(writer)
        assert entry.seq == 1
        row = store.decision_row(decision_id="d-1")
        assert row is not None
        assert row["seq"] == 1
        assert verify_store(store).ok

    def test_appends_of_one_turn_go_to_the_child_together(
        self, store: SQLiteStore, frozen: Any
    ) -> None:
        """Several appends in one turn of the loop are the child's batch, in their order."""

        async def main(writer: ProcessCommitWriter) -> list[LedgerEntry]:
            futures = [writer.submit_async(event(n)) for n in range(3)]
            done, _ = await asyncio.wait(futures, timeout=0.5)
            assert not done  # the frozen child holds them
            thaw(writer)
            return list(await asyncio.wait_for(asyncio.gather(*futures), 10))

        with ProcessCommitWriter(store) as writer:
            frozen(writer)
            entries = asyncio.run(main(writer))
        assert [(e.seq, e.payload_object()["n"]) for e in entries] == [(1, 0), (2, 1), (3, 2)]

    def test_a_busy_child_keeps_the_next_append_behind_its_own(
        self, store: SQLiteStore, frozen: Any
    ) -> None:
        """While the child holds an append, a lone loop append waits its turn behind it."""

        async def main(writer: ProcessCommitWriter) -> tuple[LedgerEntry, LedgerEntry]:
            first = writer.submit(event(1))  # in the frozen child's hands
            second = writer.submit_async(event(2))
            done, _ = await asyncio.wait([second], timeout=0.5)
            assert not done
            thaw(writer)
            later = await asyncio.wait_for(second, 10)
            return await asyncio.wrap_future(first), later

        with ProcessCommitWriter(store) as writer:
            frozen(writer)
            first, second = asyncio.run(main(writer))
        assert (first.seq, second.seq) == (1, 2)

    def test_queued_loop_appends_go_before_a_later_blocking_one(self, store: SQLiteStore) -> None:
        """The ledger's order is the order of submission, across the loop and threads."""

        async def main(writer: ProcessCommitWriter) -> tuple[LedgerEntry, LedgerEntry]:
            queued = writer.submit_async(event(1))  # waits for the loop's next turn
            blocking = writer.submit(event(2))  # sends what the loop queued first
            return await queued, await asyncio.wrap_future(blocking)

        with ProcessCommitWriter(store) as writer:
            queued, blocking = asyncio.run(main(writer))
        assert (queued.seq, blocking.seq) == (1, 2)

    def test_the_loop_never_waits_for_another_writers_lock(
        self, store: SQLiteStore, path: Path
    ) -> None:
        """Another connection's write lock sends the event to the child, not the loop.

        The loop keeps serving meanwhile, and the event commits once the lock is let go.
        """
        other = sqlite3.connect(path, isolation_level=None)

        async def main(writer: ProcessCommitWriter) -> LedgerEntry:
            other.execute("BEGIN IMMEDIATE")
            pending = writer.submit_async(event(1))
            started = time.monotonic()
            await asyncio.sleep(0.2)  # the loop runs on: nobody blocked it
            assert time.monotonic() - started < 1.0
            assert not pending.done()
            other.execute("ROLLBACK")
            return await asyncio.wait_for(pending, 30)

        try:
            with ProcessCommitWriter(store) as writer:
                entry = asyncio.run(main(writer))
        finally:
            other.close()
        assert entry.seq == 1
        assert verify_store(store).ok

    def test_an_append_nobody_awaited_still_commits(self, store: SQLiteStore) -> None:
        """Submitted is written, even when its caller's loop ends without awaiting it."""

        async def main(writer: ProcessCommitWriter) -> None:
            writer.submit_async(event(1))
            writer.submit_async(event(2))

        with ProcessCommitWriter(store) as writer:
            asyncio.run(main(writer))
        assert store.count() == 2
        assert verify_store(store).ok

    def test_an_unencodable_lone_payload_fails_only_its_caller(self, store: SQLiteStore) -> None:
        """NaN refused inline reaches its own caller; the next append commits."""

        async def main(writer: ProcessCommitWriter) -> LedgerEntry:
            with pytest.raises(EventError, match=r"\$\.x"):
                await writer.submit_async(NewEvent("decision", AT, {"x": float("nan")}))
            return await writer.submit_async(event(2))

        with ProcessCommitWriter(store) as writer:
            assert asyncio.run(main(writer)).seq == 1
        assert store.count() == 1


class TestFailures:
    def test_a_killed_writer_fails_its_waiters_and_is_replaced(self, store: SQLiteStore) -> None:
        """Waiters hear the writer died; the next event starts a new one; nothing forks."""
        with ProcessCommitWriter(store) as writer:
            assert writer.submit(event(1)).result(timeout=10).seq == 1
            first = writer.pid
            os.kill(first, signal.SIGKILL)
            assert gone_within(first, 10)
            deadline = time.monotonic() + 10
            while writer.problem() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "exited" in (writer.problem() or "")
            entry = writer.submit(event(2)).result(timeout=30)
            assert writer.pid != first
            assert writer.problem() is None
        assert entry.seq == 2
        assert verify_store(store).ok

    def test_a_writer_that_died_unwatched_is_replaced(self, store: SQLiteStore) -> None:
        """A child killed after its loop closed (nobody reading) is replaced on next use."""

        async def main(writer: ProcessCommitWriter) -> None:
            await writer.submit_async(event(1))
            await asyncio.gather(writer.submit_async(event(2)), writer.submit_async(event(3)))

        with ProcessCommitWriter(store) as writer:
            asyncio.run(main(writer))  # its loop read the answers, then closed
            first = writer.pid
            os.kill(first, signal.SIGKILL)
            assert gone_within(first, 10)
            entry = writer.submit(event(4)).result(timeout=30)
            assert writer.pid != first
        assert entry.seq == 4
        assert verify_store(store).ok

    def test_waiters_hear_when_the_writer_dies_under_them(self, store: SQLiteStore) -> None:
        """Appends in flight when the child is killed fail with `StoreError`, not hang."""
        with ProcessCommitWriter(store) as writer:
            writer.submit(event(0)).result(timeout=10)
            os.kill(writer.pid, signal.SIGSTOP)  # frozen: what follows stays unanswered
            futures: list[Future[LedgerEntry]] = [writer.submit(event(n)) for n in range(50)]
            os.kill(writer.pid, signal.SIGKILL)
            for future in futures:
                with pytest.raises(StoreError, match="may or may not have committed"):
                    future.result(timeout=30)
        assert verify_store(store).ok

    def test_the_writer_outlives_no_parent(self, path: Path, tmp_path: Path) -> None:
        """When the process using the writer is killed, the writer exits by itself."""
        open_store(path).close()
        script = textwrap.dedent(
            f"""
            import sys
            from charter.ledger import NewEvent
            from charter.store import ProcessCommitWriter, open_store
            writer = ProcessCommitWriter(open_store({str(path)!r}))
            for n in range(100):
                writer.submit(NewEvent("decision", {AT!r}, {{"n": n}})).result()
            print(writer.pid, flush=True)
            sys.stdin.read()
            """
        )
        user = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert user.stdout is not None
        child = int(user.stdout.readline())
        user.kill()
        user.wait(timeout=10)
        assert gone_within(child, 10)
        with open_store(path) as reopened:
            assert reopened.count() == 100
            assert verify_store(reopened).ok

    def test_a_writer_that_cannot_open_the_store_says_why(self, tmp_path: Path) -> None:
        """A store the child cannot open fails the constructor with the child's reason."""
        with pytest.raises(StoreError, match="did not start"):
            ProcessCommitWriter(tmp_path / "missing-folder" / "charter.db")


class TestGateway:
    def test_charter_decides_through_a_writer_process(self, tmp_path: Path) -> None:
        """`Charter(writer="process")`: decisions, grants and outcomes as with a thread."""
        request = {
            "agent": "support-bot",
            "action": "crm.note",
            "args": {"customer_id": "c-1", "text": "called back"},
            "context": {"confidence": 0.9, "rationale": "keeping the record current"},
        }
        with Charter(EXAMPLE_POLICY, tmp_path / "c.db", writer="process") as charter:
            record = charter.decide(request)
            assert record.grant is not None
            charter.redeem(record.grant.id, record.grant.token, request["args"])
            charter.record_outcome(record.id, success=True)
            again = asyncio.run(charter.decide_async(request))
            view = charter.get_decision(record.id)
            assert view is not None
            assert view.state == "executed"
        assert again.seq > record.seq
        with open_store(tmp_path / "c.db") as reopened:
            assert verify_store(reopened).ok

    def test_unknown_writer_is_refused(self, tmp_path: Path) -> None:
        """A misspelt writer is a clear error, not a silent default."""
        with pytest.raises(ValueError, match="`thread` or `process`"):
            Charter(EXAMPLE_POLICY, tmp_path / "c.db", writer="fork")  # type: ignore[arg-type]
