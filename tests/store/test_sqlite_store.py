"""The SQLite adapter of the storage port, on real database files."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from charter.ledger import (
    GENESIS,
    EventError,
    LedgerEntry,
    NewEvent,
    ProblemCode,
    chain_hash,
    generate_signing_key,
    verify_chain,
)
from charter.store import (
    BundleConflictError,
    GroupCommitWriter,
    IndexChange,
    SchemaVersionError,
    SQLiteStore,
    StoreError,
    StoreOpenError,
    _opening,
    checkpoint_store,
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

    def test_reopening_keeps_data_and_log_id(self, path: Path) -> None:
        """Entries, bundles and the log id survive closing and reopening."""
        with open_store(path, log_id="log-a") as first:
            first.append([event(1), event(2)])
            first.put_bundle("v1", b"bundle")
        with open_store(f"sqlite:///{path}") as second:
            assert second.log_id == "log-a"
            assert second.count() == 2
            assert second.get_bundle("v1") == b"bundle"
            assert verify_store(second).ok

    def test_log_id_mismatch_is_refused(self, path: Path) -> None:
        """Opening an existing store under another log id is an error."""
        open_store(path, log_id="log-a").close()
        with pytest.raises(StoreError, match="`log-a`"):
            open_store(path, log_id="log-b")

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
    def test_assigns_contiguous_seqs_and_chains(self, store: SQLiteStore) -> None:
        """Batches continue the seq from the head and chain onto it."""
        first = store.append([event(1), event(2)])
        second = store.append([event(3)])
        assert [entry.seq for entry in first + second] == [1, 2, 3]
        assert second[0].chain_hash == chain_hash(first[-1].chain_hash, second[0].leaf_hash)
        assert store.head().chain_hash == second[0].chain_hash

    def test_empty_batch_writes_nothing(self, store: SQLiteStore) -> None:
        """Appending no events is a no-op."""
        assert store.append([]) == []
        assert store.head() == GENESIS

    def test_bad_event_leaves_nothing(self, store: SQLiteStore) -> None:
        """A batch with one unencodable payload writes none of its events."""
        store.append([event(1)])
        bad = NewEvent("decision", AT, {"x": float("inf")})
        with pytest.raises(EventError):
            store.append([event(2), bad])
        assert store.count() == 1

    def test_failing_insert_rolls_back_the_batch(self, store: SQLiteStore, path: Path) -> None:
        """If the database refuses one row mid-batch, the rows before it are rolled back."""
        store.append([event(1)])
        raw(path).execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON ledger_entries"
            " WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with pytest.raises(IntegrityError):
            store.append([event(2), event(3), event(4, kind="boom")])
        assert store.count() == 1
        assert verify_store(store).ok

    def test_rows_cannot_be_updated_or_deleted(self, store: SQLiteStore, path: Path) -> None:
        """Triggers abort UPDATE and DELETE on ledger rows."""
        store.append([event(1)])
        connection = raw(path)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE ledger_entries SET payload = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM ledger_entries")


class TestTryAppend:
    def test_appends_when_nobody_holds_the_lock(self, store: SQLiteStore) -> None:
        """With the database free, `try_append` is `append`."""
        store.append([event(1)])
        entries = store.try_append([event(2)])
        assert entries is not None
        assert [e.seq for e in entries] == [2]
        assert verify_store(store).ok

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
    def test_lookups_see_commits_from_every_connection(
        self, store: SQLiteStore, path: Path
    ) -> None:
        """The kept connections read what this store, and anyone else, committed last."""
        values = {"agent": "a", "action": "crm.note", "verdict": "allow", "grant_id": "g-1"}
        store.append([event(1)], [IndexChange("d-1", values, insert=True)])
        row = store.decision_row(grant_id="g-1")
        assert row is not None
        assert (row["id"], row["redeemed_seq"]) == ("d-1", None)
        raw(path).execute("UPDATE decisions SET redeemed_seq = 7 WHERE id = 'd-1'")
        again = store.decision_row(decision_id="d-1")
        assert again is not None
        assert again["redeemed_seq"] == 7

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


class TestEntries:
    def test_streams_in_pages(self, store: SQLiteStore) -> None:
        """More entries than one page stream in seq order, with `after` and `limit`."""
        for start in range(0, 2500, 500):
            store.append([event(n) for n in range(start, start + 500)])
        assert [e.seq for e in store.entries()] == list(range(1, 2501))
        assert [e.seq for e in store.entries(after=998, limit=1003)] == list(range(999, 2002))
        assert list(store.entries(after=2500)) == []

    def test_filters_by_kind(self, store: SQLiteStore) -> None:
        """`kinds` keeps only entries of those kinds."""
        store.append([event(1), event(2, "outcome"), event(3, "halt"), event(4)])
        assert [e.seq for e in store.entries(kinds={"outcome", "halt"})] == [2, 3]


class TestBundles:
    def test_stored_once(self, store: SQLiteStore, path: Path) -> None:
        """Putting the same bundle twice stores one row; other content is a conflict."""
        store.put_bundle("sha256:b", b"two")
        store.put_bundle("sha256:a", b"one")
        store.put_bundle("sha256:a", b"one")
        assert raw(path).execute("SELECT count(*) FROM bundles").fetchone()[0] == 2
        assert store.bundle_versions() == ["sha256:a", "sha256:b"]
        assert store.get_bundle("sha256:missing") is None
        with pytest.raises(BundleConflictError, match="`sha256:a`"):
            store.put_bundle("sha256:a", b"other")


class TestCheckpoints:
    def test_checkpoint_then_truncate_is_detected(self, store: SQLiteStore, path: Path) -> None:
        """A signed checkpoint makes a deleted tail show up as `truncated`."""
        key = generate_signing_key()
        store.append([event(n) for n in range(10)])
        signed = checkpoint_store(store, key, at=AT)
        assert store.latest_checkpoint() == signed
        assert verify_store(store, key.public_key()).ok
        store.append([event(10)])
        assert verify_store(store, key.public_key()).ok
        connection = raw(path)
        connection.execute("DROP TRIGGER ledger_entries_no_delete")
        connection.execute("DELETE FROM ledger_entries WHERE seq > 8")
        report = verify_store(store, key.public_key())
        assert report.problem is not None
        assert (report.problem.code, report.problem.seq) == (ProblemCode.TRUNCATED, 9)

    def test_one_checkpoint_per_size(self, store: SQLiteStore) -> None:
        """A second checkpoint of the same size is refused."""
        key = generate_signing_key()
        checkpoint_store(store, key, at=AT)
        with pytest.raises(StoreError, match="`0`"):
            checkpoint_store(store, key, at=AT)


class TestTamperViaSQL:
    @pytest.mark.parametrize(
        ("sql", "code", "seq"),
        [
            ("UPDATE ledger_entries SET payload = '{\"n\":0}' WHERE seq = 5", "edited", 5),
            ("UPDATE ledger_entries SET kind = 'outcome' WHERE seq = 1", "edited", 1),
            ("DELETE FROM ledger_entries WHERE seq = 7", "deleted", 7),
            ("UPDATE ledger_entries SET chain_hash = leaf_hash WHERE seq = 3", "chain_broken", 3),
            (
                "UPDATE ledger_entries SET seq = -4 WHERE seq = 4;"
                "UPDATE ledger_entries SET seq = 4 WHERE seq = 5;"
                "UPDATE ledger_entries SET seq = 5 WHERE seq = -4;",
                "reordered",
                4,
            ),
        ],
    )
    def test_raw_sql_tampering_is_detected(
        self, store: SQLiteStore, path: Path, sql: str, code: str, seq: int
    ) -> None:
        """With the triggers dropped, any raw edit is found by `verify_store`."""
        store.append([event(n) for n in range(10)])
        connection = raw(path)
        connection.execute("DROP TRIGGER ledger_entries_no_update")
        connection.execute("DROP TRIGGER ledger_entries_no_delete")
        connection.executescript(sql)
        report = verify_store(store)
        assert report.problem is not None
        assert (report.problem.code, report.problem.seq) == (code, seq)


class TestGroupCommitWriter:
    def test_many_threads_get_contiguous_verified_entries(self, store: SQLiteStore) -> None:
        """Events from 16 threads commit with contiguous seqs and a chain that verifies."""
        results: list[LedgerEntry] = []
        lock = threading.Lock()

        def work(writer: GroupCommitWriter, worker: int) -> None:
            futures = [writer.submit(event(worker * 1000 + n)) for n in range(50)]
            entries = [future.result() for future in futures]
            with lock:
                results.extend(entries)

        with GroupCommitWriter(store, max_batch=64) as writer:
            threads = [threading.Thread(target=work, args=(writer, w)) for w in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(entry.seq for entry in results) == list(range(1, 801))
        assert verify_chain(store.entries()).ok
        by_seq = {entry.seq: entry for entry in results}
        assert all(by_seq[e.seq] == e for e in store.entries())

    def test_bad_event_fails_only_its_caller(self, store: SQLiteStore) -> None:
        """A malformed event raises in `submit` and does not reach the batch."""
        with GroupCommitWriter(store) as writer:
            good = writer.submit(event(1))
            with pytest.raises(EventError):
                writer.submit(NewEvent("decision", "yesterday", {}))
            assert good.result().seq == 1

    def test_failed_commit_reaches_every_waiter(self, store: SQLiteStore, path: Path) -> None:
        """When a batch's commit fails, each of its futures carries the error."""
        raw(path).execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON ledger_entries"
            " WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        writer = GroupCommitWriter(store, max_batch=512)
        futures: list[Future[LedgerEntry]] = [writer.submit(event(9, kind="boom"))]
        writer.close()
        with pytest.raises(IntegrityError):
            futures[0].result()

    def test_closed_writer_refuses_events(self, store: SQLiteStore) -> None:
        """Submitting after `close` raises `StoreError`; closing twice is fine."""
        writer = GroupCommitWriter(store)
        writer.close()
        writer.close()
        with pytest.raises(StoreError, match="closed"):
            writer.submit(event(1))


class Watched:
    """The real store, noting which thread ran each append (and how many there were)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.appends: list[str] = []

    def append(self, *args: object, **kwargs: object) -> list[LedgerEntry]:
        self.appends.append(threading.current_thread().name)
        return self.store.append(*args, **kwargs)  # type: ignore[arg-type]

    def try_append(self, *args: object, **kwargs: object) -> list[LedgerEntry] | None:
        entries = self.store.try_append(*args, **kwargs)  # type: ignore[arg-type]
        if entries is not None:
            self.appends.append(threading.current_thread().name)
        return entries

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


class TestAwaitedAppends:
    """An append its caller waits for at once commits on the caller's thread when idle."""

    def test_an_awaited_append_on_an_idle_writer_commits_on_the_callers_thread(
        self, store: SQLiteStore
    ) -> None:
        watched = Watched(store)
        with GroupCommitWriter(watched) as writer:  # type: ignore[arg-type]
            first = writer.submit(event(1), awaited=True)
            assert first.done()  # answered before `submit` returned
            assert first.result().seq == 1
            group = writer.submit_many([(event(2), None), (event(3), None)], awaited=True)
            assert [f.result().seq for f in group] == [2, 3]
        assert watched.appends == [threading.current_thread().name] * 2
        assert verify_store(store).ok

    def test_appends_queued_together_still_share_a_transaction(self, store: SQLiteStore) -> None:
        """Queue-then-wait callers (not awaited) keep group commit: a few transactions."""
        watched = Watched(store)
        with GroupCommitWriter(watched) as writer:  # type: ignore[arg-type]
            futures = [writer.submit(event(n)) for n in range(60)]
            assert [f.result(timeout=10).seq for f in futures] == list(range(1, 61))
        assert len(watched.appends) < 20
        assert set(watched.appends) == {"charter-ledger-writer"}

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
