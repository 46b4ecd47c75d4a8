"""A decision is redeemed once and gets one outcome, whichever connection writes.

The database refuses the second write itself (migration 0004), and a group-commit batch
holding a refused event commits everyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from charter.ledger import NewEvent
from charter.store import (
    GroupCommitWriter,
    IndexChange,
    PostgresStore,
    ProcessCommitWriter,
    SetOnceConflict,
    SQLiteStore,
    open_store,
    verify_store,
)
from charter.store._postgres import SEQUENCER_LOCK

AT = "2025-01-31T09:30:00Z"


def decided(store: SQLiteStore, decision_id: str) -> None:
    values = {
        "agent": "a",
        "action": "crm.note",
        "verdict": "allow",
        "grant_id": f"g_{decision_id}",
    }
    store.append(
        [NewEvent("decision", AT, {"id": decision_id})],
        [IndexChange(decision_id, values, insert=True)],
    )


def redeemed(decision_id: str) -> tuple[NewEvent, IndexChange]:
    return (
        NewEvent("grant.redeemed", AT, {"decision_id": decision_id}),
        IndexChange(decision_id, {}, seq_column="redeemed_seq"),
    )


def outcome(decision_id: str) -> tuple[NewEvent, IndexChange]:
    return (
        NewEvent("outcome", AT, {"decision_id": decision_id, "success": True}),
        IndexChange(decision_id, {"outcome_success": True}, seq_column="outcome_seq"),
    )


@pytest.fixture(params=["file", "memory", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SQLiteStore:
    where: str | Path = tmp_path / "charter.db" if request.param == "file" else "sqlite://"
    if request.param == "postgresql":
        where = request.getfixturevalue("postgres").database()
    with open_store(where) as opened:
        yield opened  # type: ignore[misc]


class TestTheDatabaseRefuses:
    def test_a_second_redemption(self, store: SQLiteStore) -> None:
        """Setting `redeemed_seq` twice raises `SetOnceConflict` and writes nothing."""
        decided(store, "d-1")
        event, change = redeemed("d-1")
        store.append([event], [change])
        with pytest.raises(SetOnceConflict, match="already redeemed"):
            store.append([event], [change])
        assert store.count() == 2
        row = store.decision_row(decision_id="d-1")
        assert row is not None
        assert row["redeemed_seq"] == 2
        assert verify_store(store).ok

    def test_a_second_outcome(self, store: SQLiteStore) -> None:
        """Setting `outcome_seq` twice raises `SetOnceConflict` and writes nothing."""
        decided(store, "d-1")
        event, change = outcome("d-1")
        store.append([event], [change])
        with pytest.raises(SetOnceConflict, match="already has an outcome"):
            store.append([event], [change])
        assert store.count() == 2

    def test_the_first_of_each_is_fine(self, store: SQLiteStore) -> None:
        """A redemption and then an outcome on the same decision both commit."""
        decided(store, "d-1")
        for event, change in (redeemed("d-1"), outcome("d-1")):
            store.append([event], [change])
        row = store.decision_row(decision_id="d-1")
        assert row is not None
        assert (row["redeemed_seq"], row["outcome_seq"]) == (2, 3)


@contextlib.contextmanager
def appends_held(store: SQLiteStore | PostgresStore, target: str) -> Iterator[None]:
    """Every append to `store` waits while this holds (as behind another commit)."""
    if isinstance(store, PostgresStore):
        with psycopg.connect(target) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
            yield
            holder.rollback()
        return
    appender = store._appender
    assert appender is not None
    with appender._lock:
        yield


class TestBatchesIsolateTheRefusal:
    def test_thread_writer(self, store_target: str) -> None:
        """One refused redemption in a batch fails alone; the rest of the batch commits."""
        with open_store(store_target) as store:
            for n in range(4):
                decided(store, f"d-{n}")  # type: ignore[arg-type]
            store.append(*map(list, zip(redeemed("d-0"), strict=True)))
            with GroupCommitWriter(store) as writer:
                with appends_held(store, store_target):  # the writer blocks on its first...
                    first = writer.submit(NewEvent("note", AT, {}))
                    time.sleep(0.2)
                    futures = [  # ...while these queue up as one batch
                        *writer.submit_many([redeemed("d-1")]),
                        writer.submit(*redeemed("d-0")),
                        *writer.submit_many([redeemed("d-2"), outcome("d-2")]),
                        writer.submit(*redeemed("d-3")),
                    ]
                first.result(timeout=10)
                errors = [future.exception(timeout=10) for future in futures]
            assert [type(e).__name__ for e in errors] == [
                "NoneType", "SetOnceConflict", "NoneType", "NoneType", "NoneType",
            ]  # fmt: skip
            assert store.count() == 4 + 1 + 1 + 4
            assert verify_store(store).ok

    def test_process_writer(self, tmp_path: Path) -> None:
        """The same in the writer process, with the loop's batch sent in one turn.

        SQLite only: the writer process commits to a SQLite file.
        """
        with open_store(tmp_path / "c.db") as store:
            for n in range(3):
                decided(store, f"d-{n}")
            store.append(*map(list, zip(redeemed("d-0"), strict=True)))

            async def main(writer: ProcessCommitWriter) -> list[object]:
                futures = [writer.submit_async(*redeemed(f"d-{n}")) for n in range(3)]
                return await asyncio.gather(*futures, return_exceptions=True)

            with ProcessCommitWriter(store) as writer:
                results = asyncio.run(main(writer))
            assert [type(r).__name__ for r in results] == [
                "SetOnceConflict", "LedgerEntry", "LedgerEntry",
            ]  # fmt: skip
            assert verify_store(store).ok
