"""A throwaway PostgreSQL cluster for the test session, and fresh databases on it.

The tests run against a real server, never a mock: `Cluster.start` runs Debian's
`initdb` and `pg_ctl` (or those found through `CHARTER_PG_BIN` / `pg_config`) in a
temporary folder, on a free loopback port, and `Cluster.stop` removes it. As root (CI
and this project's sandboxes run so) the server runs as the `postgres` user, because
`initdb` refuses root. `CHARTER_TEST_POSTGRES=postgresql://...` points the tests at a
server someone else runs instead (one database of it is the admin connection).

`Cluster.database()` gives each test its own database, copied from a template that is
already migrated, so a test starts from an empty ledger in tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

__all__ = ["Cluster", "PostgresMissing", "private_cluster", "stored_bytes"]

_TEMPLATE = "charter_template"
_RUNNING: list[Cluster] = []  # the server this process started, if any


class PostgresMissing(RuntimeError):
    """No PostgreSQL server can be started or reached; says what to install."""


def _binaries() -> Path:
    """The folder of `initdb` and `pg_ctl`."""
    given = os.environ.get("CHARTER_PG_BIN")
    candidates = [given] if given else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(found)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresMissing(
        "PostgreSQL's initdb and pg_ctl were not found (Debian: apt-get install postgresql;"
        " or set CHARTER_PG_BIN, or CHARTER_TEST_POSTGRES to a server's URL)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One PostgreSQL server for the session: started here, or given by URL."""

    def __init__(self, admin_url: str, folder: Path | None, runner: list[str]) -> None:
        self.admin_url = admin_url  # a superuser's connection to an existing database
        self._folder = folder  # the data folder's parent, when this process started it
        self._runner = runner
        self._names = itertools.count(1)
        self._template_ready = False

    @classmethod
    def start(cls, *, private: bool = False) -> Cluster:
        """Start a throwaway server, or use `CHARTER_TEST_POSTGRES`.

        `private` always starts one of its own, whatever `CHARTER_TEST_POSTGRES` says:
        a server a test may stop, freeze and start again (`halt`, `freeze`, `resume`)
        without disturbing the session's. `stored_bytes` does not look at its files.
        """
        given = os.environ.get("CHARTER_TEST_POSTGRES")
        if given and not private:
            return cls(given, None, [])
        binaries = _binaries()
        folder = Path(tempfile.mkdtemp(prefix="charter-pg-"))
        runner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the server runs as `postgres`
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresMissing("running as root needs a `postgres` user") from None
            os.chown(folder, user.pw_uid, user.pw_gid)
            runner = ["runuser", "-u", "postgres", "--"]
        data = folder / "data"
        port = _free_port()
        subprocess.run(
            [*runner, str(binaries / "initdb"), "-D", str(data), "-U", "charter",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        # fsync off: a test's durability is against a process killed, not the machine
        # losing power, and the page cache survives a killed server.
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB"
        )
        subprocess.run(
            [*runner, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"),
             "-o", options, "-w", "-t", "60", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        cluster = cls(f"postgresql://charter@127.0.0.1:{port}/postgres", folder, runner)
        cluster._binaries = binaries
        cluster._options = options
        if not private:
            _RUNNING.append(cluster)
        return cluster

    _binaries: Path
    _options: str

    @property
    def data(self) -> Path | None:
        """The server's data folder, when this process started it."""
        return None if self._folder is None else self._folder / "data"

    def pg_ctl(self, *args: str) -> None:
        """Run `pg_ctl` on the server this process started (stop it, start it again)."""
        if self._folder is None:
            raise RuntimeError("the server was not started by the tests")
        command = [*self._runner, str(self._binaries / "pg_ctl"), "-D", str(self._folder / "data")]
        subprocess.run([*command, *args], check=True, capture_output=True, timeout=120)

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server as an outage would, keeping its data for `resume`.

        `immediate` is a crash (no shutdown checkpoint, clients cut off); `fast` is an
        orderly stop that still disconnects every client at once.
        """
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def resume(self) -> None:
        """Start the server `halt` stopped, on the same port and data folder."""
        assert self._folder is not None  # `pg_ctl` refuses a server it did not start
        # The log file, as at the first start: without one the server would hold the
        # pipes `pg_ctl` was given, and `subprocess.run` would wait on them forever.
        self.pg_ctl("-l", str(self._folder / "log"), "-o", self._options, "-w", "-t", "60", "start")

    def _processes(self) -> list[int]:
        """The server's processes: the postmaster (from its pid file) and its children."""
        assert self._folder is not None
        postmaster = int((self._folder / "data" / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The parent's pid is the second field after the parenthesised name.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """Stop every process of the server (SIGSTOP): a host gone silent, not refusing.

        Connections stay open and connecting still reaches the listen queue, but nothing
        answers, as with a database host that is black-holed or hung. `thaw` ends it.
        """
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a `freeze`d server run again (SIGCONT)."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def url(self, database: str) -> str:
        """The URL of `database` on this server."""
        return make_url(self.admin_url).set(database=database).render_as_string(False)

    def _admin(self, statement: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(statement)  # type: ignore[arg-type]

    def _template(self) -> None:
        """A database at the head revision, copied for each test (migrations run once)."""
        if self._template_ready:
            return
        from charter.store import migrate_store  # noqa: PLC0415 - after the server is up

        self._admin(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        self._admin(f"CREATE DATABASE {_TEMPLATE}")
        migrate_store(self.url(_TEMPLATE))
        # The copy must draw its own ledger id on first opening.
        with psycopg.connect(self.url(_TEMPLATE), autocommit=True) as connection:
            connection.execute("DELETE FROM meta WHERE key = 'log_id'")
        self._template_ready = True

    def database(self, *, migrated: bool = True) -> str:
        """A new, empty database's URL: migrated (an empty ledger) or blank."""
        name = f"charter_test_{os.getpid()}_{next(self._names)}"
        if migrated:
            self._template()
            self._admin(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE} STRATEGY FILE_COPY")
        else:
            self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server this process started and remove its folder."""
        if self._folder is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self._folder, ignore_errors=True)


def stored_bytes(url: str) -> bytes:
    """Everything one database holds, as bytes.

    Every row of every table as text, and, when this process runs the server, the
    database's files on disk after a checkpoint.
    """
    name = make_url(url).database
    parts: list[bytes] = []
    with psycopg.connect(url, autocommit=True) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            query = f'SELECT t::text FROM "{table}" t'  # noqa: S608 - names from the catalog
            for (row,) in connection.execute(query):  # type: ignore[arg-type]
                parts.append(str(row).encode())
        oid = connection.execute(
            "SELECT oid FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        for cluster in _RUNNING:
            connection.execute("CHECKPOINT")
            if cluster.data is not None and oid is not None:
                for path in sorted((cluster.data / "base" / str(oid[0])).iterdir()):
                    if path.is_file():
                        parts.append(path.read_bytes())
    return b"".join(parts)


def private_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of a test module's own, which its tests may stop and start.

    Outside CI a machine without PostgreSQL skips the module and says what to install;
    in CI (`CI=true`) that fails instead. Use it as a module-scoped fixture's body.
    """
    try:
        server = Cluster.start(private=True)
    except PostgresMissing as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {missing}")
        pytest.skip(str(missing))
    try:
        yield server
    finally:
        server.stop()
