"""Approvals, reviewer groups on keys, and idempotency keys that can be reused.

- `approvals`: one row per approval (the state the inbox and the timers need), written
  in the same transaction as the ledger event of each step.
- `decisions.approval_state`: where the decision's approval stands, so a decision's
  state is one row read.
- `api_keys.groups`: the reviewer groups of a key (a JSON list).
- The unique (agent, idempotency key) constraint becomes a plain index: a key may be
  used again once its retention has passed, and the newest use is the one that counts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: A ledger position: BIGINT on PostgreSQL, INTEGER on SQLite (as in 0001).
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the approvals table and the new columns; relax the idempotency constraint."""
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("decision_id", sa.String(64), nullable=False, unique=True),
        sa.Column("agent", sa.String(256), nullable=False),
        sa.Column("action", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("route_id", sa.String(128), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("deadline", sa.String(40), nullable=False),
        sa.Column("risk", sa.Integer, nullable=False),
        sa.Column("shape", sa.String(64), nullable=False),
        sa.Column("opened_seq", SEQ, nullable=False),
        sa.Column("updated_seq", SEQ, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_approvals_state_deadline", "approvals", ["state", "deadline", "risk"])
    op.create_index("ix_approvals_agent_state", "approvals", ["agent", "state"])
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("approval_state", sa.String(16), nullable=True))
        batch.drop_constraint("uq_decisions_idempotency", type_="unique")
        batch.create_index("ix_decisions_idempotency", ["agent", "idempotency_key"])
        batch.create_index("ix_decisions_agent_action", ["agent", "action", "seq"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("groups", sa.Text, nullable=True))


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("groups")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_index("ix_decisions_agent_action")
        batch.drop_index("ix_decisions_idempotency")
        batch.create_unique_constraint("uq_decisions_idempotency", ["agent", "idempotency_key"])
        batch.drop_column("approval_state")
    op.drop_table("approvals")
