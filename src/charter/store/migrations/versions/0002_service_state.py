"""The service's state beside the ledger: the decisions index and API keys.

The ledger stays the record; these tables answer questions a request must answer fast
(has this idempotency key been used, is this grant redeemed, which key is this) and are
written in the same transaction as the ledger entries they index.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: A ledger position: BIGINT on PostgreSQL, INTEGER on SQLite (as in 0001).
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the decisions index and the API key table."""
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", SEQ, nullable=False, unique=True),
        sa.Column("agent", sa.String(256), nullable=False),
        sa.Column("action", sa.String(256), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("payload_hash", sa.String(80), nullable=True),
        sa.Column("grant_id", sa.String(64), nullable=True, unique=True),
        sa.Column("grant_args_hash", sa.String(80), nullable=True),
        sa.Column("grant_expires_at", sa.String(40), nullable=True),
        sa.Column("redeemed_seq", SEQ, nullable=True),
        sa.Column("outcome_seq", SEQ, nullable=True),
        sa.Column("outcome_success", sa.Boolean, nullable=True),
        sa.UniqueConstraint("agent", "idempotency_key", name="uq_decisions_idempotency"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("agent", sa.String(256), nullable=True),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("revoked_at", sa.String(40), nullable=True),
    )


def downgrade() -> None:
    """Drop what this revision created."""
    op.drop_table("api_keys")
    op.drop_table("decisions")
