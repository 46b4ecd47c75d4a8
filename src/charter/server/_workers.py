"""`charter serve --workers N`: one supervisor and N worker processes on one PostgreSQL ledger.

Several Charter processes on one PostgreSQL database already behave as one ledger (an
advisory lock sequences appends; set-once triggers guard redemptions and outcomes; each
follows the halts and changes the others append). This module runs N of them behind
one address, so one host uses all its cores:

- **One socket.** `serve` binds the address before anything starts; the supervisor hands
  that socket to every worker, and the kernel gives each new connection to whichever
  worker accepts it first. Nothing is re-bound, so port 0 and the "cannot listen" error
  work as with one process.
- **Checked once, then started.** The supervisor opens the gateway once itself and closes
  it: an unreachable store or a schema to migrate fails here with the error one process
  gives, the bundle is deployed once (workers opening together would each record it),
  and a store without keys is said once. Then the workers start, each in a fresh
  interpreter (multiprocessing's `spawn`: nothing is forked from a process with
  threads), each with its own gateway, and the startup notice is said once they all are
  ready.
- **A worker that dies is replaced.** One that ends while serving (killed, crashed) is
  said with its pid and how it ended, and a new one takes its place. One that ends
  before it is ready stops everything instead (`CharterError` code `worker_failed`,
  exit 2 from the command line): a replacement would fail the same way, and a service
  manager restarting the whole server is the better loop.
- **SIGTERM or Ctrl-C stops them all.** The supervisor sends SIGTERM to every worker;
  each drains its connections, stops its timers and follower and closes its gateway (the
  ledger writer commits what it holds). Once the last one has ended, the supervisor ends
  by the signal it got, as a one-process server does. A second signal tells the workers
  to stop without waiting for open connections (their gateways still close).
- **No orphans.** A worker whose supervisor is gone (killed with SIGKILL) sees its pipe
  to it close and stops itself as on SIGTERM. Workers run in process groups of their
  own, so a signal sent to the supervisor's group (Ctrl-C) reaches them only through it;
  a service manager that signals every process of the service (systemd's default) gives
  each worker the SIGTERM the supervisor would, to the same effect.

Approval timers run in every worker, as they would in every replica of a cluster.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess

from charter.errors import CharterError
from charter.policy import Bundle, bundle_from_content
from charter.server._run import Options, announce, no_keys_help, serve_here
from charter.service import Charter

__all__ = ["supervise"]

_SPAWN = multiprocessing.get_context("spawn")
_READY = "ready"
_STOPPING = (signal.SIGTERM, signal.SIGINT)


def _ending(exitcode: int | None) -> str:
    """How a process ended, in words."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was ended by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was ended by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _stop_with_supervisor(channel: Connection) -> None:
    """Stop this worker as on SIGTERM once the supervisor's end of `channel` closes."""
    with contextlib.suppress(EOFError, OSError):
        channel.recv()
    os.kill(os.getpid(), signal.SIGTERM)


def _work(
    content: bytes, version: str, listener: socket.socket, options: Options, channel: Connection
) -> None:
    """A worker process: serve `listener` with a gateway of its own until told to stop.

    The bundle arrives as its canonical content, so a replacement started later serves
    exactly the policy the others serve, whatever the folder holds by then.
    """
    # A process group of its own: Ctrl-C at a terminal reaches the supervisor alone, which
    # asks each worker once (SIGTERM) rather than each getting SIGINT and SIGTERM at once.
    os.setpgrp()
    bundle = bundle_from_content(json.loads(content))
    if bundle.version != version:
        raise CharterError(f"the bundle rebuilt in a worker is `{bundle.version}`, not `{version}`")

    def ready() -> None:
        channel.send(_READY)
        watch = threading.Thread(
            target=_stop_with_supervisor, args=(channel,), name="charter-supervisor", daemon=True
        )
        watch.start()

    try:
        with listener:
            serve_here(bundle, listener, options, say=None, ready=ready)
    except KeyboardInterrupt:
        pass  # a second signal to the supervisor: uvicorn stopped at once, the gateway closed


@dataclass
class _Worker:
    """One worker process and the supervisor's end of its pipe."""

    slot: int
    process: SpawnProcess
    channel: Connection  # carries "ready" once, then closes when either side ends
    ready: bool = False
    ending: bool = False  # its end of the pipe closed: only its sentinel is still to come

    def __str__(self) -> str:
        return f"worker {self.slot} (pid {self.process.pid})"


class _Supervisor:
    """Starts the workers, replaces those that die, and stops them all on a signal."""

    def __init__(
        self,
        bundle: Bundle,
        listener: socket.socket,
        options: Options,
        count: int,
        say: Callable[[str], None],
    ) -> None:
        self._content = bundle.canonical_content()
        self._version = bundle.version
        self._listener = listener
        self._options = options
        self._count = count
        self._say = say
        self._workers: dict[int, _Worker] = {}
        self._signals: list[int] = []
        # The signal handler only notes the signal and wakes the loop through this pair.
        self._wake, self._waker = socket.socketpair()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")

    def run(self) -> int | None:
        """Serve until a signal stops the workers, and return that signal."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOPPING}
        try:
            for slot in range(1, self._count + 1):
                self._start(slot)
            self._watch()
        finally:
            try:
                self._stop_all()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, signal.SIG_DFL if handler is None else handler)
                self._wake.close()
                self._waker.close()
        return self._signals[0] if self._signals else None

    def _start(self, slot: int) -> None:
        ours, theirs = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=_work,
            args=(self._content, self._version, self._listener, self._options, theirs),
            name=f"charter-worker-{slot}",
        )
        process.start()
        theirs.close()  # the worker holds it now: ours reads EOF once the worker ends
        self._workers[slot] = _Worker(slot, process, ours)

    def _watch(self) -> None:
        """Wait for readiness, deaths and signals until a signal asks to stop."""
        announced = False
        while not self._signals:
            workers = list(self._workers.values())
            waiting: list[Connection | socket.socket | int] = [self._wake]
            waiting += [w.process.sentinel for w in workers]
            waiting += [w.channel for w in workers if not (w.ready or w.ending)]
            wait(waiting)
            self._drain_wake()
            if self._signals:
                return
            for worker in workers:
                if not worker.ready:
                    worker.ready = self._said_ready(worker)
                    if worker.ready and announced:
                        self._say(f"{worker} is serving")
                if worker.process.exitcode is None:
                    continue
                worker.channel.close()
                ending = _ending(worker.process.exitcode)
                if not worker.ready:
                    raise CharterError(
                        f"{worker} {ending} before it served (its error is above);"
                        " the other workers are stopped",
                        code="worker_failed",
                    )
                self._say(f"{worker} {ending} while serving; starting another in its place")
                self._start(worker.slot)
            if not announced and all(w.ready for w in self._workers.values()):
                announce(self._say, self._options, self._port(), self._count)
                announced = True

    @staticmethod
    def _said_ready(worker: _Worker) -> bool:
        if worker.ending:
            return False
        try:
            return worker.channel.poll() and worker.channel.recv() == _READY
        except (EOFError, OSError):
            worker.ending = True  # it is ending: its sentinel will say how
            return False

    def _port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _drain_wake(self) -> None:
        self._wake.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self._wake.recv(64):
                pass

    def _signal_live(self, signum: int) -> list[_Worker]:
        live = [w for w in self._workers.values() if w.process.exitcode is None]
        for worker in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid or 0, signum)
        return live

    def _stop_all(self) -> None:
        """SIGTERM every worker and wait for each to close its gateway and end."""
        asked = len(self._signals)
        live = stopping = self._signal_live(signal.SIGTERM)
        # No worker starts from here on. While this copy of the socket stays open the
        # kernel would still queue connections no one is left to accept.
        self._listener.close()
        if live:
            self._say(f"stopping {len(live)} worker(s): each finishes the requests under way")
        forced = False
        while live:
            wait([self._wake, *(w.process.sentinel for w in live)])
            self._drain_wake()
            if len(self._signals) > asked and not forced:
                # uvicorn takes a second SIGINT as "stop now, without waiting".
                self._signal_live(signal.SIGINT)
                forced = True
            live = [w for w in live if w.process.exitcode is None]
        for worker in self._workers.values():
            worker.process.join()
            worker.channel.close()
        for worker in stopping:
            if worker.process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                self._say(f"{worker} {_ending(worker.process.exitcode)} while stopping")


def supervise(
    bundle: Bundle,
    listener: socket.socket,
    options: Options,
    workers: int,
    *,
    say: Callable[[str], None],
) -> None:
    """Serve `listener` from `workers` processes until SIGTERM or Ctrl-C (see the module).

    Once every worker has ended, the signal that stopped them is raised again here
    under the handler in place before, so the process ends by it (SIGINT as
    KeyboardInterrupt), as a one-process server does.

    Raises:
        CharterError: the store cannot be opened (as for one process), or a worker
            ended before it was ready (code `worker_failed`).
    """
    with Charter(
        bundle,
        options.db,
        max_pending=options.max_pending,
        idempotency_ttl=options.idempotency_ttl,
        writer="thread",
    ) as charter:
        if not charter.has_keys():
            say(no_keys_help(options.db))
    stopped_by = _Supervisor(bundle, listener, options, workers, say).run()
    if stopped_by is not None:
        signal.raise_signal(stopped_by)
