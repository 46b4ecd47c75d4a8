"""The stores every store-dependent test runs on: SQLite and PostgreSQL, in one run.

A test that asks for `store_target` (or `store_kind`) runs once per store: against a
fresh SQLite file in its `tmp_path`, and against a fresh database on the session's
throwaway PostgreSQL server (`tests/_postgres.py`). `--stores sqlite` (or `postgresql`)
narrows a run to one. Outside CI a machine without PostgreSQL skips the PostgreSQL runs
and says what to install; in CI (`CI=true`) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _postgres import Cluster, PostgresMissing

STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stores",
        default=",".join(STORES),
        help="the stores to run store-dependent tests on, comma-separated (default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        chosen = [s.strip() for s in metafunc.config.getoption("--stores").split(",")]
        unknown = sorted(set(chosen) - set(STORES))
        if unknown:
            raise pytest.UsageError(f"--stores: unknown store {unknown[0]!r} (sqlite, postgresql)")
        metafunc.parametrize("store_kind", [s for s in STORES if s in chosen], indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store this run of the test is on: `sqlite` or `postgresql`."""
    return str(request.param)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    try:
        cluster = Cluster.start()
    except PostgresMissing as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {missing}")
        pytest.skip(str(missing))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def store_target(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a fresh, empty ledger is: a SQLite file, or a PostgreSQL database's URL."""
    if store_kind == "sqlite":
        return str(tmp_path / "charter.db")
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.database()
