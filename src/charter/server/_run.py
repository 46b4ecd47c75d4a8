"""Running the API under uvicorn: in this process, or in N worker processes.

`serve` binds the address, then either serves it here (one uvicorn worker, the gateway
opened and closed around it) or, with `workers > 1` on PostgreSQL, hands the bound socket
to the supervisor in `_workers`, whose workers each serve it through `serve_here`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn

from charter.errors import CannotListen, CharterError
from charter.policy import Bundle, load_bundle
from charter.server._app import create_app
from charter.server._body import DEFAULT_MAX_BODY
from charter.service import Charter, WebhookNotifier
from charter.store import is_postgres
from charter.telemetry import (
    LogFormat,
    Telemetry,
    TracingSettings,
    configure_logging,
    start_tracing,
)
from charter.telemetry._logs import notice

__all__ = [
    "NO_KEYS_HELP",
    "SWITCH_INTERVAL",
    "Options",
    "announce",
    "no_keys_help",
    "serve",
    "serve_here",
]

#: The interpreter's thread switch interval `serve` sets, in seconds (CPython: 0.005).
SWITCH_INTERVAL = 0.0005

NO_KEYS_HELP = (
    "no API keys exist in {db}: every request will be refused (401) until one does.\n"
    "Create the first admin key with:\n"
    "    charter keys create --role admin {option} {db}\n"
    "and agent keys with:\n"
    "    charter keys create --role agent --agent AGENT_ID {option} {db}"
)

_ONE_WRITER = (
    "{workers} workers need a PostgreSQL store: a SQLite ledger has one writer, so one process"
    " serves `{db}`; serve it with one worker, or serve a PostgreSQL database with several"
    " (--store postgresql://USER@HOST/DB, after `charter migrate --store URL`)"
)


@dataclass(frozen=True, slots=True)
class Options:
    """How each serving process opens its gateway and runs uvicorn.

    Plain values only: a supervisor sends them to its worker processes as they are.
    """

    db: str | Path
    host: str
    max_body: int
    log_level: str
    max_pending: int
    idempotency_ttl: int
    public_url: str | None
    ledger_writer: Literal["process", "thread"]
    #: `json` or `console` lines through structlog; None leaves logging to uvicorn.
    log_format: LogFormat | None = None
    #: One `charter.access` line per HTTP request.
    access_log: bool = False
    #: How to trace; None: no spans, and OpenTelemetry's SDK is never imported.
    tracing: TracingSettings | None = None
    #: Follow the ledger into the monitors and judge the alert and autonomy rules.
    monitors: bool = True

    def listening(self, port: int) -> str:
        """The address served, as a URL."""
        return f"http://[{self.host}]:{port}" if ":" in self.host else f"http://{self.host}:{port}"

    def address(self, port: int) -> str:
        """The address reviewers reach, for links in notifications."""
        return self.public_url or self.listening(port)


class _Server(uvicorn.Server):
    """uvicorn's server, calling `ready` once it listens."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then say so."""
        await super().startup(sockets=sockets)
        if self.started:
            self._ready()


class _Terminated(BaseException):
    """SIGTERM, raised once uvicorn has drained, so the gateway closes on the way out."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _closing_on_sigterm() -> Iterator[None]:
    """Let SIGTERM unwind through the block (closing what it opened), then take effect.

    uvicorn drains on SIGTERM and then raises it again under the handler it found: the
    default one would end the process there, before the gateway stopped its ledger
    writer. With this handler the signal unwinds the block instead, and once the block
    has closed everything it is raised once more under the previous handler, so the
    process ends the way a service manager expects.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; uvicorn does not take them here either
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    terminated = False
    try:
        yield
    except _Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if terminated:
        signal.raise_signal(signal.SIGTERM)


def _bind(host: str, port: int) -> socket.socket:
    """Bind `host:port` before anything is opened or announced.

    The socket is bound, not yet listening: a port in use fails here, while a client
    that connects early is refused rather than left waiting on a server still opening
    its ledger. uvicorn listens on it once the application is ready.

    Raises:
        CannotListen: the port is in use, or the host is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CannotListen(f"cannot listen on {host}:{port}: {reason.lower()}") from exc
    return sock


def no_keys_help(db: str | Path) -> str:
    """`NO_KEYS_HELP` for `db`: a file as `--db PATH`, a URL as `--store URL` (no password)."""
    if isinstance(db, str) and is_postgres(db):
        shown = re.sub(r"^([^:]+://[^:/@]*):[^@/]*@", r"\1:***@", db)
        return NO_KEYS_HELP.format(option="--store", db=shown)
    return NO_KEYS_HELP.format(option="--db", db=db)


def announce(say: Callable[[str], None], options: Options, port: int, workers: int) -> None:
    """Say where the API and the reviewer UI are served, and by how many processes."""
    listening = options.listening(port)
    by = f" by {workers} worker processes" if workers > 1 else ""
    say(f"serving the API on {listening}{by} (Ctrl-C to stop)")
    say(f"reviewer UI: {options.address(port)}/ui/ (sign in with a reviewer key)")


def serve_here(
    bundle: Bundle,
    listener: socket.socket,
    options: Options,
    *,
    say: Callable[[str], None] | None,
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Open a gateway, serve `listener` with it until SIGTERM or Ctrl-C, then close it.

    What one server process does, alone or as one of a supervisor's workers. On SIGTERM
    uvicorn drains, then the timers and the follower stop and the gateway closes (its
    ledger writer commits what it holds) before the signal ends the process.

    Args:
        bundle: the policy to serve.
        listener: the bound socket; uvicorn listens on it.
        options: how to open the gateway and run uvicorn.
        say: where the startup notice goes; None for a worker, whose supervisor says it.
        ready: called once uvicorn listens (from its event loop: it must not block).
    """
    # The ledger writer thread needs the GIL back briefly after each store call; with
    # CPython's default 5 ms switch interval it waits behind a busy event loop, and its
    # commits (which every answer awaits) stretch to milliseconds. 0.5 ms measured 5-8%
    # more decisions/s at 32 connections (bench/bench_server.py). This is the server
    # process's own setting; embedding Charter leaves the interpreter's alone.
    sys.setswitchinterval(SWITCH_INTERVAL)
    if options.log_format is not None:  # again in a worker: it is a process of its own
        configure_logging(options.log_format, level=options.log_level)
    tracing = None if options.tracing is None else start_tracing(options.tracing)
    telemetry = Telemetry(
        tracing=tracing,
        # Console lines are for a person at a terminal: the request path binds nothing for
        # them (it costs a few microseconds a request) unless access lines are asked for.
        log_context=options.log_format == "json" or options.access_log,
        access_log=options.access_log,
    )
    try:
        _serve_charter(bundle, listener, options, telemetry, say=say, ready=ready)
    finally:
        if tracing is not None:
            tracing.shutdown()  # export what is still batched


def _serve_charter(
    bundle: Bundle,
    listener: socket.socket,
    options: Options,
    telemetry: Telemetry,
    *,
    say: Callable[[str], None] | None,
    ready: Callable[[], None],
) -> None:
    """`serve_here` once logging and tracing are set up."""
    with (
        _closing_on_sigterm(),
        Charter(
            bundle,
            options.db,
            max_pending=options.max_pending,
            idempotency_ttl=options.idempotency_ttl,
            writer=options.ledger_writer,
        ) as charter,
    ):
        if say is not None and not charter.has_keys():
            say(no_keys_help(options.db))
        app = create_app(charter, max_body=options.max_body, telemetry=telemetry)
        bound = listener.getsockname()[1]  # the real port, when 0 asked for any free one
        notifier = WebhookNotifier(
            charter.webhooks,
            charter.record_event,
            base_url=options.address(bound),
        )
        charter.notifier = notifier
        if say is not None:
            announce(say, options, bound, workers=1)
        # Deadlines that fell due while the server was down fire now, then as they come.
        charter.fire_due()
        charter.start_timers()
        # Halts, autonomy changes and revocations made by other processes: within a second.
        charter.start_following()
        # The figures, alerts and autonomy controller: judged by one process per ledger.
        if options.monitors:
            charter.start_monitors()
        config = uvicorn.Config(
            app,
            host=options.host,
            port=bound,
            workers=1,
            log_level=options.log_level,
            # Structured logs: uvicorn's lines reach the root logger's structlog handler
            # (`configure_logging`) instead of uvicorn's own formatters.
            log_config=None if options.log_format is not None else uvicorn.config.LOGGING_CONFIG,
            access_log=False,  # Charter writes its own (`charter.access`), with the ids
            server_header=False,
            proxy_headers=False,
        )
        try:
            _Server(config, ready).run(sockets=[listener])
        finally:
            charter.stop_timers()
            charter.stop_following()
            notifier.close(timeout=5)


def serve(
    policy: str | Path | Bundle,
    db: str | Path = "charter.db",
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    workers: int = 1,
    max_body: int = DEFAULT_MAX_BODY,
    log_level: str = "info",
    max_pending: int = 100,
    idempotency_ttl: int = 86_400,
    public_url: str | None = None,
    ledger_writer: Literal["process", "thread"] = "process",
    say: Callable[[str], None] = print,
    log_format: LogFormat | None = None,
    access_log: bool | None = None,
    tracing: TracingSettings | None = None,
    monitors: bool = True,
) -> None:
    """Serve the API until interrupted: in this process, or in `workers` processes.

    One worker by default, and always on SQLite, because a SQLite ledger has one
    writer: the group-commit writer of the one process serving it. On PostgreSQL
    `workers > 1` runs a supervisor here and that many worker processes, each with its
    own gateway on the same database and all accepting on the one listening socket
    (see `charter.server._workers` for how they are started, replaced and stopped);
    call it under `if __name__ == "__main__":`, as the workers start a fresh interpreter.

    The address is bound before anything is opened or announced, so a port in use
    fails at once, with nothing started. A store with no keys is served anyway,
    refusing every request, and `say` explains how to create the first key; Charter
    never runs open. On SIGTERM (or Ctrl-C) uvicorn drains, then each gateway closes
    (its ledger writer commits what it holds and stops) before the process ends, by
    SIGTERM, as a service manager expects.

    Args:
        policy: the policy bundle folder, or a loaded bundle.
        db: the SQLite ledger file (created when missing), or a PostgreSQL URL.
        host: the interface to listen on.
        port: the TCP port (0 for any free one; the notice names the one bound).
        workers: how many processes serve; 0 for one per CPU core. More than one
            needs PostgreSQL.
        max_body: the largest request body accepted, in bytes.
        log_level: uvicorn's log level.
        max_pending: how many approvals one agent may have pending (429 beyond it).
        idempotency_ttl: seconds an idempotency key is kept (a day by default).
        public_url: the server's address as reviewers reach it, for links in
            notifications (`http://HOST:PORT` when None).
        ledger_writer: `"process"` commits ledger appends in a child process, so the
            SQLite work never holds the event loop's GIL (the default; it needs a
            SQLite file); `"thread"` commits them from a thread of this process (always,
            on PostgreSQL).
        say: where the startup notice goes (and, with workers, their comings and goings);
            with JSON logs the notices are `info` lines of `charter.serve` instead.
        log_format: render every log line (Charter's, uvicorn's) with structlog, as
            `json` objects or `console` lines, with the request's ids bound; None leaves
            logging as it is and uvicorn's own formatters in place.
        access_log: one `charter.access` line per HTTP request; None: on with JSON logs.
        tracing: OpenTelemetry traces (`TracingSettings.resolve`); None: none.
        monitors: follow the ledger into the monitors every second and, when this
            process leads, judge the bundle's alert and autonomy rules. Off, the figures
            are still folded when asked for (`/v1/monitors`, the fleet page), but no
            alert fires and no agent is demoted from this process: for a process beside
            another one on the same store that judges.

    Raises:
        CannotListen: `host:port` cannot be bound (in use, or not this machine's).
        CharterError: `workers > 1` on a SQLite ledger (code `workers_need_postgres`),
            a worker process could not start (code `worker_failed`), or traces were
            asked for without the `otel` extra installed (code `telemetry_unavailable`).
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per core) or more, not {workers}")
    count = workers or os.cpu_count() or 1
    postgres = isinstance(db, str) and is_postgres(db)
    if count > 1 and not postgres:
        raise CharterError(_ONE_WRITER.format(workers=count, db=db), code="workers_need_postgres")
    if postgres:
        # PostgreSQL sequences appends itself and its driver waits without the GIL: a
        # thread commits them, and the child process (a SQLite file's) does not apply.
        ledger_writer = "thread"
    if log_format is not None:
        configure_logging(log_format, level=log_level)
        if log_format == "json":
            say = notice()
    if tracing is not None:
        tracing.check_installed()  # before anything is bound or opened
    bundle = policy if isinstance(policy, Bundle) else load_bundle(policy)
    options = Options(
        db=db,
        host=host,
        max_body=max_body,
        log_level=log_level,
        max_pending=max_pending,
        idempotency_ttl=idempotency_ttl,
        public_url=public_url,
        ledger_writer=ledger_writer,
        log_format=log_format,
        access_log=log_format == "json" if access_log is None else access_log,
        tracing=tracing,
        monitors=monitors,
    )
    listener = _bind(host, port)
    with listener:
        if count == 1:
            serve_here(bundle, listener, options, say=say)
        else:
            # Imported here: the supervisor builds on this module's `serve_here`.
            from charter.server._workers import supervise  # noqa: PLC0415

            supervise(bundle, listener, options, count, say=say)
