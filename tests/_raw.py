"""Raw access to a test's store, past Charter, as a tamperer would have it.

`raw(target)` is a driver connection to a SQLite file or a PostgreSQL database that
takes `?` placeholders either way; `drop_triggers` takes away a table's append-only
guard, so a test can forge what only the hash chain should then catch.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["drop_triggers", "raw"]


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
