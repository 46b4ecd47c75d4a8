"""The storage schema, in SQLAlchemy Core: one definition for SQLite and PostgreSQL.

Hashes are stored as lowercase hex text and payloads as their canonical JSON text, so
every column reads the same on both backends and a row can be verified as it comes out
of the database, without decoding. Migrations (`migrations/versions`) create exactly these
tables; this module is what the adapters query with.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "api_keys",
    "bundles",
    "checkpoints",
    "decisions",
    "ledger_entries",
    "meta",
    "metadata",
]

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

decisions = Table(
    "decisions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("agent", String(256), nullable=False),
    Column("action", String(256), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("at", String(40), nullable=False),
    Column("idempotency_key", String(256), nullable=True),
    Column("payload_hash", String(80), nullable=True),
    Column("grant_id", String(64), nullable=True, unique=True),
    Column("grant_args_hash", String(80), nullable=True),
    Column("grant_expires_at", String(40), nullable=True),
    Column("redeemed_seq", Integer, nullable=True),
    Column("outcome_seq", Integer, nullable=True),
    Column("outcome_success", Boolean, nullable=True),
    UniqueConstraint("agent", "idempotency_key", name="uq_decisions_idempotency"),
)
"""An index of decision entries: idempotency keys, grants and their use, outcomes."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("agent", String(256), nullable=True),
    Column("label", String(256), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)
"""API keys: only the SHA-256 of each secret is kept."""
