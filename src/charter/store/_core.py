"""What both adapters do the same way, in SQLAlchemy Core: reads, bundles, checkpoints.

`CoreStore` holds the engine, the ledger id and the read-only flag, and answers every
port method whose SQL is the same on SQLite and PostgreSQL: streaming entries, the head,
bundles, checkpoints, decisions-index queries. Each adapter adds its appends (the hot,
dialect-specific write) and its lookups.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import Engine, and_, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from charter.ledger import GENESIS, ChainHead, Checkpoint, LedgerEntry, SignedCheckpoint
from charter.store._port import BundleConflictError, StoreError
from charter.store._tables import bundles, checkpoints, decisions, ledger_entries

__all__ = ["ENTRY_COLUMNS", "PAGE", "WRITE", "CoreStore"]

PAGE = 1000  # rows per read transaction when streaming entries
WRITE = "charter_write"  # execution option: this connection is about to write

ENTRY_COLUMNS = (
    ledger_entries.c.seq,
    ledger_entries.c.kind,
    ledger_entries.c.at,
    ledger_entries.c.payload,
    ledger_entries.c.leaf_hash,
    ledger_entries.c.chain_hash,
)


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
