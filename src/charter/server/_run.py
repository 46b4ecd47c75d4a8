"""Running the API under uvicorn: one worker, the gateway opened and closed around it."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import uvicorn

from charter.errors import CannotListen
from charter.policy import Bundle
from charter.server._app import create_app
from charter.server._body import DEFAULT_MAX_BODY
from charter.service import Charter, WebhookNotifier
from charter.store import is_postgres

__all__ = ["NO_KEYS_HELP", "SWITCH_INTERVAL", "serve"]

#: The interpreter's thread switch interval `serve` sets, in seconds (CPython: 0.005).
SWITCH_INTERVAL = 0.0005

NO_KEYS_HELP = (
    "no API keys exist in {db}: every request will be refused (401) until one does.\n"
    "Create the first admin key with:\n"
    "    charter keys create --role admin --db {db}\n"
    "and agent keys with:\n"
    "    charter keys create --role agent --agent AGENT_ID --db {db}"
)


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


def serve(
    policy: str | Path | Bundle,
    db: str | Path = "charter.db",
    *,
    host: str = "127.0.0.1",
    port: int = 8470,
    max_body: int = DEFAULT_MAX_BODY,
    log_level: str = "info",
    max_pending: int = 100,
    idempotency_ttl: int = 86_400,
    public_url: str | None = None,
    ledger_writer: Literal["process", "thread"] = "process",
    say: Callable[[str], None] = print,
) -> None:
    """Serve the API until interrupted, on one uvicorn worker.

    One worker because the SQLite ledger has one writer: the group-commit writer of
    this process. The address is bound before anything is opened or announced, so a
    port in use fails at once, with nothing started. A store with no keys is served
    anyway, refusing every request, and `say` explains how to create the first key;
    Charter never runs open. On SIGTERM (or Ctrl-C) uvicorn
    drains, then the gateway closes (the ledger writer commits what it holds and stops)
    before the process ends.

    Args:
        policy: the policy bundle folder, or a loaded bundle.
        db: the SQLite ledger file; created when missing.
        host: the interface to listen on.
        port: the TCP port (0 for any free one; the notice names the one bound).
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
        say: where the startup notice goes.

    Raises:
        CannotListen: `host:port` cannot be bound (in use, or not this machine's).
    """
    # The ledger writer thread needs the GIL back briefly after each SQLite call; with
    # CPython's default 5 ms switch interval it waits behind a busy event loop, and its
    # commits (which every answer awaits) stretch to milliseconds. 0.5 ms measured 5-8%
    # more decisions/s at 32 connections (bench/bench_server.py). This is the server
    # process's own setting; embedding Charter leaves the interpreter's alone.
    sys.setswitchinterval(SWITCH_INTERVAL)
    if isinstance(db, str) and is_postgres(db):
        # PostgreSQL sequences appends itself and its driver waits without the GIL: a
        # thread commits them, and the child process (a SQLite file's) does not apply.
        ledger_writer = "thread"
    listener = _bind(host, port)
    with (
        listener,
        _closing_on_sigterm(),
        Charter(
            policy,
            db,
            max_pending=max_pending,
            idempotency_ttl=idempotency_ttl,
            writer=ledger_writer,
        ) as charter,
    ):
        if not charter.has_keys():
            say(NO_KEYS_HELP.format(db=db))
        app = create_app(charter, max_body=max_body)
        bound = listener.getsockname()[1]  # the real port, when 0 asked for any free one
        listening = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        address = public_url or listening
        notifier = WebhookNotifier(
            charter.webhooks,
            charter.record_event,
            base_url=address,
        )
        charter.notifier = notifier
        say(f"serving the API on {listening} (Ctrl-C to stop)")
        say(f"reviewer UI: {address}/ui/ (sign in with a reviewer key)")
        # Deadlines that fell due while the server was down fire now, then as they come.
        charter.fire_due()
        charter.start_timers()
        # Halts, autonomy changes and revocations made by other processes: within a second.
        charter.start_following()
        config = uvicorn.Config(
            app,
            host=host,
            port=bound,
            workers=1,
            log_level=log_level,
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )
        try:
            uvicorn.Server(config).run(sockets=[listener])
        finally:
            charter.stop_timers()
            charter.stop_following()
            notifier.close(timeout=5)
