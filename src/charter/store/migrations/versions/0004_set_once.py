"""A grant is redeemed once and an outcome recorded once, whoever writes.

The gateway refuses a second redemption (or outcome) before it queues one, but two
processes on one database (a server and an embedded `Charter`, say) each check before
either commits. These triggers make the database the judge: setting `redeemed_seq` or
`outcome_seq` on a decision that already has it aborts the writing transaction, and the
writer turns the abort into `SetOnceConflict` for that caller alone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: column -> the message the abort carries (`charter.store` recognizes it)
SET_ONCE = {
    "redeemed_seq": "set-once: the grant was already redeemed",
    "outcome_seq": "set-once: the decision already has an outcome",
}


def upgrade() -> None:
    """Create the set-once triggers."""
    dialect = op.get_bind().dialect.name
    for column, message in SET_ONCE.items():
        if dialect == "sqlite":
            op.execute(
                f"CREATE TRIGGER decisions_{column}_once BEFORE UPDATE OF {column} ON decisions"
                f" WHEN OLD.{column} IS NOT NULL BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        elif dialect == "postgresql":  # `charter_refuse` is migration 0001's
            op.execute(
                f"CREATE TRIGGER decisions_{column}_once BEFORE UPDATE OF {column} ON decisions"
                f" FOR EACH ROW WHEN (OLD.{column} IS NOT NULL)"
                f" EXECUTE FUNCTION charter_refuse('{message}')"
            )


def downgrade() -> None:
    """Drop the triggers."""
    dialect = op.get_bind().dialect.name
    for column in SET_ONCE:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS decisions_{column}_once")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS decisions_{column}_once ON decisions")
