"""A store opened read-only reads a Charter ledger and cannot change any file.

What a reader reads, and refuses to write, is checked on each store; what it refuses to
open is mostly about files (missing, empty, another application's, not SQLite), so
SQLite only (the PostgreSQL refusals are in test_postgres.py).
"""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
from pathlib import Path

import pytest

from _raw import fingerprint, raw
from charter.ledger import NewEvent
from charter.store import (
    IndexChange,
    StoreError,
    StoreOpenError,
    open_store,
    verify_store,
)

AT = "2025-01-31T09:30:00Z"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ledger(store_target: str) -> str:
    """A ledger of one decision and one bundle, with a log id: a file, or a database."""
    with open_store(store_target, log_id="log-r") as store:
        store.append(
            [NewEvent("decision", AT, {"n": 1})],
            [IndexChange("d-1", {"agent": "a", "action": "x", "verdict": "allow"}, insert=True)],
        )
        store.put_bundle("v1", b"{}")
    return store_target


class TestRefusals:
    def test_a_missing_file_is_refused_and_not_created(self, tmp_path: Path) -> None:
        """No file, no store: the error names the path, and nothing appears there."""
        missing = tmp_path / "none.db"
        with pytest.raises(StoreOpenError, match="does not exist") as caught:
            open_store(missing, read_only=True)
        assert caught.value.path == str(missing)
        assert list(tmp_path.iterdir()) == []

    def test_an_empty_file_is_refused_and_left_empty(self, tmp_path: Path) -> None:
        """An empty file stays empty: no schema is written into it."""
        empty = tmp_path / "empty.db"
        empty.write_bytes(b"")
        with pytest.raises(StoreOpenError, match="empty database"):
            open_store(empty, read_only=True)
        assert empty.read_bytes() == b""

    def test_an_unrelated_database_is_refused_and_unchanged(self, tmp_path: Path) -> None:
        """Another program's SQLite file is named as not a ledger, and keeps its bytes."""
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as connection:
            connection.execute("CREATE TABLE notes (body TEXT)")
        connection.close()
        before = digest(other)
        with pytest.raises(StoreOpenError, match="not a Charter ledger"):
            open_store(other, read_only=True)
        assert digest(other) == before

    def test_a_text_file_is_refused_as_not_sqlite(self, tmp_path: Path) -> None:
        """Anything but SQLite is said to be so, with no driver error leaking out."""
        notes = tmp_path / "notes.txt"
        notes.write_text("hello\n", encoding="utf-8")
        with pytest.raises(StoreOpenError, match="is not a SQLite database"):
            open_store(notes, read_only=True)
        assert notes.read_text(encoding="utf-8") == "hello\n"

    def test_a_folder_is_refused(self, tmp_path: Path) -> None:
        """A directory is not a ledger file."""
        with pytest.raises(StoreOpenError, match="is not a file"):
            open_store(tmp_path, read_only=True)

    @pytest.mark.parametrize(
        ("revision", "says"), [("0002", "older schema"), ("9999", "newer schema")]
    )
    def test_another_schema_is_refused_not_migrated(
        self, ledger: str, revision: str, says: str
    ) -> None:
        """A schema other than this code's is named, with its revision; it stays as it was."""
        with raw(ledger) as connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        before = fingerprint(ledger)
        with pytest.raises(StoreOpenError, match=f"{says} \\(revision `{revision}`\\)"):
            open_store(ledger, read_only=True)
        assert fingerprint(ledger) == before

    def test_the_refusal_survives_a_process_boundary(self, tmp_path: Path) -> None:
        """A replay worker's refusal reaches its parent with the file and the problem."""
        error = StoreOpenError(str(tmp_path / "x.db"), "does not exist")
        again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert isinstance(again, StoreOpenError)
        assert (again.path, again.problem, again.message) == (
            error.path,
            error.problem,
            error.message,
        )

    def test_only_a_sqlite_file_opens_read_only(self) -> None:
        """An in-memory database has nothing to read."""
        with pytest.raises(StoreOpenError, match="only a file"):
            open_store("sqlite://", read_only=True)


class TestReading:
    def test_reads_what_was_written(self, ledger: str) -> None:
        """Entries, bundles, the index and the log id read as from a writing store."""
        with open_store(ledger, read_only=True) as store:
            assert store.read_only
            assert store.log_id == "log-r"
            assert store.head().seq == 1
            assert [e.seq for e in store.entries()] == [1]
            assert store.get_bundle("v1") == b"{}"
            assert store.decision_row(decision_id="d-1") is not None
            assert verify_store(store).ok

    @pytest.mark.stores("sqlite")  # a SQLite URL names a file
    def test_a_sqlite_url_names_the_same_file(self, ledger: str) -> None:
        """`sqlite:///PATH` opens that file read-only too."""
        with open_store(f"sqlite:///{ledger}", read_only=True) as store:
            assert store.count() == 1

    def test_every_write_refuses_and_nothing_changes(self, ledger: str) -> None:
        """Appends, bundles, keys and secrets all refuse; the store holds what it held."""
        before = fingerprint(ledger)
        with open_store(ledger, read_only=True) as store:
            with pytest.raises(StoreError, match="read-only"):
                store.append([NewEvent("decision", AT, {"n": 2})])
            with pytest.raises(StoreError, match="read-only"):
                store.try_append([NewEvent("decision", AT, {"n": 2})])
            with pytest.raises(StoreError, match="read-only"):
                store.put_bundle("v2", b"{}")
            with pytest.raises(StoreError, match="read-only"):
                store.secret("webhooks")
        assert fingerprint(ledger) == before

    def test_sees_what_a_writer_commits_meanwhile(self, ledger: str) -> None:
        """A reader beside a running writer sees each of its commits."""
        with open_store(ledger) as writer, open_store(ledger, read_only=True) as reader:
            writer.append([NewEvent("decision", AT, {"n": 2})])
            assert reader.head() == writer.head()

    def test_a_mismatched_log_id_is_refused(self, ledger: str) -> None:
        """Asking for another ledger's id is an error, as when writing."""
        with pytest.raises(StoreError, match="`log-r`"):
            open_store(ledger, read_only=True, log_id="log-other")
