"""The reading commands (`ledger verify`, `ledger show`, `replay`, `keys list`) change nothing.

Pointed at something that is not a Charter ledger (a file, or a PostgreSQL database)
they refuse it on one line naming it, exit 2 (the command was used wrongly), and leave
it as it was: a file byte for byte, a database row for row.
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

from _postgres import Cluster
from _raw import fingerprint, raw
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
    """Exit 2, one line on stderr naming the file and what it is; the file is unchanged.

    Files, so SQLite only; the PostgreSQL databases of this kind are tested below.
    """
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


@pytest.mark.stores("postgresql")  # the SQLite files of this kind are the tests above
@pytest.mark.parametrize("command", READING, ids=" ".join)
@pytest.mark.parametrize("holding", ["nothing", "another application's table"])
def test_a_database_that_is_no_ledger_is_refused_and_left_alone(
    store_kind: str, postgres: Cluster, command: tuple[str, ...], holding: str
) -> None:
    """A blank database is told to migrate, another application's is named; both unchanged."""
    url = postgres.database(migrated=False)
    says = f"has no Charter schema yet: run `charter migrate --store {url}` to create it"
    if holding != "nothing":
        with raw(url) as connection:
            connection.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            connection.execute("INSERT INTO notes (body) VALUES ('keep me')")
        says = "is a PostgreSQL database but not a Charter ledger (it has no ledger tables)"
    before = fingerprint(url)
    result = CliRunner().invoke(app, [*command, "--store", url])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: `{url}` {says}"]
    assert result.stdout == ""
    assert fingerprint(url) == before


@pytest.mark.stores("postgresql")
@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_missing_database_is_refused_and_not_created(
    store_kind: str, postgres: Cluster, command: tuple[str, ...]
) -> None:
    """A database the server does not have: exit 2, one line naming it; still none there."""
    missing = postgres.url("charter_no_such_database")
    result = CliRunner().invoke(app, [*command, "--store", missing])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: `{missing}` cannot be reached: ")
    assert line.endswith('database "charter_no_such_database" does not exist')
    with raw(postgres.admin_url) as connection:
        names = [n for (n,) in connection.execute("SELECT datname FROM pg_database")]
    assert "charter_no_such_database" not in names


@pytest.fixture
def ledger(store_target: str) -> str:
    with make_charter(EXAMPLE_POLICY, store_target, clock=FakeClock(tick=5)) as charter:
        charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"},
                "context": {"confidence": 0.9, "rationale": "late"},
            }
        )
    return store_target


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_ledger_is_read_without_a_byte_changing(ledger: str, command: tuple[str, ...]) -> None:
    """A real ledger reads as before, and the store holds exactly what it held."""
    before = fingerprint(ledger)
    result = CliRunner().invoke(app, [*command, "--store", ledger])
    assert result.exit_code == 0, result.output
    assert fingerprint(ledger) == before


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_an_older_schema_is_refused_not_migrated(ledger: str, command: tuple[str, ...]) -> None:
    """A ledger at an older revision is named as such; reading it does not upgrade it."""
    with raw(ledger) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0003'")
    before = fingerprint(ledger)
    result = CliRunner().invoke(app, [*command, "--store", ledger])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: `{ledger}` has an older schema (revision `0003`)")
    assert fingerprint(ledger) == before


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_newer_schema_is_refused(ledger: str, command: tuple[str, ...]) -> None:
    """A ledger written by a newer Charter is refused, naming its revision, untouched."""
    with raw(ledger) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    before = fingerprint(ledger)
    result = CliRunner().invoke(app, [*command, "--store", ledger])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: `{ledger}` has a newer schema (revision `9999`)")
    assert "upgrade Charter" in line
    assert fingerprint(ledger) == before


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A ledger of a few hundred entries with one page of its entries overwritten.

    SQLite only: a page of a file damaged on disk; PostgreSQL keeps its own files.
    """
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
