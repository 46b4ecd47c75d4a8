"""Opening a SQLite store: for writing (created and migrated), or for reading only.

`open_store(path)` creates the file if need be, brings its schema to this code's head
revision with the packaged Alembic migrations, and refuses a schema newer than this code.
`open_store(path, read_only=True)` is for commands that only read: it opens the file with
SQLite's `mode=ro`, so nothing it does can change a byte of it, never creates it and never
migrates it, and refuses anything but a Charter ledger at this code's schema with one
`StoreOpenError` that names the file and what is wrong with it.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import QueuePool

from charter.errors import StoreUnavailable
from charter.store._port import LedgerStore, SchemaVersionError, StoreError, StoreOpenError
from charter.store._sqlite import _BUSY_TIMEOUT_MS, _PRAGMAS, _WRITE, SQLiteStore
from charter.store._tables import meta

__all__ = [
    "HEAD_REVISION",
    "is_postgres",
    "known_revisions",
    "migrate_store",
    "open_store",
    "unavailable",
    "upgrade",
]

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration this code ships; a test pins it to Alembic's own head.
HEAD_REVISION = "0004"
#: Tables every Charter ledger has, whatever its revision.
_LEDGER_TABLES = frozenset({"alembic_version", "ledger_entries", "meta"})


#: SQLite's answers for a file whose pages are damaged: found mid-read, not at opening.
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


#: SQLite's primary result codes for a file it cannot use now, whatever was asked of it:
#: its I/O failed, the disk is full, the file cannot be opened or written, or another
#: process held the write lock past the busy timeout.
_SQLITE_OUTAGES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)
#: PostgreSQL's SQLSTATE classes that say the server cannot serve now: a connection
#: exception (08), insufficient resources (53: disk full, out of memory, too many
#: connections), a system error (58: I/O).
_POSTGRES_OUTAGE_CLASSES = ("08", "53", "58")
#: ... and single codes: the server shutting down, crashed or still starting (57P01-03),
#: a read-only standby answering where the primary was (25006, after a failover).
_POSTGRES_OUTAGES = frozenset({"57P01", "57P02", "57P03", "25006"})


def _first_line(error: BaseException) -> str:
    said = str(error).strip()
    return said.splitlines()[0].strip() if said else type(error).__name__


def _driver_outage(driver: BaseException) -> str | None:
    """Why a driver's error means the database is away, or None when it means something else.

    Read from the error's own fields (SQLite's result code, PostgreSQL's SQLSTATE), so
    that psycopg, an optional extra, need not be imported to tell.
    """
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        # An extended code (SQLITE_IOERR_WRITE, ...) carries its primary one in the low byte.
        return _first_line(driver) if code is not None and code & 0xFF in _SQLITE_OUTAGES else None
    if not hasattr(driver, "sqlstate"):  # neither driver's: not ours to judge
        return None
    state = getattr(driver, "sqlstate", None)
    if state is None:
        # psycopg's errors without a server's answer: connecting failed, the connection
        # dropped or was closed under the call. The client's own mistakes have a state.
        named = {kind.__name__ for kind in type(driver).__mro__}
        return _first_line(driver) if "OperationalError" in named else None
    if state.startswith(_POSTGRES_OUTAGE_CLASSES) or state in _POSTGRES_OUTAGES:
        return _first_line(driver)
    return None


def unavailable(error: BaseException, *, lost: bool = False) -> StoreUnavailable | None:
    """The outage `error` stands for, as `StoreUnavailable`; None when it is anything else.

    An outage is the database being away, not the request being wrong: the server down
    or unreachable, its connection dropped (`lost`, or SQLAlchemy says it invalidated
    the connection), a read-only standby, a full disk, an unwritable file. A refused row
    (a constraint, a set-once trigger) or a bug is not one, and keeps its own error.
    """
    if isinstance(error, StoreUnavailable):
        return error
    driver: BaseException | None = error
    if isinstance(error, DBAPIError):
        driver = error.orig
        # SQLite has no connection to lose: its "disconnect" is a store used after
        # `close`, a caller's mistake.
        lost = lost or (error.connection_invalidated and not isinstance(driver, sqlite3.Error))
    why = _driver_outage(driver) if driver is not None else None
    if why is None and lost:
        why = "the connection to the database was lost"
    return None if why is None else StoreUnavailable(f"store unavailable: {why}")


def _sqlite_setup(engine: Engine, shown: str, *, read_only: bool = False) -> None:
    """Take transactions over from pysqlite, set the connection pragmas, name damage.

    A writing store sets WAL and `synchronous=FULL`; a reading one sets nothing that
    could write (not even the journal mode) and turns on `query_only` as well. A page
    found damaged by any statement raises `StoreOpenError` naming the file (`shown`),
    as a file damaged in its header does at opening, not a driver error; a file that
    cannot be used now (a full disk, gone unwritable) raises `StoreUnavailable`.
    """
    pragmas = ("query_only=ON",) if read_only else _PRAGMAS

    @event.listens_for(engine, "handle_error")
    def _damaged(context: ExceptionContext) -> BaseException | None:
        error = context.original_exception
        if isinstance(error, sqlite3.DatabaseError) and error.sqlite_errorcode in _DAMAGED:
            raise StoreOpenError(shown, f"cannot be read: {error}") from None
        # A full disk or a file gone unwritable is an outage the caller fails closed on
        # (and that ends when it does), not an internal error.
        return unavailable(error)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (*pragmas, f"busy_timeout={_BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        # Straight to the driver: SQLAlchemy's execution machinery costs several times the
        # statement itself, on every transaction. Its exception classes are kept.
        cursor = connection.connection.cursor()
        try:
            cursor.execute(statement)
        except sqlite3.Error as error:
            raise OperationalError.instance(statement, None, error, sqlite3.Error) from error
        finally:
            cursor.close()


_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def is_postgres(target: str | os.PathLike[str]) -> bool:
    """Whether `target` is a PostgreSQL URL (`postgresql://...`, `postgres://...`)."""
    scheme, separator, _ = os.fspath(target).partition("://")
    return bool(separator) and scheme.split("+")[0].lower() in _POSTGRES_SCHEMES


def _url(target: str | os.PathLike[str]) -> str:
    text = os.fspath(target)
    return text if "://" in text else f"sqlite:///{text}"


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _migrations() -> tuple[Any, Any]:
    """The Alembic configuration of the packaged migrations, and their script directory.

    Alembic is slow to import, so it is loaded only when a schema is not already at the
    head this code ships, which keeps every command of an up-to-date ledger quick to start.
    """
    from alembic.config import Config  # noqa: PLC0415 - see the docstring
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config, ScriptDirectory.from_config(config)


def known_revisions() -> set[str]:
    """Every schema revision this code's migrations know."""
    return {script.revision for script in _migrations()[1].walk_revisions()}


def upgrade(connection: Connection) -> None:
    """Run the packaged migrations up to the head, on `connection`'s transaction."""
    from alembic import command  # noqa: PLC0415 - see `_migrations`

    config, _ = _migrations()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _migrate(connection: Connection) -> None:
    """Bring the schema to this code's head revision, or refuse a newer one."""
    current = _current_revision(connection)
    if current == HEAD_REVISION:
        return
    if current is not None and current not in known_revisions():
        raise SchemaVersionError(
            f"the database schema is at revision `{current}`, newer than this Charter"
            f" (`{HEAD_REVISION}`): upgrade Charter to open it"
        )
    upgrade(connection)


def _log_id(connection: Connection, log_id: str | None) -> str:
    stored = connection.execute(select(meta.c.value).where(meta.c.key == "log_id")).scalar()
    if stored is not None:
        if log_id is not None and log_id != stored:
            raise StoreError(f"the store holds ledger `{stored}`, not `{log_id}`")
        return str(stored)
    chosen = log_id if log_id is not None else str(uuid.uuid4())
    connection.execute(insert(meta).values(key="log_id", value=chosen))
    return chosen


def open_store(
    target: str | os.PathLike[str], *, log_id: str | None = None, read_only: bool = False
) -> LedgerStore:
    """Open a store at a path or database URL: for writing, or only for reading.

    A PostgreSQL URL (`postgresql://user@host/db`) opens a `PostgresStore` (with the
    `postgres` extra installed): its schema must already be this code's (run
    `migrate_store`, the `charter migrate` command, to create or upgrade it), and it is
    never changed by opening. Everything else below is about SQLite.

    For writing (the default) a missing or empty file is created and an older schema
    migrated; a file holding anything but a Charter ledger is refused, untouched.
    With `read_only` the file must already be a Charter ledger at this code's schema:
    it is opened with SQLite's `mode=ro`, so reading it changes nothing, and every
    method that writes raises `StoreError`.

    Args:
        target: a file path, or a SQLite URL such as `sqlite:///charter.db` (a
            read-only store needs a file; `sqlite://` is a store in memory).
        log_id: the ledger's identity for a new store (a random UUID when None); when
            given for an existing store it must match.
        read_only: open an existing ledger for reading only.

    Raises:
        StoreOpenError: the file is not SQLite or holds another application's tables;
            or, `read_only`, it is missing, is not a Charter ledger, or has a schema
            this Charter does not read.
        SchemaVersionError: the database was migrated by a newer Charter.
        StoreError: `log_id` does not match the stored one, or `target` is a URL of
            another database than SQLite or PostgreSQL.
    """
    if is_postgres(target):
        # Imported only for a PostgreSQL URL: the driver is an extra.
        from charter.store._postgres_open import open_postgres  # noqa: PLC0415

        return open_postgres(os.fspath(target), log_id=log_id, read_only=read_only)
    if read_only:
        return _open_reader(target, log_id)
    url = make_url(_url(target))
    if url.get_backend_name() != "sqlite":
        raise StoreError(
            f"`{url.render_as_string(hide_password=True)}` is neither a SQLite file nor a"
            " PostgreSQL database (`postgresql://...`): Charter stores its ledger in one of those"
        )
    foreign = _foreign_problem(url.database)
    if foreign is not None:
        raise StoreOpenError(os.fspath(target), foreign)
    engine = create_engine(url)
    _sqlite_setup(engine, os.fspath(target))
    try:
        with engine.connect().execution_options(**{_WRITE: True}) as connection:
            with connection.begin():
                _migrate(connection)
            with connection.begin():
                chosen = _log_id(connection, log_id)
    except BaseException:
        engine.dispose()
        raise
    return SQLiteStore(engine, chosen)


def migrate_store(target: str | os.PathLike[str]) -> tuple[str | None, str]:
    """Create or upgrade a store's schema to this code's head: (revision before, after).

    For PostgreSQL this is the only thing that changes a schema (`open_store` refuses
    one that is not this code's); a SQLite file is migrated by any writer's opening as
    well, and this does the same.

    Raises:
        StoreOpenError: the store cannot be reached or opened, or holds another
            application's tables.
        SchemaVersionError: its schema is newer than this code.
    """
    if is_postgres(target):
        from charter.store._postgres_open import migrate_postgres  # noqa: PLC0415

        return migrate_postgres(os.fspath(target))
    before = None
    if "://" not in os.fspath(target):
        path = Path(target)
        if path.is_file() and path.stat().st_size and _foreign_problem(str(path)) is None:
            connection = _read_only_connection(path)
            try:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
                before = None if row is None else str(row[0])
            except sqlite3.DatabaseError:  # an empty database: nothing to upgrade from
                before = None
            finally:
                connection.close()
    open_store(target).close()
    return before, HEAD_REVISION


def _reader_path(target: str | os.PathLike[str]) -> Path:
    """The file a read-only store opens: a path, or the file of a `sqlite:///` URL."""
    given = os.fspath(target)
    if "://" not in given:
        return Path(given)
    url = make_url(given)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise StoreOpenError(given, "is not a SQLite file: only a file can be opened read-only")
    return Path(url.database)


def _read_only_connection(path: Path) -> sqlite3.Connection:
    """A driver connection that cannot write to `path`, nor create it."""
    # Characters meaningful in a URI (`?`, `#`, `%`) must not cut the path short.
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _foreign_problem(database: str | None) -> str | None:
    """Why a writer must leave the file `database` alone, or None when it may take it.

    A writer creates a missing or empty file and migrates a Charter ledger; a file that
    holds anything else (not SQLite, or another application's tables) is refused, so
    pointing `--db` at the wrong file never writes Charter's schema into it.
    """
    if database in (None, "", ":memory:"):
        return None
    path = Path(database)
    if not path.exists():
        return None
    if not path.is_file():
        return "is not a file"
    if path.stat().st_size == 0:
        return None
    try:
        connection = _read_only_connection(path)
    except sqlite3.Error as error:
        return f"cannot be opened: {error}"
    try:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            return "is not a SQLite database"
        return f"cannot be read: {error}"
    finally:
        connection.close()
    if tables and not tables >= _LEDGER_TABLES:
        return "is a SQLite database but not a Charter ledger (it has no ledger tables)"
    return None


def _ledger_problem(path: Path) -> tuple[str | None, str | None]:
    """(what is wrong with `path` as a ledger this code reads, or None; its log id)."""
    if not path.exists():
        return "does not exist", None
    if not path.is_file():
        return "is not a file", None
    try:
        connection = _read_only_connection(path)
    except sqlite3.Error as error:
        return f"cannot be opened: {error}", None
    try:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            return "is an empty database, not a Charter ledger", None
        if not tables >= _LEDGER_TABLES:
            return "is a SQLite database but not a Charter ledger (it has no ledger tables)", None
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        problem = _revision_problem(None if revision is None else str(revision[0]))
        if problem is not None:
            return problem, None
        found = connection.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        if found is None:
            return "is not a Charter ledger (it has no ledger id)", None
        return None, str(found[0])
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            return "is not a SQLite database", None
        return f"cannot be read: {error}", None
    finally:
        connection.close()


def _revision_problem(revision: str | None) -> str | None:
    """Why a reader cannot read a schema at `revision`, or None when it is this code's."""
    if revision == HEAD_REVISION:
        return None
    if revision is None:
        return "is not a Charter ledger (its schema has no revision)"
    if revision in known_revisions():
        return (
            f"has an older schema (revision `{revision}`) than this Charter reads"
            f" (`{HEAD_REVISION}`): open it once with a command that writes to it, such as"
            " `charter serve`, to upgrade it"
        )
    return (
        f"has a newer schema (revision `{revision}`) than this Charter knows"
        f" (`{HEAD_REVISION}`): upgrade Charter to read it"
    )


def _open_reader(target: str | os.PathLike[str], log_id: str | None) -> SQLiteStore:
    """`open_store(target, read_only=True)`."""
    path = _reader_path(target)
    problem, stored = _ledger_problem(path)
    if problem is not None or stored is None:
        raise StoreOpenError(os.fspath(target), problem or "is not a Charter ledger")
    if log_id is not None and log_id != stored:
        raise StoreError(f"the store holds ledger `{stored}`, not `{log_id}`")
    # The URL names the file (for messages and the pool's choice); every connection
    # comes from the read-only opener.
    engine = create_engine(
        make_url("sqlite://").set(database=str(path)),
        creator=lambda: _read_only_connection(path),
        poolclass=QueuePool,
    )
    _sqlite_setup(engine, os.fspath(target), read_only=True)
    return SQLiteStore(engine, stored, read_only=True)
