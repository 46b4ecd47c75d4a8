"""Create the ledger, bundle, checkpoint and meta tables.

The ledger, bundles and checkpoints are append-only: triggers abort any UPDATE or DELETE
of their rows (and, on PostgreSQL, a TRUNCATE of the table): a defence in depth under the
hash chain, which detects such changes but cannot prevent them.

Sequence numbers and tree sizes are 64-bit on PostgreSQL (SQLite's INTEGER already is).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY = ("ledger_entries", "bundles", "checkpoints")
#: A ledger position: BIGINT on PostgreSQL, INTEGER (a 64-bit rowid alias) on SQLite.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: A trigger function that aborts the statement with its first argument as the message.
REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION charter_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$
"""


def upgrade() -> None:
    """Create the tables and the append-only triggers."""
    op.create_table(
        "ledger_entries",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", SEQ, primary_key=True, autoincrement=False),
        sa.Column("origin", sa.String(100), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in _APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                    f" BEGIN SELECT RAISE(ABORT, '{table} rows are append-only'); END"
                )
    elif dialect == "postgresql":
        op.execute(REFUSE_FUNCTION)
        for table in _APPEND_ONLY:
            message = f"{table} rows are append-only"
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION charter_refuse('{message}')"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION charter_refuse('{message}')"
            )


def downgrade() -> None:
    """Drop everything this revision created."""
    if op.get_bind().dialect.name == "sqlite":
        for table in _APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    for table in ("meta", "checkpoints", "bundles", "ledger_entries"):
        op.drop_table(table)  # on PostgreSQL its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS charter_refuse()")
