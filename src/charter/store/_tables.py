"""The storage schema, in SQLAlchemy Core.

Hashes are stored as lowercase hex text and payloads as their canonical JSON text, so
every column reads the same whatever the database and a row can be verified as it comes
out of it, without decoding. Migrations (`migrations/versions`) create exactly these
tables; this module is what the adapters query with.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "api_keys",
    "approvals",
    "bundles",
    "checkpoints",
    "decisions",
    "ledger_entries",
    "meta",
    "metadata",
]

metadata = MetaData()

#: A ledger position: BIGINT on PostgreSQL, INTEGER (SQLite's 64-bit rowid) on SQLite.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),
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
    Column("tree_size", SEQ, primary_key=True, autoincrement=False),
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
    Column("seq", SEQ, nullable=False, unique=True),
    Column("agent", String(256), nullable=False),
    Column("action", String(256), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("at", String(40), nullable=False),
    Column("idempotency_key", String(256), nullable=True),
    Column("payload_hash", String(80), nullable=True),
    Column("grant_id", String(64), nullable=True, unique=True),
    Column("grant_args_hash", String(80), nullable=True),
    Column("grant_expires_at", String(40), nullable=True),
    Column("redeemed_seq", SEQ, nullable=True),
    Column("outcome_seq", SEQ, nullable=True),
    Column("outcome_success", Boolean, nullable=True),
    Column("approval_state", String(16), nullable=True),
    Index("ix_decisions_idempotency", "agent", "idempotency_key"),
    Index("ix_decisions_agent_action", "agent", "action", "seq"),
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
    Column("groups", Text, nullable=True),
)
"""API keys: only the SHA-256 of each secret is kept; `groups` is a JSON list."""

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("agent", String(256), nullable=False),
    Column("action", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("route_id", String(128), nullable=False),
    Column("groups", Text, nullable=False),
    Column("deadline", String(40), nullable=False),
    Column("risk", Integer, nullable=False),
    Column("shape", String(64), nullable=False),
    Column("opened_seq", SEQ, nullable=False),
    Column("updated_seq", SEQ, nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_approvals_state_deadline", "state", "deadline", "risk"),
    Index("ix_approvals_agent_state", "agent", "state"),
)
"""Approvals as they stand now (`body` is the approval's JSON); the ledger has each step."""
