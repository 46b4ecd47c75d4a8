"""The reading commands (`ledger verify`, `ledger show`, `replay`, `keys list`) change no file.

Pointed at something that is not a Charter ledger they refuse it on one line naming the
file, exit 2 (the command was used wrongly), and leave it byte for byte as it was.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _files import digest, empty_file, text_file, unrelated_database
from typer.testing import CliRunner

from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.testing import FakeClock, make_charter

READING = (("ledger", "verify"), ("ledger", "show"), ("replay",), ("keys", "list"))


@pytest.mark.parametrize("command", READING, ids=" ".join)
@pytest.mark.parametrize(
    ("make", "says"),
    [
        (empty_file, "is an empty database, not a Charter ledger"),
        (
            unrelated_database,
            "is a SQLite database but not a Charter ledger (it has no ledger tables)",
        ),
        (text_file, "is not a SQLite database"),
    ],
    ids=["empty file", "unrelated SQLite", "text file"],
)
def test_a_file_that_is_no_ledger_is_refused_and_left_alone(
    tmp_path: Path, command: tuple[str, ...], make: Callable[[Path], None], says: str
) -> None:
    """Exit 2, one line on stderr naming the file and what it is; the file is unchanged."""
    target = tmp_path / "thing.db"
    make(target)
    before = digest(target)
    result = CliRunner().invoke(app, [*command, "--db", str(target)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: `{target}` {says}"]
    assert result.stdout == ""
    assert digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing.db"]


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_missing_ledger_is_refused_and_not_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A path with no file: exit 2, one line, and still no file there."""
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(app, [*command, "--db", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: `{missing}` does not exist"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    with make_charter(EXAMPLE_POLICY, db, clock=FakeClock(tick=5)) as charter:
        charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"},
                "context": {"confidence": 0.9, "rationale": "late"},
            }
        )
    return db


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_ledger_is_read_without_a_byte_changing(ledger: Path, command: tuple[str, ...]) -> None:
    """A real ledger reads as before, and the file is exactly what it was."""
    before = digest(ledger)
    result = CliRunner().invoke(app, [*command, "--db", str(ledger)])
    assert result.exit_code == 0, result.output
    assert digest(ledger) == before


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_an_older_schema_is_refused_not_migrated(ledger: Path, command: tuple[str, ...]) -> None:
    """A ledger at an older revision is named as such; reading it does not upgrade it."""
    with sqlite3.connect(ledger) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0003'")
    connection.close()
    before = digest(ledger)
    result = CliRunner().invoke(app, [*command, "--db", str(ledger)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: `{ledger}` has an older schema (revision `0003`)")
    assert digest(ledger) == before


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_newer_schema_is_refused(ledger: Path, command: tuple[str, ...]) -> None:
    """A ledger written by a newer Charter is refused, naming its revision, untouched."""
    with sqlite3.connect(ledger) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.close()
    before = digest(ledger)
    result = CliRunner().invoke(app, [*command, "--db", str(ledger)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: `{ledger}` has a newer schema (revision `9999`)")
    assert "upgrade Charter" in line
    assert digest(ledger) == before


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A ledger of a few hundred entries with one page of its entries overwritten."""
    db = tmp_path / "damaged.db"
    with make_charter(EXAMPLE_POLICY, db, clock=FakeClock(tick=5)) as charter:
        charter.decide_many(
            [
                {
                    "agent": "support-bot",
                    "action": "crm.note",
                    "args": {"customer_id": f"cus-{n}", "text": "called back " * 20},
                    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
                }
                for n in range(400)
            ]
        )
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = connection.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = 'ledger_entries' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
    connection.close()
    assert len(leaves) > 10
    page = leaves[len(leaves) // 2]  # neither the first entries nor the head
    content = bytearray(db.read_bytes())
    content[(page - 1) * size : page * size] = b"\x5a" * size
    db.write_bytes(bytes(content))
    return db


@pytest.mark.parametrize("command", [("ledger", "verify"), ("replay",)], ids=" ".join)
def test_a_page_damaged_past_the_header_is_named_in_one_line(
    damaged: Path, command: tuple[str, ...]
) -> None:
    """Damage found while reading entries: one line naming the file, exit 2, no traceback.

    Run as the `charter` script (`python -m charter`), which is where the refusal is
    worded; the file is left as it was.
    """
    before = digest(damaged)
    result = subprocess.run(
        [sys.executable, "-m", "charter", *command, "--db", str(damaged)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: `{damaged}` cannot be read: database disk image is malformed"
    ]
    assert digest(damaged) == before
