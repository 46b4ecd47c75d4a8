"""Storage: the storage ports, their SQLite adapter, group commit and verification.

`LedgerStore` is the composite of small ports (`LedgerReader`, `LedgerLog` with its
explicit `transaction()`, `DecisionIndex`, `ApprovalRows`, `KeyRows`, `Secrets`).

`open_store("charter.db")` gives a migrated SQLite store, and `open_store("charter.db",
read_only=True)` one that only reads an existing ledger and changes nothing in it (it
refuses anything else with `StoreOpenError`); `GroupCommitWriter` lets many
threads append through one batching writer (`ProcessCommitWriter` runs it in a child
process); `verify_store` checks the whole ledger.
"""

from typing import Any

from charter.store._group import GroupCommitWriter, LedgerWriter
from charter.store._opening import is_postgres, migrate_store, open_store
from charter.store._port import (
    AppendNotices,
    ApprovalFilters,
    ApprovalRows,
    BundleConflictError,
    Closeable,
    DecisionFilters,
    DecisionIndex,
    IndexChange,
    KeyRows,
    Lead,
    Leadership,
    LedgerLog,
    LedgerReader,
    LedgerStore,
    LedgerTransaction,
    SchemaVersionError,
    Secrets,
    SetOnceConflict,
    StagedTransaction,
    StoreError,
    StoreOpenError,
    checkpoint_store,
    verify_store,
)
from charter.store._process import ProcessCommitWriter
from charter.store._sqlite import SQLiteStore


def __getattr__(name: str) -> Any:
    # The PostgreSQL adapter's imports cost every command's start; only its users pay.
    if name == "PostgresStore":
        from charter.store._postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AppendNotices",
    "ApprovalFilters",
    "ApprovalRows",
    "BundleConflictError",
    "Closeable",
    "DecisionFilters",
    "DecisionIndex",
    "GroupCommitWriter",
    "IndexChange",
    "KeyRows",
    "Lead",
    "Leadership",
    "LedgerLog",
    "LedgerReader",
    "LedgerStore",
    "LedgerTransaction",
    "LedgerWriter",
    "PostgresStore",
    "ProcessCommitWriter",
    "SQLiteStore",
    "SchemaVersionError",
    "Secrets",
    "SetOnceConflict",
    "StagedTransaction",
    "StoreError",
    "StoreOpenError",
    "checkpoint_store",
    "is_postgres",
    "migrate_store",
    "open_store",
    "verify_store",
]
