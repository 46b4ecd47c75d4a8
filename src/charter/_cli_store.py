"""The `charter` command line's stores and API keys: `--db`/`--store`, and `charter keys`.

Every command that works on a ledger names it with `--db PATH` (a SQLite file) or
`--store URL|PATH` (a PostgreSQL URL, or a SQLite file; `CHARTER_STORE` too) and opens it
here: for reading (nothing in it changes) or for writing. `keys_app` is `charter keys`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from charter.errors import CharterError, NotFound, PolicyInvalid, Problem, RequestInvalid
from charter.policy import Bundle, load_bundle
from charter.service import KeyRing, system_clock
from charter.store import LedgerStore, StoreOpenError, open_store

__all__ = [
    "DbOption",
    "StoreOption",
    "err",
    "keys_app",
    "open_reading",
    "open_writing",
    "out",
    "shown",
    "target",
]

#: Where commands print their answers, and their errors.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="The SQLite ledger file (shorthand for --store PATH).", show_default=False
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CHARTER_STORE",
        help="The store: a PostgreSQL URL (postgresql://user@host/db) or a SQLite file.",
        show_default=False,
    ),
]


def print_problems(problems: tuple[Problem, ...] | list[Problem], root: Path | None) -> None:
    """Print policy problems as `file:line:col: code: message`, one per line."""
    for problem in problems:
        name = problem.file
        if root is not None and not name.startswith(("(", "/")) and name != str(root):
            name = str(root / name)
        # Plain print: these lines are for editors and grep, not for rich's markup.
        print(f"{name}:{problem.line}:{problem.col}: {problem.code}: {problem.message}")


def load_policy(policy: Path) -> Bundle:
    """Load a bundle for a command: a missing folder is a usage error (2), problems are 1."""
    if not policy.is_dir():
        err.print(f"error: `{policy}` is not a folder; a policy bundle is a folder of YAML files")
        raise typer.Exit(2)
    try:
        return load_bundle(policy)
    except PolicyInvalid as exc:
        print_problems(exc.problems, policy)
        err.print(f"[red]{len(exc.problems)} problem(s)[/red] in {policy}")
        raise typer.Exit(1) from None


def target(db: Path | None, store: str | None, default: Path | None = None) -> str | Path:
    """The store a command works on: `--store`, `--db`, or the default; exit 2 if neither."""
    if db is not None and store is not None:
        err.print("error: give --db or --store, not both")
        raise typer.Exit(2)
    if store is not None:
        return store if "://" in store else Path(store)
    if db is not None:
        return db
    if default is not None:
        return default
    err.print("error: say which ledger: --db PATH, or --store URL (or set CHARTER_STORE)")
    raise typer.Exit(2)


def shown(target: str | Path) -> str:
    """A store as messages name it (a URL without its password)."""
    if isinstance(target, Path):
        return str(target)
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only for a URL

    return make_url(target).render_as_string(hide_password=True)


def open_writing(db: str | Path, *, must_exist: bool = True) -> LedgerStore:
    """Open a ledger for a command that writes to it (migrating an older schema).

    A missing file is refused when `must_exist`; a file holding something other than a
    Charter ledger is refused untouched, on one line (exit 2).
    """
    if must_exist and isinstance(db, Path) and not db.is_file():
        err.print(f"error: ledger `{db}` does not exist")
        raise typer.Exit(2)
    try:
        return open_store(db)
    except StoreOpenError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    except CharterError as exc:
        err.print(f"error: {shown(db)}: {exc.message}", markup=False)
        raise typer.Exit(2) from None


def open_reading(db: str | Path) -> LedgerStore:
    """Open a ledger for a command that only reads it: nothing in the file changes.

    A file that is missing, not SQLite, not a Charter ledger, or at a schema this
    version does not read is refused on one line naming it (exit 2).
    """
    try:
        return open_store(db, read_only=True)
    except StoreOpenError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option("--role", help="agent, reviewer, policy-admin, admin or auditor.")
    ],
    db: DbOption = None,
    store_url: StoreOption = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="For an agent key: the agent it acts as.")
    ] = None,
    label: Annotated[
        str,
        typer.Option(
            "--label",
            help="Who or what holds it; for a reviewer, the person (e.g. an email address).",
        ),
    ] = "",
    groups: Annotated[
        str,
        typer.Option(
            "--groups",
            help="For a reviewer or admin key: the reviewer groups it acts for, comma-separated.",
        ),
    ] = "",
) -> None:
    """Create an API key and print its secret, once; only a hash is stored."""
    store = open_writing(target(db, store_url), must_exist=False)
    try:
        key_id, secret = KeyRing(store, system_clock).create(
            role, agent=agent, label=label, groups=groups.split(",") if groups else ()
        )
    except RequestInvalid as exc:
        err.print(f"error: {exc.message}")
        raise typer.Exit(2) from None
    finally:
        store.close()
    err.print(f"created {role} key {key_id}" + (f" for agent {agent}" if agent else ""))
    err.print("the secret follows; it is shown once and cannot be recovered:")
    print(secret)


@keys_app.command("list")
def keys_list(
    db: DbOption = None,
    store_url: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON.")] = False,
) -> None:
    """List API keys (never their secrets); the ledger is only read."""
    store = open_reading(target(db, store_url))
    try:
        rows = KeyRing(store, system_clock).list()
    finally:
        store.close()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table()
    for col in ("key", "role", "agent", "label", "groups", "created", "revoked"):
        # Ids are copied into other commands: never wrap them; times may fold.
        table.add_column(col, no_wrap=col in ("key", "agent", "role"))
    for r in rows:
        table.add_row(
            r["key_id"],
            r["role"],
            r.get("agent") or "",
            r.get("label") or "",
            ", ".join(json.loads(r["groups"])) if r.get("groups") else "",
            str(r.get("created_at") or ""),
            str(r.get("revoked_at") or ""),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id, as `keys list` shows it.")],
    db: DbOption = None,
    store_url: StoreOption = None,
) -> None:
    """Revoke an API key; recorded in the ledger (exit 1 if no such active key)."""
    store = open_writing(target(db, store_url))
    try:
        KeyRing(store, system_clock).revoke(key_id, by="cli")
    except NotFound as exc:
        err.print(f"error: {exc.message}")
        raise typer.Exit(1) from None
    finally:
        store.close()
    out.print(f"revoked {key_id}")
