"""Files a ledger command may be pointed at, and a digest to prove one was left alone."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def digest(path: Path) -> str:
    """The file's SHA-256, to compare before and after a command."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def empty_file(path: Path) -> None:
    """A file of no bytes (SQLite takes it for an empty database)."""
    path.write_bytes(b"")


def unrelated_database(path: Path) -> None:
    """A SQLite database of another application, holding a row it must keep."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("INSERT INTO notes (body) VALUES ('keep me')")
    connection.close()


def text_file(path: Path) -> None:
    """A file that is not SQLite at all."""
    path.write_text("seq,kind\n1,decision\n", encoding="utf-8")
