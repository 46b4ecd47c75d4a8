"""What both adapters do the same way, in SQLAlchemy Core: reads, bundles, checkpoints.

`CoreStore` holds the engine, the ledger id and the read-only flag, and answers every
port method whose SQL is the same on SQLite and PostgreSQL: streaming entries, the head,
bundles, checkpoints, decisions-index queries. Each adapter adds its appends (the hot,
dialect-specific write) and its lookups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from charter.ledger import (
    GENESIS,
    ChainHead,
    Checkpoint,
    LedgerEntry,
    NewEvent,
    PreparedEvent,
    SignedCheckpoint,
    link_entries,
    prepare_event,
)
from charter.store._port import (
    BundleConflictError,
    Closeable,
    IndexChange,
    Lead,
    LedgerTransaction,
    SetOnceConflict,
    StagedTransaction,
    StoreError,
)
from charter.store._tables import approvals, bundles, checkpoints, decisions, ledger_entries

__all__ = [
    "ENTRY_COLUMNS",
    "PAGE",
    "WRITE",
    "CoreStore",
    "apply_index",
    "changed_meanwhile",
    "set_once",
    "update_decision",
    "upsert_approval",
]

PAGE = 1000  # rows per read transaction when streaming entries
WRITE = "charter_write"  # execution option: this connection is about to write

# executemany needs every row to name the same columns
_INDEX_DEFAULTS: dict[str, Any] = {
    column.name: None
    for column in decisions.columns
    if column.name not in ("id", "seq", "at", "agent", "action", "verdict")
}

ENTRY_COLUMNS = (
    ledger_entries.c.seq,
    ledger_entries.c.kind,
    ledger_entries.c.at,
    ledger_entries.c.payload,
    ledger_entries.c.leaf_hash,
    ledger_entries.c.chain_hash,
)


def apply_index(
    entries: Sequence[LedgerEntry],
    changes: Sequence[IndexChange | None],
    insert_rows: Callable[[list[dict[str, Any]]], None],
    update_row: Callable[[str, dict[str, Any]], None],
    upsert_approval: Callable[[Mapping[str, Any], int, str | None], None],
    key_used: Callable[[str, str, str], bool],
) -> None:
    """Apply index changes in entry order: inserts batched, then updates as they come.

    `key_used(agent, key, since)` says whether a stored decision of the agent has the
    idempotency key at or after `since` (see `IndexChange.key_since`).

    Raises:
        SetOnceConflict: a step's approval changed meanwhile, or a key was taken.
    """
    rows: list[dict[str, Any]] = []
    for entry, change in zip(entries, changes, strict=True):
        if change is None:
            continue
        if change.key_since is not None:
            agent, key = change.values["agent"], change.values["idempotency_key"]
            if key_used(agent, key, change.key_since):
                raise SetOnceConflict(
                    f"{_SET_ONCE_MARK} idempotency key `{key}` of agent `{agent}` was taken"
                    " by another decision meanwhile"
                )
        if change.insert:
            rows.append(
                {
                    **_INDEX_DEFAULTS,
                    **change.values,
                    "id": change.decision_id,
                    "seq": entry.seq,
                    "at": entry.at,
                }
            )
        elif change.values or change.seq_column is not None:
            if rows:  # an update may touch a row inserted earlier in this batch
                insert_rows(rows)
                rows = []
            values = dict(change.values)
            if change.seq_column is not None:
                values[change.seq_column] = entry.seq
            update_row(change.decision_id, values)
        if change.approval is not None:
            upsert_approval(change.approval, entry.seq, change.approval_prior)
    if rows:
        insert_rows(rows)


#: What the set-once triggers' abort says (migration 0004), on either database.
_SET_ONCE_MARK = "set-once:"


@contextlib.contextmanager
def set_once() -> Iterator[None]:
    """Raise the set-once triggers' abort as `SetOnceConflict`: a caller's refusal."""
    try:
        yield
    except DBAPIError as error:
        said = str(error.orig)
        if _SET_ONCE_MARK not in said:
            raise
        # PostgreSQL adds its context on further lines: the message is the first.
        raise SetOnceConflict(said[said.index(_SET_ONCE_MARK) :].splitlines()[0]) from error


def _insert_decisions(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert decisions-index rows in one executemany."""
    connection.execute(insert(decisions), rows)


def _key_used(connection: Connection, agent: str, key: str, since: str) -> bool:
    """Whether a stored decision of `agent` has idempotency key `key` at or after `since`."""
    c = decisions.c
    query = select(c.id).where(c.agent == agent, c.idempotency_key == key, c.at >= since)
    return connection.execute(query.limit(1)).first() is not None


def update_decision(connection: Connection, decision_id: str, values: dict[str, Any]) -> None:
    """Set `values` on one decisions-index row."""
    for name in values:  # names come from code, never from clients; checked all the same
        if name not in decisions.c:
            raise StoreError(f"the decisions index has no column `{name}`")
    connection.execute(update(decisions).where(decisions.c.id == decision_id).values(**values))


def changed_meanwhile(approval_id: object) -> SetOnceConflict:
    """The refusal of a step whose approval another step changed since it was read."""
    return SetOnceConflict(
        f"{_SET_ONCE_MARK} approval {approval_id} was changed by another step meanwhile"
        " (another replica's, or a timer's): read it again"
    )


def upsert_approval(
    connection: Connection,
    row: Mapping[str, Any],
    seq: int,
    dialect_insert: Any,
    prior: str | None = None,
) -> None:
    """Write an approval as it stands after the entry at `seq` (insert or replace).

    `dialect_insert` is the dialect's `insert` (SQLite's or PostgreSQL's), whose
    `ON CONFLICT ... DO UPDATE ... WHERE` both spell the same way. With `prior`, the row
    is replaced only if its body is still `prior` (see `IndexChange.approval_prior`).

    Raises:
        SetOnceConflict: the stored body is no longer `prior`.
    """
    values = {**row, "updated_seq": seq}
    values.setdefault("opened_seq", seq)
    for name in values:
        if name not in approvals.c:
            raise StoreError(f"the approvals table has no column `{name}`")
    statement = dialect_insert(approvals).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in ("id", "opened_seq")}
    upsert = statement.on_conflict_do_update(index_elements=["id"], set_=changed)
    if prior is None:
        connection.execute(upsert)
        return
    # RETURNING, not rowcount: the drivers do not all count an upsert's row.
    guarded = statement.on_conflict_do_update(
        index_elements=["id"], set_=changed, where=approvals.c.body == prior
    ).returning(approvals.c.id)
    if connection.execute(guarded).first() is None:
        raise changed_meanwhile(row.get("id"))


class CoreStore:
    """The port methods whose SQL every database shares; adapters subclass it.

    Safe to share between threads: each call checks a connection out of the pool for
    the length of one transaction.
    """

    def __init__(self, engine: Engine, log_id: str, *, read_only: bool = False) -> None:
        self._engine = engine
        self._log_id = log_id
        self._read_only = read_only

    @property
    def log_id(self) -> str:
        """The ledger's identity, fixed when the store was created."""
        return self._log_id

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tools and tests that need raw access."""
        return self._engine

    @property
    def read_only(self) -> bool:
        """Whether the store was opened for reading only (every write then refuses)."""
        return self._read_only

    def _shown(self) -> str:
        """The store as messages name it: its file, or its URL without the password."""
        url = self._engine.url
        if url.get_backend_name() == "sqlite":
            return str(url.database)
        return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)

    def _refuse_writes(self) -> None:
        if self._read_only:
            raise StoreError(
                f"the ledger `{self._shown()}` was opened read-only: it takes no writes"
            )

    def _writing(self) -> Connection:
        self._refuse_writes()
        return self._engine.connect().execution_options(**{WRITE: True})

    def transaction(self) -> AbstractContextManager[LedgerTransaction]:
        """A transaction to stage appends in; they commit together when the block ends.

        An exception in the block aborts it: nothing staged is written.
        """
        self._refuse_writes()
        return StagedTransaction.around(self.append)  # type: ignore[attr-defined]

    def _prepared(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None,
    ) -> list[PreparedEvent]:
        """The events validated and encoded for an append, before anything is written."""
        self._refuse_writes()
        prepared = [prepare_event(item) for item in events]
        if indexes is not None and len(indexes) != len(prepared):
            raise StoreError("`indexes` must pair one change (or None) with each event")
        return prepared

    def _insert_linked(
        self,
        connection: Connection,
        prepared: list[PreparedEvent],
        indexes: Sequence[IndexChange | None] | None,
        dialect_insert: Any,
    ) -> list[LedgerEntry]:
        """Link `prepared` after the head and insert it with its index changes.

        The caller's transaction holds whatever makes it the only appender now.
        """
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
                lambda decision_id, values: update_decision(connection, decision_id, values),
                lambda row, seq, prior: upsert_approval(
                    connection, row, seq, dialect_insert, prior
                ),
                lambda agent, key, since: _key_used(connection, agent, key, since),
            )
        return entries

    def writable_problem(self) -> str | None:
        """Why the store takes no writes now, or None when it does (for `/readyz`)."""
        return "opened read-only" if self._read_only else None

    def listen_appends(self, wake: Callable[[], None]) -> Closeable | None:
        """None: this database announces nothing, so followers poll (see `AppendNotices`)."""
        return None

    def lead(self, name: str) -> Lead | None:
        """Always granted: one server works a SQLite file (see `Leadership`)."""
        return _Granted()

    def entry(self, seq: int) -> LedgerEntry | None:
        """The entry at `seq`, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(*ENTRY_COLUMNS).where(ledger_entries.c.seq == seq)
            ).first()
        return None if row is None else LedgerEntry(*row)

    def decision_rows(
        self,
        *,
        agent: str | None = None,
        action: str | None = None,
        verdict: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Decisions-index rows matching every filter given, newest first."""
        c = decisions.c
        conditions = [
            condition
            for condition in (
                c.agent == agent if agent is not None else None,
                c.action == action if action is not None else None,
                c.verdict == verdict if verdict is not None else None,
                c.at >= since if since is not None else None,
                c.at <= until if until is not None else None,
                c.seq < before_seq if before_seq is not None else None,
            )
            if condition is not None
        ]
        query = select(decisions).where(and_(True, *conditions))
        with self._engine.connect() as connection:
            rows = connection.execute(query.order_by(c.seq.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]

    @staticmethod
    def _head(connection: Connection) -> ChainHead:
        row = connection.execute(
            select(ledger_entries.c.seq, ledger_entries.c.chain_hash)
            .order_by(ledger_entries.c.seq.desc())
            .limit(1)
        ).first()
        return GENESIS if row is None else ChainHead(row.seq, row.chain_hash)

    def head(self) -> ChainHead:
        """The last entry's seq and chain hash (`GENESIS` when empty)."""
        with self._engine.connect() as connection:
            return self._head(connection)

    def count(self) -> int:
        """The number of entries: the head's seq."""
        return self.head().seq

    def entries(
        self, after: int = 0, limit: int | None = None, kinds: Collection[str] | None = None
    ) -> Iterator[LedgerEntry]:
        """Stream entries after `after` in seq order, a page per short read transaction."""
        remaining = limit
        while remaining is None or remaining > 0:
            page = PAGE if remaining is None else min(PAGE, remaining)
            query = select(*ENTRY_COLUMNS).where(ledger_entries.c.seq > after)
            if kinds is not None:
                query = query.where(ledger_entries.c.kind.in_(list(kinds)))
            with self._engine.connect() as connection:
                rows = connection.execute(query.order_by(ledger_entries.c.seq).limit(page)).all()
            for row in rows:
                yield LedgerEntry(*row)
            if len(rows) < page:
                return
            after = rows[-1].seq
            if remaining is not None:
                remaining -= len(rows)

    def put_bundle(self, version: str, content: bytes) -> None:
        """Store a bundle's content under its version, once; repeating it is a no-op."""
        try:
            with self._writing() as connection, connection.begin():
                self._put_bundle(connection, version, content)
        except IntegrityError:  # stored by another writer since we looked: look again
            with self._writing() as connection, connection.begin():
                self._put_bundle(connection, version, content)

    @staticmethod
    def _put_bundle(connection: Connection, version: str, content: bytes) -> None:
        stored = connection.execute(
            select(bundles.c.content).where(bundles.c.version == version)
        ).scalar()
        if stored is None:
            connection.execute(insert(bundles).values(version=version, content=content))
        elif bytes(stored) != content:
            raise BundleConflictError(
                f"the bundle version `{version}` is already stored with other content"
            )

    def get_bundle(self, version: str) -> bytes | None:
        """Return a stored bundle's content, or None."""
        with self._engine.connect() as connection:
            stored = connection.execute(
                select(bundles.c.content).where(bundles.c.version == version)
            ).scalar()
        return None if stored is None else bytes(stored)

    def bundle_versions(self) -> list[str]:
        """Every stored bundle version, sorted."""
        with self._engine.connect() as connection:
            return list(
                connection.execute(select(bundles.c.version).order_by(bundles.c.version)).scalars()
            )

    def add_checkpoint(self, signed: SignedCheckpoint) -> None:
        """Record a signed checkpoint; one per tree size."""
        checkpoint = signed.checkpoint
        try:
            with self._writing() as connection, connection.begin():
                connection.execute(
                    insert(checkpoints).values(
                        tree_size=checkpoint.tree_size,
                        origin=checkpoint.origin,
                        root_hash=checkpoint.root_hash,
                        chain_head=checkpoint.chain_head,
                        at=checkpoint.at,
                        key_id=signed.key_id,
                        signature=signed.signature,
                    )
                )
        except IntegrityError:
            raise StoreError(
                f"a checkpoint for tree size `{checkpoint.tree_size}` is already stored"
            ) from None

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The checkpoint with the largest tree size, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
            ).first()
        if row is None:
            return None
        checkpoint = Checkpoint(row.origin, row.tree_size, row.root_hash, row.chain_head, row.at)
        return SignedCheckpoint(checkpoint, row.key_id, row.signature)


class _Granted:
    """A lead nobody else can want: held until given up."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True
