"""`charter serve` and `charter migrate`: running the HTTP API and preparing its store.

`serve` checks every option before it starts anything (a bad `--workers`, log format or
telemetry setting exits 2 with what was wrong), then hands over to `charter.server.serve`,
which is imported only here so every other command starts fast.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Annotated

import typer

from charter._cli_store import DbOption, StoreOption, err, load_policy, out, shown, target
from charter.errors import CharterError
from charter.store import migrate_store

__all__ = ["LedgerWriterChoice", "migrate_command", "serve_command"]


class LedgerWriterChoice(enum.StrEnum):
    """Where `charter serve` commits ledger appends."""

    process = "process"
    thread = "thread"


def migrate_command(db: DbOption = None, store_url: StoreOption = None) -> None:
    """Create or upgrade a store's schema to this Charter's (PostgreSQL needs it first)."""
    where = target(db, store_url)
    try:
        before, after = migrate_store(where)
    except CharterError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    if before == after:
        out.print(f"{shown(where)}: schema already at revision {after}")
    elif before is None:
        out.print(f"{shown(where)}: schema created at revision {after}")
    else:
        out.print(f"{shown(where)}: schema upgraded from revision {before} to {after}")


def _workers(value: str) -> int:
    """`--workers`: a count of processes, or `auto` (0: one per core); else exit 2."""
    if value.strip().lower() == "auto":
        return 0
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        err.print(
            f"error: --workers `{value}` must be a number of processes, or `auto` (one per core)",
            markup=False,
        )
        raise typer.Exit(2)
    return count


def serve_command(
    policy: Annotated[Path, typer.Option("--policy", help="The policy bundle folder.")],
    db: DbOption = None,
    store_url: StoreOption = None,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="The TCP port (0: any free one).")
    ] = 8470,
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            metavar="N|auto",
            help="Processes serving the API: a number, or `auto` (one per CPU core);"
            " more than one needs a PostgreSQL --store.",
        ),
    ] = "1",
    max_body: Annotated[
        int, typer.Option("--max-body", help="The largest request body, in bytes.")
    ] = 1024 * 1024,
    max_pending: Annotated[
        int,
        typer.Option(
            "--max-pending",
            min=1,
            help="Approvals one agent may have pending; beyond it requests are refused (429).",
        ),
    ] = 100,
    idempotency_ttl: Annotated[
        int,
        typer.Option(
            "--idempotency-ttl",
            min=60,
            help="Seconds an idempotency key is kept; the same key later decides anew.",
        ),
    ] = 86_400,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="The address reviewers reach the server at, for links in notifications.",
        ),
    ] = None,
    ledger_writer: Annotated[
        LedgerWriterChoice,
        typer.Option(
            "--ledger-writer",
            help="Where ledger appends are committed: a child process (fastest) or a thread.",
        ),
    ] = LedgerWriterChoice.process,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            metavar="json|console",
            show_default=False,
            help="Log lines as JSON objects or for a terminal (env CHARTER_LOG_FORMAT;"
            " default console).",
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            show_default=False,
            help="One log line per HTTP request (default: on with JSON logs).",
        ),
    ] = None,
    otel: Annotated[
        bool | None,
        typer.Option(
            "--otel/--no-otel",
            show_default=False,
            help="OpenTelemetry traces, exported as the OTEL_* variables say (default: on"
            " when OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set); needs"
            " charter-governance[otel].",
        ),
    ] = None,
    monitors: Annotated[
        bool,
        typer.Option(
            "--monitors/--no-monitors",
            help="Follow the ledger into the monitors and judge the bundle's alert and"
            " autonomy rules (one process per store judges); off: figures only when asked.",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API and the reviewer UI until interrupted (SIGTERM drains first)."""
    from charter.server import serve  # noqa: PLC0415 - keeps every other command's start fast
    from charter.telemetry import TracingSettings, resolve_log_format  # noqa: PLC0415

    try:
        logs = resolve_log_format(log_format)
        tracing = TracingSettings.resolve(otel)
    except CharterError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    processes = _workers(workers)
    bundle = load_policy(policy)
    where = target(db, store_url, default=Path("charter.db"))
    try:
        serve(
            bundle,
            where,
            host=host,
            port=port,
            workers=processes,
            max_body=max_body,
            max_pending=max_pending,
            idempotency_ttl=idempotency_ttl,
            public_url=public_url,
            ledger_writer=ledger_writer.value,
            say=err.print,
            log_format=logs,
            access_log=access_log,
            tracing=tracing,
            monitors=monitors,
        )
    except CharterError as exc:
        if logs == "json":  # every line on standard error is a JSON object, this one too
            logging.getLogger("charter.serve").error(exc.message, extra={"code": exc.code})
        else:  # not markup: a message may hold brackets (`charter-governance[otel]`)
            err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
