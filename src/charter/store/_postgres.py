"""The PostgreSQL adapter of the storage ports (`PostgresStore`), on psycopg 3.

Any number of processes may append to one database and the ledger stays one linear
chain: every appending transaction first takes one transaction-scoped advisory lock (the
sequencer), then reads the head, links its batch after it and commits, which releases
the lock. A group-commit writer hands it whole batches, so the lock is taken once per
batch, not per entry. The database is the judge of what must happen once: a second
redemption or outcome aborts in the set-once triggers (migration 0004), an idempotency
key's row is read in the same database every replica writes to.

The SQL every database shares is `CoreStore`'s; this module adds the appends, the
index writes that go with them and the lookups.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from charter.ledger import LedgerEntry, NewEvent, PreparedEvent, link_entries, prepare_event
from charter.store._core import CoreStore
from charter.store._port import (
    IndexChange,
    LedgerTransaction,
    SetOnceConflict,
    StagedTransaction,
    StoreError,
)
from charter.store._service_rows import SQLiteApprovalRows, SQLiteKeyRows
from charter.store._sqlite import _apply_index as apply_index
from charter.store._tables import approvals, decisions, ledger_entries, meta

__all__ = ["SEQUENCER_LOCK", "PostgresStore"]

#: The advisory lock every appending transaction holds: one ledger, one sequencer.
#: (A constant of Charter's own, so it cannot collide with another application's.)
SEQUENCER_LOCK = 0x43484152544552  # "CHARTER"

#: What the set-once triggers' abort says (migration 0004).
_SET_ONCE_MARK = "set-once:"


@contextlib.contextmanager
def _set_once() -> Iterator[None]:
    """Raise the set-once triggers' abort as `SetOnceConflict`: a caller's refusal."""
    try:
        yield
    except DBAPIError as error:
        if _SET_ONCE_MARK in str(error.orig):
            message = str(error.orig).splitlines()[0]
            raise SetOnceConflict(message[message.index(_SET_ONCE_MARK) :]) from error
        raise


class PostgresStore(SQLiteApprovalRows, SQLiteKeyRows, CoreStore):
    """A `LedgerStore` on a PostgreSQL database; build it with `open_store(URL)`.

    Safe to share between threads and between processes: each call checks a connection
    out of the pool for the length of one transaction, and appends from every process
    are sequenced by the database.
    """

    def transaction(self) -> AbstractContextManager[LedgerTransaction]:
        """A transaction to stage appends in; they commit together when the block ends.

        An exception in the block aborts it: nothing staged is written.
        """
        self._refuse_writes()
        return StagedTransaction.around(self.append)

    def _prepared(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None,
    ) -> list[PreparedEvent]:
        self._refuse_writes()
        prepared = [prepare_event(item) for item in events]
        if indexes is not None and len(indexes) != len(prepared):
            raise StoreError("`indexes` must pair one change (or None) with each event")
        return prepared

    def append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry]:
        """Append events atomically after the current head and return their entries."""
        prepared = self._prepared(events, indexes)
        if not prepared:
            return []
        with _set_once(), self._writing() as connection, connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK})
            return self._append(connection, prepared, indexes)

    def try_append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry] | None:
        """`append`, unless another writer holds the sequencer now: then None, nothing written."""
        prepared = self._prepared(events, indexes)
        if not prepared:
            return None
        with _set_once(), self._writing() as connection, connection.begin():
            locked = connection.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK}
            ).scalar()
            if not locked:
                return None
            return self._append(connection, prepared, indexes)

    def _append(
        self,
        connection: Connection,
        prepared: list[PreparedEvent],
        indexes: Sequence[IndexChange | None] | None,
    ) -> list[LedgerEntry]:
        """Link `prepared` after the head and insert it; the sequencer is held."""
        entries = link_entries(self._head(connection), prepared)
        connection.execute(
            insert(ledger_entries),
            [
                {
                    "seq": entry.seq,
                    "kind": entry.kind,
                    "at": entry.at,
                    "payload": entry.payload,
                    "leaf_hash": entry.leaf_hash,
                    "chain_hash": entry.chain_hash,
                }
                for entry in entries
            ],
        )
        if indexes is not None:
            apply_index(
                entries,
                indexes,
                lambda rows: _insert_decisions(connection, rows),
                lambda decision_id, values: _update_decision(connection, decision_id, values),
                lambda row, seq: _upsert_approval(connection, row, seq),
            )
        return entries

    def decision_row(
        self,
        *,
        decision_id: str | None = None,
        grant_id: str | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any] | None:
        """The decisions-index row found by id, by grant, or by (agent, idempotency key)."""
        c = decisions.c
        if decision_id is not None:
            query = select(decisions).where(c.id == decision_id)
        elif grant_id is not None:
            query = select(decisions).where(c.grant_id == grant_id)
        elif agent is not None and idempotency_key is not None:
            # Keys may be reused after their retention: the newest use is the one in force.
            query = (
                select(decisions)
                .where(c.agent == agent, c.idempotency_key == idempotency_key)
                .order_by(c.seq.desc())
            )
        else:
            raise StoreError("look a decision up by id, by grant, or by agent and key")
        with self._engine.connect() as connection:
            row = connection.execute(query.limit(1)).mappings().first()
        return None if row is None else dict(row)

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store, created on first use.

        Replicas asking for it at once all get the one that was stored first.
        """
        key = f"secret:{name}"
        with self._writing() as connection, connection.begin():
            connection.execute(
                pg_insert(meta)
                .values(key=key, value=os.urandom(32).hex())
                .on_conflict_do_nothing(index_elements=["key"])
            )
            stored = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
        return bytes.fromhex(str(stored))

    def writable_problem(self) -> str | None:
        """Why the database takes no writes now (a standby, say), or None when it does."""
        if self._read_only:
            return "opened read-only"
        with self._engine.connect() as connection:
            read_only = connection.execute(text("SHOW transaction_read_only")).scalar()
        return "not writable: the database is read-only (a standby?)" if read_only == "on" else None

    def close(self) -> None:
        """Dispose of the connection pool; the store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _insert_decisions(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert decisions-index rows in one executemany (psycopg pipelines it)."""
    connection.execute(insert(decisions), rows)


def _update_decision(connection: Connection, decision_id: str, values: dict[str, Any]) -> None:
    """Set `values` on one decisions-index row."""
    for name in values:  # names come from code, never from clients; checked all the same
        if name not in decisions.c:
            raise StoreError(f"the decisions index has no column `{name}`")
    connection.execute(update(decisions).where(decisions.c.id == decision_id).values(**values))


def _upsert_approval(connection: Connection, row: Mapping[str, Any], seq: int) -> None:
    """Write an approval as it stands after the entry at `seq` (insert or replace)."""
    values = {**row, "updated_seq": seq}
    values.setdefault("opened_seq", seq)
    for name in values:
        if name not in approvals.c:
            raise StoreError(f"the approvals table has no column `{name}`")
    statement = pg_insert(approvals).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in ("id", "opened_seq")}
    connection.execute(statement.on_conflict_do_update(index_elements=["id"], set_=changed))
