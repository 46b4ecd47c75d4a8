"""Raw access to a test's store, past Charter, as a tamperer would have it.

`raw(target)` is a driver connection to a SQLite file or a PostgreSQL database that
takes `?` placeholders either way; `drop_triggers` takes away a table's append-only
guard, so a test can forge what only the hash chain should then catch. `fingerprint`
tells whether anything a store holds changed: a SQLite file's bytes, or every row of
every table of a PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["drop_triggers", "fingerprint", "raw"]


class _Postgres:
    """A psycopg connection in autocommit that reads `?` as its placeholder."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, statement: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._connection.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]


@contextlib.contextmanager
def raw(target: str | Path) -> Iterator[Any]:
    """A driver connection to the store at `target`, in autocommit."""
    if "://" in str(target):
        with psycopg.connect(str(target), autocommit=True) as connection:
            yield _Postgres(connection)
        return
    connection = sqlite3.connect(target, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def drop_triggers(target: str | Path, table: str) -> None:
    """Remove the triggers that keep `table`'s rows append-only."""
    with raw(target) as connection:
        if "://" in str(target):
            connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        else:
            for action in ("update", "delete"):
                connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def fingerprint(target: str | Path) -> str:
    """A digest of what the store at `target` holds, to compare before and after.

    A SQLite file: its bytes. A PostgreSQL database: every row of every table, as text,
    in a fixed order (its files change under a mere read, as hint bits are set).
    """
    if "://" not in str(target):
        return hashlib.sha256(Path(target).read_bytes()).hexdigest()
    digest = hashlib.sha256()
    with psycopg.connect(str(target), autocommit=True) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        for (table,) in tables:
            query = f'SELECT t::text FROM "{table}" t ORDER BY 1'  # noqa: S608 - catalog names
            rows = [row for (row,) in connection.execute(query)]  # type: ignore[arg-type]
            digest.update(repr((table, rows)).encode())
    return digest.hexdigest()
