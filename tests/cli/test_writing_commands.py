"""The writing commands create a missing ledger but never take over someone else's file.

`charter keys create|revoke`, `charter decide --db` and `charter demo` create or migrate a
Charter ledger. Pointed by mistake at a file that holds something else (another
application's SQLite database, a text file) they refuse it on one line, exit 2, and leave
it byte for byte as it was: no Charter table is written into it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _files import digest, text_file, unrelated_database
from typer.testing import CliRunner

from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store

REQUEST = {
    "agent": "support-bot",
    "action": "payments.refund",
    "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"},
    "context": {"confidence": 0.9, "rationale": "late"},
}


def writing_commands(db: Path, request: Path) -> dict[str, list[str]]:
    return {
        "keys create": ["keys", "create", "--role", "auditor", "--db", str(db)],
        "keys revoke": ["keys", "revoke", "key-1", "--db", str(db)],
        "decide --db": [
            "decide",
            "--policy",
            str(EXAMPLE_POLICY),
            "--request",
            str(request),
            "--db",
            str(db),
        ],
        "demo": ["demo", "--db", str(db), "--requests", "5"],
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
    """Exit 2, one line naming the file and what it is; not a byte of it changes."""
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


def test_an_empty_file_becomes_a_ledger(tmp_path: Path) -> None:
    """An empty file (as `touch` leaves it) is a new ledger to a writing command."""
    target = tmp_path / "new.db"
    target.write_bytes(b"")
    result = CliRunner().invoke(app, ["keys", "create", "--role", "auditor", "--db", str(target)])
    assert result.exit_code == 0, result.output
    with open_store(target, read_only=True) as store:
        assert store.count() >= 1  # the key's creation is in the ledger
