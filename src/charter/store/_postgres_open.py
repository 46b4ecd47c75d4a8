"""Opening a PostgreSQL store, and migrating its schema (`charter migrate`).

Unlike a SQLite file, a PostgreSQL database is shared by every replica, so opening it
never changes its schema: `migrate_postgres` (the `charter migrate --store URL` command)
brings it to this code's head revision, once, under an advisory lock so that two
migrations started together run one after the other. `open_postgres` refuses a
database whose schema is older or newer than this code's, naming the command that fixes
it, and one that cannot be reached, naming why; a reader's connections are read-only
transactions, so reading changes nothing.

Once open, the store fails closed and comes back by itself: every error that means the
server is away (down, unreachable, restarting, a standby) is raised as
`StoreUnavailable`, whichever call met it; each connection is pinged as it leaves the
pool, so one the server dropped is replaced rather than used; and connecting, or waiting
on a host gone silent, is bounded by the timeouts below rather than by the kernel's.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError

from charter.store._opening import unavailable
from charter.store._port import SchemaVersionError, StoreError, StoreOpenError
from charter.store._postgres import PostgresStore
from charter.store._tables import meta

__all__ = ["migrate_postgres", "open_postgres", "postgres_url"]

#: The session advisory lock `charter migrate` holds while it migrates.
_MIGRATION_LOCK = 0x4348415254455201
#: Tables every Charter ledger has, whatever its revision.
_LEDGER_TABLES = frozenset({"alembic_version", "ledger_entries", "meta"})

#: libpq's settings that bound how long a call waits on a server that does not answer.
#: Without them a host that is black-holed (packets dropped, nothing refused) holds a
#: connection attempt for the kernel's SYN retries and a sent query for its TCP
#: retransmissions, minutes each: a decision would hang instead of failing closed.
_TIMEOUTS: dict[str, Any] = {
    # Seconds to connect (libpq's floor is 2), well below the SDK's 10 s request
    # timeout, so the agent hears the server's "store unavailable" rather than its own.
    "connect_timeout": 5,
    # Milliseconds sent data may stay unacknowledged before the connection is dropped.
    "tcp_user_timeout": 10_000,
    # An idle or waiting connection is probed after 5 s, every 2 s, dropped after 3 misses.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def postgres_url(target: str) -> URL:
    """The SQLAlchemy URL of `target` on the psycopg 3 driver, whatever its scheme says."""
    url = make_url(target.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg")


def _shown(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


def _engine(url: URL, *, read_only: bool) -> Engine:
    """A pooled engine; a reader's sessions default to read-only transactions."""
    try:
        import psycopg  # noqa: F401, PLC0415 - an optional extra, needed only here
    except ImportError:
        raise StoreError(
            "a PostgreSQL store needs the `postgres` extra:"
            " pip install 'charter-governance[postgres]'"
        ) from None
    connect_args: dict[str, Any] = {**_TIMEOUTS, "application_name": "charter"}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return create_engine(
        url,
        pool_size=8,
        max_overflow=16,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not used
        pool_recycle=3600,
        connect_args=connect_args,
    )


def _fail_closed(engine: Engine) -> None:
    """Raise each outage `engine` meets as `StoreUnavailable`, whatever call met it.

    Installed once the store is open: opening names an unreachable server with the
    `StoreOpenError` that says which store, before anything runs on it.
    """

    @event.listens_for(engine, "handle_error")
    def _outage(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            return None  # the pool replaces the dead connection itself and connects anew
        return unavailable(context.original_exception, lost=context.is_disconnect)


def _unreachable(shown: str, error: DBAPIError) -> StoreOpenError:
    first = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    return StoreOpenError(shown, f"cannot be reached: {first}")


def _revision(connection: Connection) -> tuple[str | None, set[str]]:
    """(the schema's revision or None, the tables in the database's search path)."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables:
        return None, tables
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return (None if revision is None else str(revision)), tables


def _schema_problem(revision: str | None, tables: set[str], fix: str) -> str | None:
    """Why this code cannot use a database at `revision`, or None when it can."""
    from charter.store._opening import HEAD_REVISION, known_revisions  # noqa: PLC0415

    if revision == HEAD_REVISION:
        return None
    if not tables:
        return f"has no Charter schema yet: run `{fix}` to create it"
    if not tables >= _LEDGER_TABLES:
        return "is a PostgreSQL database but not a Charter ledger (it has no ledger tables)"
    if revision in known_revisions():
        return (
            f"has an older schema (revision `{revision}`) than this Charter"
            f" (`{HEAD_REVISION}`): run `{fix}` to upgrade it"
        )
    return (
        f"has a newer schema (revision `{revision}`) than this Charter knows"
        f" (`{HEAD_REVISION}`): upgrade Charter to open it"
    )


def _fix_command(url: URL) -> str:
    return f"charter migrate --store {_shown(url)}"


def _ensure_log_id(connection: Connection, log_id: str | None) -> str:
    """The stored ledger id; a missing one is drawn now (the first replica's wins)."""
    if log_id is not None or _stored_log_id(connection) is None:
        connection.execute(
            pg_insert(meta)
            .values(key="log_id", value=log_id if log_id is not None else str(uuid.uuid4()))
            .on_conflict_do_nothing(index_elements=["key"])
        )
    stored = _stored_log_id(connection)
    if stored is None or (log_id is not None and stored != log_id):
        raise StoreError(f"the store holds ledger `{stored}`, not `{log_id}`")
    return stored


def _stored_log_id(connection: Connection) -> str | None:
    found = connection.execute(select(meta.c.value).where(meta.c.key == "log_id")).scalar()
    return None if found is None else str(found)


def open_postgres(target: str, *, log_id: str | None, read_only: bool) -> PostgresStore:
    """`open_store` for a PostgreSQL URL: its schema must be this code's.

    Raises:
        StoreOpenError: the server cannot be reached, the database is not a Charter
            ledger, or its schema is older or newer than this code's (the message names
            the command that fixes it); for reading, also a ledger with no id yet.
        StoreError: `log_id` does not match, or the `postgres` extra is not installed.
    """
    url = postgres_url(target)
    shown = _shown(url)
    engine = _engine(url, read_only=read_only)
    try:
        with engine.connect() as connection, connection.begin():
            revision, tables = _revision(connection)
            problem = _schema_problem(revision, tables, _fix_command(url))
            if problem is not None:
                raise StoreOpenError(shown, problem)
            if read_only:
                stored = _stored_log_id(connection)
                if stored is None:
                    raise StoreOpenError(shown, "is not a Charter ledger (it has no ledger id)")
                if log_id is not None and log_id != stored:
                    raise StoreError(f"the store holds ledger `{stored}`, not `{log_id}`")
                chosen = stored
            else:
                chosen = _ensure_log_id(connection, log_id)
    except DBAPIError as error:
        engine.dispose()
        raise _unreachable(shown, error) from None
    except BaseException:
        engine.dispose()
        raise
    _fail_closed(engine)
    return PostgresStore(engine, chosen, read_only=read_only)


def migrate_postgres(target: str) -> tuple[str | None, str]:
    """Bring a PostgreSQL database's schema to this code's head: (revision before, after).

    Every step runs in one transaction (PostgreSQL's DDL is transactional), so a failed
    migration leaves the schema as it was; concurrent runs wait on an advisory lock.

    Raises:
        StoreOpenError: the server cannot be reached, or the database holds another
            application's tables.
        SchemaVersionError: the schema is newer than this code.
    """
    from charter.store._opening import HEAD_REVISION, known_revisions, upgrade  # noqa: PLC0415

    url = postgres_url(target)
    shown = _shown(url)
    engine = _engine(url, read_only=False)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            connection.commit()
            try:
                with connection.begin():
                    before, tables = _revision(connection)
                    if before is None and tables:
                        raise StoreOpenError(
                            shown, "holds another application's tables, not a Charter ledger"
                        )
                    if before is not None and before not in known_revisions():
                        raise SchemaVersionError(
                            f"the database schema is at revision `{before}`, newer than this"
                            f" Charter (`{HEAD_REVISION}`): upgrade Charter to open it"
                        )
                    if before != HEAD_REVISION:
                        upgrade(connection)
                    _ensure_log_id(connection, None)
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK}
                )
                connection.commit()
    except DBAPIError as error:
        raise _unreachable(shown, error) from None
    finally:
        engine.dispose()
    return before, HEAD_REVISION
