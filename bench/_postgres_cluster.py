"""A throwaway PostgreSQL server for the benchmarks: started, used, stopped and removed.

`PostgresCluster.start()` runs Debian's `initdb` and `pg_ctl` (or those found through
`CHARTER_PG_BIN` / `pg_config`) in a temporary folder, listening on a free loopback port
only (and a Unix socket in that folder), and `stop()` stops the server and removes the
folder; use it as a context manager so that it stops even on an error or Ctrl-C. As root
the server runs as the `postgres` user (`runuser`), because `initdb` refuses root.

Unlike the test suite's server (tests/_postgres.py, whose logic this follows) it is
durable by default: `fsync`, `full_page_writes` and `synchronous_commit` keep their
defaults, so a committed ledger append has reached the disk as it would in production.
`durable=False` turns fsync off, for a run that measures the CPU rather than the disk.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

__all__ = ["PostgresCluster", "PostgresMissing"]

#: Seconds `initdb`, `pg_ctl start` and `pg_ctl stop` may take each.
_STEP_TIMEOUT = 120


class PostgresMissing(RuntimeError):
    """No PostgreSQL server can be started here; says what to install."""


def _binaries() -> Path:
    """The folder of `initdb` and `pg_ctl`."""
    given = os.environ.get("CHARTER_PG_BIN")
    candidates = [given] if given else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            candidates.append(
                subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
                ).stdout.strip()
            )
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresMissing(
        "PostgreSQL's initdb and pg_ctl were not found (Debian: apt-get install postgresql;"
        " or set CHARTER_PG_BIN to the folder that holds them)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server in a temporary folder, on 127.0.0.1; `stop` removes it all.

    `admin_url` is a superuser's connection to the `postgres` database (the superuser is
    `charter`, trusted on loopback: the server listens nowhere else).
    """

    def __init__(self, folder: Path, port: int, runner: list[str], binaries: Path) -> None:
        self.folder = folder
        self.port = port
        self._runner = runner
        self._binaries = binaries
        self._running = False
        self.admin_url = f"postgresql://charter@127.0.0.1:{port}/postgres"

    @classmethod
    def start(cls, *, durable: bool = True, max_connections: int = 300) -> PostgresCluster:
        """Create and start a server; raise `PostgresMissing` when that cannot be done."""
        binaries = _binaries()
        folder = Path(tempfile.mkdtemp(prefix="charter-bench-pg-"))
        runner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the server runs as `postgres`
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(folder, ignore_errors=True)
                raise PostgresMissing("running as root needs a `postgres` user") from None
            os.chown(folder, user.pw_uid, user.pw_gid)
            runner = ["runuser", "-u", "postgres", "--"]
        cluster = cls(folder, _free_port(), runner, binaries)
        try:
            cluster._init_and_start(durable, max_connections)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *command: str) -> None:
        try:
            subprocess.run(
                [*self._runner, *command], check=True, capture_output=True, timeout=_STEP_TIMEOUT
            )
        except subprocess.CalledProcessError as error:
            output = (error.stderr or error.stdout or b"").decode(errors="replace").strip()
            raise PostgresMissing(f"{Path(command[0]).name} failed: {output}") from error

    def _init_and_start(self, durable: bool, max_connections: int) -> None:
        data = self.folder / "data"
        self._run(
            str(self._binaries / "initdb"), "-D", str(data), "-U", "charter", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            f" -c max_connections={max_connections} -c shared_buffers=128MB"
        )
        if not durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run(
            str(self._binaries / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self._running = True

    def url(self, database: str) -> str:
        """The URL of `database` on this server (as the superuser)."""
        return f"postgresql://charter@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database (not migrated) and return its URL."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (its connections are ended first)."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its folder."""
        if self._running:
            with contextlib.suppress(PostgresMissing, subprocess.SubprocessError, OSError):
                self._run(
                    str(self._binaries / "pg_ctl"), "-D", str(self.folder / "data"),
                    "-m", "immediate", "-w", "-t", "60", "stop",
                )  # fmt: skip
            self._running = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
