"""The stores every store-dependent test runs on: SQLite and PostgreSQL, in one run.

A test that asks for `store_target` (or `store_kind`) runs once per store: against a
fresh SQLite file in its `tmp_path`, and against a fresh database on the session's
throwaway PostgreSQL server (`tests/_postgres.py`). `--stores sqlite` (or `postgresql`)
narrows a run to one. Outside CI a machine without PostgreSQL skips the PostgreSQL runs
and says what to install; in CI (`CI=true`) they fail instead.

`@pytest.mark.stores("sqlite")` keeps one test (or class, or module) to the stores named,
for a test that gets a store through a shared fixture but checks something the store
plays no part in (say why beside the mark); a test about SQLite files themselves opens
its own file and needs no mark.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _postgres import Cluster, PostgresMissing

STORES = ("sqlite", "postgresql")

# pytest-xdist's workers inherit the controller's terminal width as COLUMNS, which rich
# would fix the commands' consoles to when they are imported; tests that read a table
# give the command its width themselves (CliRunner's env).
os.environ.pop("COLUMNS", None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stores",
        default=",".join(STORES),
        help="the stores to run store-dependent tests on, comma-separated (default: both)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stores(*names): run this store-dependent test on these stores only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        chosen = [s.strip() for s in metafunc.config.getoption("--stores").split(",")]
        unknown = sorted(set(chosen) - set(STORES))
        if unknown:
            raise pytest.UsageError(f"--stores: unknown store {unknown[0]!r} (sqlite, postgresql)")
        marked = metafunc.definition.get_closest_marker("stores")
        if marked is not None:
            if not marked.args or set(marked.args) - set(STORES):
                raise pytest.UsageError(f"{metafunc.definition.nodeid}: stores{marked.args}")
            chosen = [s for s in chosen if s in marked.args]
            if not chosen:
                only = ", ".join(marked.args)
                skip = pytest.mark.skip(reason=f"runs on {only} only, which --stores leaves out")
                metafunc.parametrize("store_kind", [pytest.param(only, marks=skip)], indirect=True)
                return
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
