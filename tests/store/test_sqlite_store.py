"""The SQLite adapter of the storage port, on real database files.

What is SQLite's own: the file, its WAL journal and pragmas, the `sqlite:///` URL, its
triggers, its write lock and the kept connections that commit and look up. The port's
contract, which every store keeps, is tested on each store in test_port.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from charter.ledger import NewEvent
from charter.store import (
    GroupCommitWriter,
    IndexChange,
    SchemaVersionError,
    SQLiteStore,
    StoreError,
    StoreOpenError,
    _opening,
    open_store,
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


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


class TestOpen:
    def test_migrations_create_the_schema(self, store: SQLiteStore, path: Path) -> None:
        """Opening a new file creates the tables, triggers and WAL journal."""
        connection = raw(path)
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"ledger_entries", "bundles", "checkpoints", "meta", "alembic_version"} <= names
        assert "ledger_entries_no_update" in names
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_newer_schema_is_refused(self, path: Path) -> None:
        """A database migrated by a newer Charter raises `SchemaVersionError`."""
        open_store(path).close()
        raw(path).execute("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(SchemaVersionError, match="`9999`"):
            open_store(path)

    def test_another_database_is_refused_by_name(self) -> None:
        """A URL of a database Charter does not store in is named (password hidden), refused."""
        with pytest.raises(StoreError, match="neither a SQLite file nor a PostgreSQL") as refused:
            open_store("mysql://charter:secret@db/ledger")
        assert "mysql://charter:***@db/ledger" in refused.value.message
        assert "secret" not in refused.value.message

    def test_an_unreachable_postgres_is_named_without_its_password(self) -> None:
        """A PostgreSQL server that does not answer is one error naming it, password hidden."""
        with pytest.raises(StoreOpenError, match="cannot be reached") as refused:
            open_store("postgresql://charter:secret@127.0.0.1:1/ledger")
        assert "postgresql://charter:***@127.0.0.1:1/ledger" in refused.value.message
        assert "secret" not in refused.value.message

    def test_pragmas_are_set_on_every_connection(self, store: SQLiteStore) -> None:
        """Connections run with synchronous=FULL, foreign keys and a busy timeout."""
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


class TestAppend:
    def test_rows_cannot_be_updated_or_deleted(self, store: SQLiteStore, path: Path) -> None:
        """Triggers abort UPDATE and DELETE on ledger rows (PostgreSQL's: test_postgres.py)."""
        store.append([event(1)])
        connection = raw(path)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE ledger_entries SET payload = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM ledger_entries")


class TestTryAppend:
    def test_answers_none_at_once_when_another_writer_holds_it(
        self, store: SQLiteStore, path: Path
    ) -> None:
        """Another connection's write lock: None right away and nothing written.

        A blocking `append` afterwards still waits for the lock, as it always did.
        """
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert store.try_append([event(1)]) is None
        assert time.monotonic() - started < 1.0
        release = threading.Timer(0.3, other.execute, args=("ROLLBACK",))
        release.start()
        try:
            assert [e.seq for e in store.append([event(2)])] == [1]
        finally:
            release.join()
            other.close()
        assert [e.payload_object()["n"] for e in store.entries()] == [2]

    def test_a_memory_store_cannot_tell_without_waiting(self) -> None:
        """Only a SQLite file has the kept connection that can try: others answer None."""
        with open_store("sqlite://") as memory:
            assert memory.try_append([event(1)]) is None
            assert memory.count() == 0


class TestDecisionRow:
    def test_lookups_answer_while_an_append_holds_its_connection(self, store: SQLiteStore) -> None:
        """A lookup never waits on an append in progress: it reads on its own connection."""
        values = {"agent": "a", "action": "crm.note", "verdict": "allow"}
        store.append([event(1)], [IndexChange("d-1", values, insert=True)])
        appender = store._appender
        assert appender is not None
        with appender._lock:  # as during a commit's flush
            row = store.decision_row(decision_id="d-1")
        assert row is not None
        assert row["seq"] == 1


class TestAwaitedAppends:
    """An append its caller waits for at once commits on the caller's thread when idle."""

    def test_an_awaited_append_waits_its_turn_behind_queued_ones(self, store: SQLiteStore) -> None:
        """While the thread holds an earlier event, a later awaited one queues behind it."""
        appender = store._appender
        assert appender is not None
        with GroupCommitWriter(store) as writer:
            with appender._lock:  # the thread takes the first event and blocks on it
                earlier = writer.submit(event(1))
                time.sleep(0.2)
                later = writer.submit(event(2), awaited=True)
                assert not later.done()
            assert (earlier.result(timeout=10).seq, later.result(timeout=10).seq) == (1, 2)

    def test_an_awaited_append_never_waits_for_another_writers_lock(
        self, store: SQLiteStore, path: Path
    ) -> None:
        """With the database locked elsewhere, it queues at once, and commits after."""
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        try:
            with GroupCommitWriter(store) as writer:
                started = time.monotonic()
                pending = writer.submit(event(1), awaited=True)
                assert time.monotonic() - started < 1.0
                assert not pending.done()
                other.execute("ROLLBACK")
                assert pending.result(timeout=30).seq == 1
        finally:
            other.close()


class TestSchemaHead:
    """The fast path that skips Alembic knows the newest migration."""

    def test_head_revision_matches_the_shipped_migrations(self) -> None:
        """`HEAD_REVISION` is Alembic's head, so an up-to-date ledger never loads Alembic."""
        config = Config()
        config.set_main_option("script_location", str(_opening._MIGRATIONS))
        assert ScriptDirectory.from_config(config).get_current_head() == _opening.HEAD_REVISION
