"""The storage schema, in SQLAlchemy Core: one definition for SQLite and PostgreSQL.

Hashes are stored as lowercase hex text and payloads as their canonical JSON text, so
every column reads the same on both backends and a row can be verified as it comes out
of the database, without decoding. Migrations (`migrations/versions`) create exactly these
tables; this module is what the adapters query with.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, Text

__all__ = ["bundles", "checkpoints", "ledger_entries", "meta", "metadata"]

metadata = MetaData()

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("leaf_hash", String(64), nullable=False),
    Column("chain_hash", String(64), nullable=False),
)
"""One row per ledger entry; rows are only ever inserted."""

bundles = Table(
    "bundles",
    metadata,
    Column("version", String(100), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)
"""Policy bundles by version (the hash of their content), each stored once."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", Integer, primary_key=True, autoincrement=False),
    Column("origin", String(100), nullable=False),
    Column("root_hash", String(64), nullable=False),
    Column("chain_head", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)
"""Signed checkpoints, one per tree size."""

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
"""Facts about the store itself, such as the ledger's `log_id`."""
