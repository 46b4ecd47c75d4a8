"""The PostgreSQL adapter of the storage ports (`PostgresStore`), on psycopg 3.

Any number of processes may append to one database and the ledger stays one linear
chain: every appending transaction first takes one transaction-scoped advisory lock (the
sequencer), then reads the head, links its batch after it and commits, which releases
the lock. A group-commit writer hands it whole batches, so the lock is taken once per
batch, not per entry. The database is the judge of what must happen once: a second
redemption or outcome aborts in the set-once triggers (migration 0004), an idempotency
key's row is read in the same database every replica writes to.

Each appending transaction also sends `NOTIFY charter_ledger` with its new head: the
notification is delivered when the transaction commits, so a replica listening on the
channel (`AppendListener`) reads what was appended at once instead of at its next poll.

The SQL every database shares is `CoreStore`'s; this module adds the appends, the
index writes that go with them and the lookups.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from charter.ledger import LedgerEntry, NewEvent, PreparedEvent
from charter.store._core import CoreStore, set_once
from charter.store._port import (
    Closeable,
    IndexChange,
    Lead,
    StoreError,
)
from charter.store._service_rows import CoreApprovalRows, CoreKeyRows
from charter.store._tables import decisions, meta

__all__ = ["APPENDED_CHANNEL", "SEQUENCER_LOCK", "PostgresStore"]

#: The advisory lock every appending transaction holds: one ledger, one sequencer.
#: (A constant of Charter's own, so it cannot collide with another application's.)
SEQUENCER_LOCK = 0x43484152544552  # "CHARTER"

#: The channel every append notifies, with the new head's seq as the payload.
APPENDED_CHANNEL = "charter_ledger"


class PostgresStore(CoreApprovalRows, CoreKeyRows, CoreStore):
    """A `LedgerStore` on a PostgreSQL database; build it with `open_store(URL)`.

    Safe to share between threads and between processes: each call checks a connection
    out of the pool for the length of one transaction, and appends from every process
    are sequenced by the database.
    """

    def append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry]:
        """Append events atomically after the current head and return their entries."""
        prepared = self._prepared(events, indexes)
        if not prepared:
            return []
        with set_once(), self._writing() as connection, connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK})
            return self._linked_and_announced(connection, prepared, indexes)

    def try_append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry] | None:
        """`append`, unless another writer holds the sequencer now: then None, nothing written."""
        prepared = self._prepared(events, indexes)
        if not prepared:
            return None
        with set_once(), self._writing() as connection, connection.begin():
            locked = connection.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK}
            ).scalar()
            if not locked:
                return None
            return self._linked_and_announced(connection, prepared, indexes)

    def _linked_and_announced(
        self,
        connection: Connection,
        prepared: list[PreparedEvent],
        indexes: Sequence[IndexChange | None] | None,
    ) -> list[LedgerEntry]:
        """Insert the batch and queue its notification (sent if and when it commits)."""
        entries = self._insert_linked(connection, prepared, indexes, pg_insert)
        connection.execute(
            text("SELECT pg_notify(:channel, :head)"),
            {"channel": APPENDED_CHANNEL, "head": str(entries[-1].seq)},
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

    def listen_appends(self, wake: Callable[[], None]) -> Closeable | None:
        """Call `wake` soon after any process's append commits (`LISTEN`, own connection).

        A read-only store may listen too: listening writes nothing. The listener
        reconnects by itself when its connection drops; see `AppendListener`.
        """
        from charter.store._postgres_listen import AppendListener  # noqa: PLC0415

        url = self._engine.url.set(drivername="postgresql")
        return AppendListener(url.render_as_string(hide_password=False), APPENDED_CHANNEL, wake)

    def lead(self, name: str) -> Lead | None:
        """Take the advisory lock of `name` on a connection of its own, if it is free."""
        from charter.store._postgres_lead import AdvisoryLead  # noqa: PLC0415

        url = self._engine.url.set(drivername="postgresql")
        held = AdvisoryLead(url.render_as_string(hide_password=False), name)
        return held if held.taken else None

    def close(self) -> None:
        """Dispose of the connection pool; the store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
