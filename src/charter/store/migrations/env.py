"""Alembic environment: runs migrations on the connection `open_store` hands over.

There is no `alembic.ini` and no URL here: Charter migrates programmatically, inside the
transaction that opened the store, so a failed migration leaves the database untouched.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from charter.store._tables import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
