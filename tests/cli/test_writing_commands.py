"""The writing commands create a missing ledger but never take over someone else's store.

`charter keys create|revoke`, `charter decide --db` and `charter demo` create or migrate a
SQLite ledger. Pointed by mistake at a file that holds something else (another
application's SQLite database, a text file) they refuse it on one line, exit 2, and leave
it byte for byte as it was: no Charter table is written into it. A PostgreSQL database
is only ever migrated by `charter migrate`: a blank one, or another application's, is
refused the same way and left row for row as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _files import digest, text_file, unrelated_database
from typer.testing import CliRunner

from _postgres import Cluster
from _raw import fingerprint, raw
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store

REQUEST = {
    "agent": "support-bot",
    "action": "payments.refund",
    "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"},
    "context": {"confidence": 0.9, "rationale": "late"},
}


def writing_commands(db: Path | str, request: Path, option: str = "--db") -> dict[str, list[str]]:
    return {
        "keys create": ["keys", "create", "--role", "auditor", option, str(db)],
        "keys revoke": ["keys", "revoke", "key-1", option, str(db)],
        "decide --db": [
            "decide",
            "--policy",
            str(EXAMPLE_POLICY),
            "--request",
            str(request),
            option,
            str(db),
        ],
        "demo": ["demo", option, str(db), "--requests", "5"],
    }


@pytest.mark.parametrize("command", ["keys create", "keys revoke", "decide --db", "demo"])
@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            unrelated_database,
            "is a SQLite database but not a Charter ledger (it has no ledger tables)",
        ),
        (text_file, "is not a SQLite database"),
    ],
    ids=["unrelated SQLite", "text file"],
)
def test_a_file_that_is_no_ledger_is_refused_and_left_alone(
    tmp_path: Path, command: str, make: Callable[[Path], None], says: str
) -> None:
    """Exit 2, one line naming the file and what it is; not a byte of it changes.

    Files, so SQLite only; the PostgreSQL databases of this kind are the next test.
    """
    target = tmp_path / "thing.db"
    make(target)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(REQUEST), encoding="utf-8")
    before = digest(target)
    result = CliRunner().invoke(app, writing_commands(target, request)[command])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: `{target}` {says}"]
    assert digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["request.json", "thing.db"]


@pytest.mark.stores("postgresql")
@pytest.mark.parametrize("command", ["keys create", "keys revoke", "decide --db", "demo"])
@pytest.mark.parametrize("holding", ["nothing", "another application's table"])
def test_a_database_that_is_no_ledger_is_refused_and_left_alone(
    store_kind: str, postgres: Cluster, tmp_path: Path, command: str, holding: str
) -> None:
    """A blank database is told to migrate, another application's is named; both unchanged."""
    url = postgres.database(migrated=False)
    says = f"has no Charter schema yet: run `charter migrate --store {url}` to create it"
    if holding != "nothing":
        with raw(url) as connection:
            connection.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            connection.execute("INSERT INTO notes (body) VALUES ('keep me')")
        says = "is a PostgreSQL database but not a Charter ledger (it has no ledger tables)"
    request = tmp_path / "request.json"
    request.write_text(json.dumps(REQUEST), encoding="utf-8")
    before = fingerprint(url)
    result = CliRunner().invoke(app, writing_commands(url, request, "--store")[command])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: `{url}` {says}"]
    assert fingerprint(url) == before


def test_an_empty_file_becomes_a_ledger(tmp_path: Path) -> None:
    """An empty file (as `touch` leaves it) is a new ledger to a writing command."""
    target = tmp_path / "new.db"
    target.write_bytes(b"")
    result = CliRunner().invoke(app, ["keys", "create", "--role", "auditor", "--db", str(target)])
    assert result.exit_code == 0, result.output
    with open_store(target, read_only=True) as store:
        assert store.count() >= 1  # the key's creation is in the ledger
