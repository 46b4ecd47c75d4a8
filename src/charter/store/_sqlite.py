"""The SQLite adapter of the storage ports (`SQLiteStore`), on SQLAlchemy 2 Core and the driver.

The store runs in WAL with `synchronous=FULL`, so a committed append survives power loss,
and takes the write lock at the start of every writing transaction (`BEGIN IMMEDIATE`), so
two writers never compute a seq from the same head. Appends, and the decisions index they
write, go through a driver connection kept for them (`_SQLiteAppender`); the service's
other rows are queried by `_service_rows`, and `_opening` opens the store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Engine,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from charter.ledger import (
    GENESIS,
    ChainHead,
    LedgerEntry,
    NewEvent,
    PreparedEvent,
    link_entries,
)
from charter.store._core import WRITE, CoreStore, apply_index, changed_meanwhile, set_once
from charter.store._port import (
    IndexChange,
    StoreError,
)
from charter.store._service_rows import CoreApprovalRows, CoreKeyRows
from charter.store._tables import (
    approvals,
    decisions,
)

__all__ = ["SQLiteStore"]

_WRITE = WRITE  # execution option: this connection is about to write
_BUSY_TIMEOUT_MS = 30_000
# executemany needs every row to name the same columns


# The decisions index through the driver: the SQL text is built from the table's own
# column names, never from input.
_DECISION_NAMES = tuple(column.name for column in decisions.columns)
_DECISION_COLUMNS_SQL = ", ".join(_DECISION_NAMES)
_INSERT_DECISION_SQL = f"INSERT INTO decisions ({_DECISION_COLUMNS_SQL}) VALUES "  # noqa: S608
_DECISION_ROW_SQL = "({})".format(", ".join("?" * len(_DECISION_NAMES)))
_SELECT_DECISION_SQL = f"SELECT {_DECISION_COLUMNS_SQL} FROM decisions WHERE "  # noqa: S608


def _insert_decisions(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert decisions-index rows, in multi-row statements, through the driver."""
    cursor = connection.connection.cursor()
    try:
        _insert_decision_rows(cursor, rows)
    finally:
        cursor.close()


def _insert_decision_rows(cursor: Any, rows: list[dict[str, Any]]) -> None:
    """Insert decisions-index rows through a driver cursor, 60 rows per statement.

    The driver lets go of the GIL around every statement step and a writer thread must
    win it back from the event loop each time, so one statement per row cost more in
    waiting than SQLite's work; SQLAlchemy's execution machinery cost more than the
    statements.
    """
    statement = _INSERT_DECISION_SQL
    try:
        for start in range(0, len(rows), 60):  # 900 parameters at most
            chunk = rows[start : start + 60]
            statement = _INSERT_DECISION_SQL + ", ".join([_DECISION_ROW_SQL] * len(chunk))
            cursor.execute(statement, [row.get(name) for row in chunk for name in _DECISION_NAMES])
    except sqlite3.Error as error:
        raise IntegrityError.instance(statement, None, error, sqlite3.Error) from error


def _update_decision(connection: Connection, decision_id: str, values: dict[str, Any]) -> None:
    """Set `values` on one decisions-index row, through the driver."""
    cursor = connection.connection.cursor()
    try:
        _update_decision_row(cursor, decision_id, values)
    finally:
        cursor.close()


def _update_decision_row(cursor: Any, decision_id: str, values: dict[str, Any]) -> None:
    """Set `values` on one decisions-index row through a driver cursor."""
    for name in values:  # names come from code, never from clients; checked all the same
        if name not in decisions.c:
            raise StoreError(f"the decisions index has no column `{name}`")
    assignments = ", ".join(f"{name} = ?" for name in values)
    statement = f"UPDATE decisions SET {assignments} WHERE id = ?"  # noqa: S608
    try:
        cursor.execute(statement, [*values.values(), decision_id])
    except sqlite3.Error as error:
        raise IntegrityError.instance(statement, None, error, sqlite3.Error) from error


_BOOLEAN_DECISION_COLUMNS = tuple(
    index for index, column in enumerate(decisions.columns) if isinstance(column.type, Boolean)
)


def _decision_from(found: Sequence[Any] | None) -> dict[str, Any] | None:
    """A decisions-index row from the driver, typed as SQLAlchemy's result would type it."""
    if found is None:
        return None
    values = list(found)
    for index in _BOOLEAN_DECISION_COLUMNS:
        if values[index] is not None:
            values[index] = bool(values[index])
    return dict(zip(_DECISION_NAMES, values, strict=True))


def _decision_row(engine: Engine, where: str, params: list[Any]) -> dict[str, Any] | None:
    """One decisions-index row by an indexed lookup, on a pooled driver connection.

    SQLite's implicit read transaction covers the single statement; SQLAlchemy's
    connection, transaction and result machinery cost ~20 times the indexed SELECT.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(_SELECT_DECISION_SQL + where + " LIMIT 1", params)
            found = cursor.fetchone()
        finally:
            cursor.close()
    except sqlite3.Error as error:
        raise OperationalError.instance(where, params, error, sqlite3.Error) from error
    finally:
        raw.close()
    return _decision_from(found)


_PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON")
_HEAD_SQL = "SELECT seq, chain_hash FROM ledger_entries ORDER BY seq DESC LIMIT 1"
_BEGIN_SQL = "BEGIN IMMEDIATE"


def _busy(error: BaseException | None) -> bool:
    """Whether a driver error is SQLITE_BUSY: another connection holds the write lock."""
    return isinstance(error, sqlite3.OperationalError) and (
        getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
    )


_ENTRY_ROW_SQL = "(?, ?, ?, ?, ?, ?)"
_INSERT_ENTRIES_SQL = (
    "INSERT INTO ledger_entries (seq, kind, at, payload, leaf_hash, chain_hash) VALUES "
)


def _upsert_approval_row(
    cursor: Any, row: Mapping[str, Any], seq: int, prior: str | None = None
) -> None:
    """`upsert_approval` through a driver cursor (SQLite's `ON CONFLICT ... DO UPDATE`)."""
    values = {**row, "updated_seq": seq}
    values.setdefault("opened_seq", seq)
    for name in values:  # names come from code, never from clients; checked all the same
        if name not in approvals.c:
            raise StoreError(f"the approvals table has no column `{name}`")
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    changed = ", ".join(f"{n} = excluded.{n}" for n in values if n not in ("id", "opened_seq"))
    statement = (
        f"INSERT INTO approvals ({names}) VALUES ({marks})"  # noqa: S608
        f" ON CONFLICT (id) DO UPDATE SET {changed}"
    )
    params = list(values.values())
    if prior is not None:
        statement += " WHERE approvals.body = ?"
        params.append(prior)
    try:
        cursor.execute(statement, params)
    except sqlite3.Error as error:
        raise IntegrityError.instance(statement, None, error, sqlite3.Error) from error
    if prior is not None and cursor.rowcount != 1:
        raise changed_meanwhile(row.get("id"))


_KEY_USED_SQL = (
    "SELECT 1 FROM decisions WHERE agent = ? AND idempotency_key = ? AND at >= ? LIMIT 1"
)


def _key_used(cursor: Any, agent: str, key: str, since: str) -> bool:
    """`CoreStore`'s idempotency key check, through a driver cursor."""
    cursor.execute(_KEY_USED_SQL, (agent, key, since))
    return cursor.fetchone() is not None


class _KeptConnection:
    """One SQLite driver connection kept open for a hot path, used under a lock.

    A pooled SQLAlchemy connection costs a checkout, its events and a reset around every
    use: for an indexed lookup or a one-event append that is more than SQLite's own work.
    The connection opens on first use (from any thread) and again after `close`.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._busy_timeout = _BUSY_TIMEOUT_MS

    def _connected(self) -> sqlite3.Connection:
        """The connection, opened if need be; call with the lock held."""
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in (*_PRAGMAS, f"busy_timeout={_BUSY_TIMEOUT_MS}"):
                connection.execute(f"PRAGMA {pragma}")
            self._connection = connection
            self._busy_timeout = _BUSY_TIMEOUT_MS
        return self._connection

    def _waiting(self, milliseconds: int) -> sqlite3.Connection:
        """The connection, waiting at most `milliseconds` for another's lock; lock held."""
        connection = self._connected()
        if self._busy_timeout != milliseconds:  # a statement each way: only on a change
            connection.execute(f"PRAGMA busy_timeout={int(milliseconds)}")
            self._busy_timeout = milliseconds
        return connection

    def _select_decision(self, where: str, params: list[Any]) -> Any:
        """The driver's first row matching `where`, or None; call with the lock held."""
        cursor = self._connected().execute(_SELECT_DECISION_SQL + where + " LIMIT 1", params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()  # ends the statement, so its read snapshot goes too

    def close(self) -> None:
        """Close the connection; a later use opens a new one."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class _SQLiteLookups(_KeptConnection):
    """Indexed lookups of the decisions index on a kept connection.

    Redeeming a grant and reporting an outcome each look their decision up before they
    append: through the pool that lookup cost about as much as the rest of the request's
    own work. Each statement is its own read transaction (autocommit), so it sees every
    commit made before it, by any connection or process.
    """

    def decision_row(self, where: str, params: list[Any]) -> dict[str, Any] | None:
        """The first row matching `where` (SQL built from column names), or None."""
        with self._lock:
            try:
                found = self._select_decision(where, params)
            except sqlite3.Error as error:
                raise OperationalError.instance(where, params, error, sqlite3.Error) from error
        return _decision_from(found)


class _SQLiteAppender(_KeptConnection):
    """Appends to a SQLite file through one driver connection kept open for them.

    A pooled SQLAlchemy connection costs a checkout, its events, a commit and a reset
    around every append: about 100 µs, a third of a durable commit's CPU. Appends are
    the one hot write, so they get their own connection (used under a lock, from any
    thread); every other write keeps SQLAlchemy. The statements are the same, and errors
    are raised as the same SQLAlchemy exception classes.
    """

    def append(
        self, prepared: list[PreparedEvent], indexes: Sequence[IndexChange | None] | None
    ) -> list[LedgerEntry]:
        """Number, link and insert `prepared` (with index changes) in one transaction."""
        with self._lock:
            self._waiting(_BUSY_TIMEOUT_MS)
            return self._append(prepared, indexes)

    def try_append(
        self, prepared: list[PreparedEvent], indexes: Sequence[IndexChange | None] | None
    ) -> list[LedgerEntry] | None:
        """`append` now, or None (nothing written) if another writer holds the lock.

        For a caller that must not wait on anyone else's transaction, such as an event
        loop: SQLite's busy timeout is off for the attempt.
        """
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._waiting(0)
            try:
                return self._append(prepared, indexes)
            except OperationalError as error:
                if error.statement == _BEGIN_SQL and _busy(error.orig):
                    return None
                raise
        finally:
            self._lock.release()

    def try_decision_row(self, where: str, params: list[Any]) -> tuple[bool, Any]:
        """(True, the driver's row or None) if the connection is free now, else (False, None).

        The connection that committed last reads without reloading the pages its own
        commit changed: after an append here, this lookup is several times cheaper than
        one on another connection.
        """
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            return True, self._select_decision(where, params)
        except sqlite3.Error:  # busy, as it may be without a timeout: the caller asks again
            return False, None
        finally:
            self._lock.release()

    def _append(
        self, prepared: list[PreparedEvent], indexes: Sequence[IndexChange | None] | None
    ) -> list[LedgerEntry]:
        """The transaction of `append`; call with the lock held."""
        cursor = self._connected().cursor()
        statement = _BEGIN_SQL  # the write lock first: no two heads alike
        try:
            cursor.execute(statement)
            try:
                statement = _HEAD_SQL
                cursor.execute(statement)
                row = cursor.fetchone()
                entries = link_entries(GENESIS if row is None else ChainHead(*row), prepared)
                for start in range(0, len(entries), 150):  # 900 parameters at most
                    chunk = entries[start : start + 150]
                    statement = _INSERT_ENTRIES_SQL + ", ".join([_ENTRY_ROW_SQL] * len(chunk))
                    cursor.execute(
                        statement,
                        [
                            value
                            for e in chunk
                            for value in (
                                e.seq,
                                e.kind,
                                e.at,
                                e.payload,
                                e.leaf_hash,
                                e.chain_hash,
                            )
                        ],
                    )
                if indexes is not None:
                    apply_index(
                        entries,
                        indexes,
                        lambda rows: _insert_decision_rows(cursor, rows),
                        lambda decision_id, values: _update_decision_row(
                            cursor, decision_id, values
                        ),
                        lambda approval, seq, prior: _upsert_approval_row(
                            cursor, approval, seq, prior
                        ),
                        lambda agent, key, since: _key_used(cursor, agent, key, since),
                    )
                statement = "COMMIT"
                cursor.execute(statement)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cursor.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:  # as SQLAlchemy would raise it
            raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error
        finally:
            cursor.close()
        return entries


class SQLiteStore(CoreApprovalRows, CoreKeyRows, CoreStore):
    """A `LedgerStore` on a SQLite database through SQLAlchemy Core and its driver.

    Safe to share between threads: each call checks a connection out of the pool for
    the length of one transaction. Build it with `open_store`.
    """

    def __init__(self, engine: Engine, log_id: str, *, read_only: bool = False) -> None:
        super().__init__(engine, log_id, read_only=read_only)
        database = engine.url.database
        # A file gets kept connections for its hot paths; memory stays on the pool, and
        # so does a reader, whose pool opens the file read-only.
        path = database if database not in (None, "", ":memory:") and not read_only else None
        self._appender = _SQLiteAppender(path) if path else None
        self._lookups = _SQLiteLookups(path) if path else None

    def append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry]:
        """Append events atomically after the current head and return their entries."""
        prepared = self._prepared(events, indexes)
        if not prepared:
            return []
        if self._appender is not None:
            with set_once():
                return self._appender.append(prepared, indexes)
        with set_once(), self._writing() as connection, connection.begin():
            return self._insert_linked(connection, prepared, indexes, sqlite_insert)

    def try_append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry] | None:
        """`append`, unless that would wait for another writer: then None, nothing written.

        Only a store on a file can tell without waiting; one in memory always answers None.
        """
        prepared = self._prepared(events, indexes)
        if self._appender is None or not prepared:
            return None
        with set_once():
            return self._appender.try_append(prepared, indexes)

    def decision_row(
        self,
        *,
        decision_id: str | None = None,
        grant_id: str | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any] | None:
        """The decisions-index row found by id, by grant, or by (agent, idempotency key)."""
        if decision_id is not None:
            where, params = "id = ?", [decision_id]
        elif grant_id is not None:
            where, params = "grant_id = ?", [grant_id]
        elif agent is not None and idempotency_key is not None:
            # Keys may be reused after their retention: the newest use is the one in force.
            where = "agent = ? AND idempotency_key = ? ORDER BY seq DESC"
            params = [agent, idempotency_key]
        else:
            raise StoreError("look a decision up by id, by grant, or by agent and key")
        if self._appender is not None:
            done, found = self._appender.try_decision_row(where, params)
            if done:
                return _decision_from(found)
        if self._lookups is not None:
            return self._lookups.decision_row(where, params)
        return _decision_row(self._engine, where, params)

    def writable_problem(self) -> str | None:
        """Why the file takes no writes now (not writable, gone), or None when it does."""
        path = self._engine.url.database
        if self._read_only:
            return "opened read-only"
        if not path or path == ":memory:":
            return None
        folder = os.path.dirname(os.path.abspath(path)) or "."
        for target in (path, folder):
            if os.path.exists(target) and not os.access(target, os.W_OK):
                return f"not writable: `{target}`"
        if not os.path.exists(path):
            return f"missing: `{path}`"
        return None

    def close(self) -> None:
        """Close the kept connections and dispose of the connection pool."""
        for kept in (self._appender, self._lookups):
            if kept is not None:
                kept.close()
        self._engine.dispose()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
