"""The PostgreSQL adapter: migrated on purpose, one chain, and it refuses what it must.

Its schema changes only by `charter migrate`, appends from many processes form one
chain, and what the database must refuse it refuses.

Every test runs on the session's real PostgreSQL server (tests/_postgres.py).
"""

from __future__ import annotations

import json
import multiprocessing
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from _postgres import Cluster
from charter.cli import app
from charter.ledger import NewEvent
from charter.store import (
    PostgresStore,
    SchemaVersionError,
    StoreError,
    StoreOpenError,
    migrate_store,
    open_store,
    verify_store,
)
from charter.store._opening import HEAD_REVISION

AT = "2026-03-02T10:00:00Z"


@pytest.fixture
def url(postgres: Cluster) -> str:
    """A fresh database at the head revision."""
    return postgres.database()


def _admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


class TestSchema:
    def test_an_empty_database_is_refused_until_migrated(self, postgres: Cluster) -> None:
        """Opening never creates a schema; the refusal names `charter migrate`."""
        blank = postgres.database(migrated=False)
        with pytest.raises(StoreOpenError, match="charter migrate --store postgresql://"):
            open_store(blank)
        assert migrate_store(blank) == (None, HEAD_REVISION)
        assert migrate_store(blank) == (HEAD_REVISION, HEAD_REVISION)
        with open_store(blank) as store:
            assert isinstance(store, PostgresStore)
            assert store.count() == 0

    def test_an_older_schema_is_refused_naming_the_fix(self, url: str) -> None:
        _admin(url, "UPDATE alembic_version SET version_num = '0003'")
        with pytest.raises(StoreOpenError, match=r"older schema .*run `charter migrate"):
            open_store(url)

    def test_a_newer_schema_is_refused_by_open_and_by_migrate(self, url: str) -> None:
        _admin(url, "UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(StoreOpenError, match=r"newer schema .*upgrade Charter"):
            open_store(url)
        with pytest.raises(SchemaVersionError, match="newer than this Charter"):
            migrate_store(url)

    def test_another_applications_tables_are_left_alone(self, postgres: Cluster) -> None:
        blank = postgres.database(migrated=False)
        _admin(blank, "CREATE TABLE invoices (id int)")
        with pytest.raises(StoreOpenError, match="another application's tables"):
            migrate_store(blank)
        with psycopg.connect(blank) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert tables == [("invoices",)]

    def test_the_migrate_command(self, postgres: Cluster) -> None:
        blank = postgres.database(migrated=False)
        created = CliRunner().invoke(app, ["migrate", "--store", blank])
        assert created.exit_code == 0, created.output
        assert f"schema created at revision {HEAD_REVISION}" in created.output
        again = CliRunner().invoke(app, ["migrate", "--store", blank])
        assert f"already at revision {HEAD_REVISION}" in again.output


class TestReading:
    def test_a_reader_cannot_write_even_past_charter(self, url: str) -> None:
        with open_store(url) as store:
            store.append([NewEvent("note", AT, {"n": 1})])
        with open_store(url, read_only=True) as reader:
            assert reader.count() == 1
            with pytest.raises(StoreError, match="read-only"):
                reader.append([NewEvent("note", AT, {"n": 2})])
            with reader.engine.connect() as connection, pytest.raises(Exception, match="read-only"):
                connection.exec_driver_sql("DELETE FROM meta")
        with open_store(url) as store:
            assert store.count() == 1

    def test_the_ledger_rows_are_append_only(self, url: str) -> None:
        with open_store(url) as store:
            store.append([NewEvent("note", AT, {"n": 1})])
        for statement in (
            "UPDATE ledger_entries SET payload = '{}'",
            "DELETE FROM ledger_entries",
            "TRUNCATE ledger_entries",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                _admin(url, statement)


def _append_many(url: str, writer: int, batches: int, size: int) -> None:
    with open_store(url) as store:
        for batch in range(batches):
            events = [
                NewEvent("note", AT, {"writer": writer, "batch": batch, "n": n})
                for n in range(size)
            ]
            store.append(events)


class TestManyWriters:
    def test_processes_appending_at_once_make_one_chain(self, url: str) -> None:
        """Four processes appending batches concurrently: no gap, no fork, every entry."""
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_append_many, args=(url, w, 25, 8)) for w in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        with open_store(url, read_only=True) as store:
            report = verify_store(store)
            entries = list(store.entries())
        assert report.ok, report.problem
        assert [e.seq for e in entries] == list(range(1, 4 * 25 * 8 + 1))
        # Each batch was committed whole, in its own order, under the sequencer.
        seen: dict[tuple[Any, Any], list[int]] = {}
        for entry in entries:
            payload = json.loads(entry.payload)
            seen.setdefault((payload["writer"], payload["batch"]), []).append(entry.seq)
        assert all(seqs == list(range(seqs[0], seqs[0] + 8)) for seqs in seen.values())

    def test_try_append_gives_way_to_a_held_sequencer(self, url: str) -> None:
        from charter.store._postgres import SEQUENCER_LOCK  # noqa: PLC0415

        with open_store(url) as store, psycopg.connect(url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
            assert store.try_append([NewEvent("note", AT, {})]) is None
            holder.rollback()
            assert store.try_append([NewEvent("note", AT, {})]) is not None
            assert store.count() == 1

    def test_replicas_share_one_secret(self, url: str) -> None:
        with open_store(url) as first, open_store(url) as second:
            assert first.secret("grants") == second.secret("grants")
            assert first.log_id == second.log_id
