"""Group commit in a child process: the ledger writer without this process's GIL.

`GroupCommitWriter` is a thread, and a thread shares the interpreter lock with the event
loop that decides. Its SQLite work runs without the lock, but every step between two
SQLite calls must win the lock back from the loop: on a busy server the writer's hand-offs
cost the loop about a third of its decisions per second (`bench/bench_server.py`).
`ProcessCommitWriter` runs the same batching in a child process with its own interpreter,
and the loop's side of an append shrinks to pickling the event onto a pipe.

The protocol is private to this module and its own child: frames of a 4-byte big-endian
length and a pickle, on two pipes. The parent sends one frame per event, or one per group
of events that must commit together; the child encodes each event canonically (so a bad
payload fails only its own caller), commits whatever queued while it was flushing as one
transaction, and answers each batch with one frame of entries or errors. A reply only
leaves the child after its transaction committed durably, so an awaited entry is on disk.

Closing the request pipe is the stop signal: the child commits everything it has read,
answers, and exits. It does the same when the parent dies, however it dies (SIGKILL too):
the system closes the pipe, and, should a process the parent forked still hold it open,
the child hears of its parent's death itself (`charter.store._writer_child`).
If the child dies, every caller still waiting gets a `StoreError` (its event may or may
not have committed, as with any failed commit), and the next event starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import itertools
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeAlias

from charter.ledger import (
    EventError,
    LedgerEntry,
    NewEvent,
    PreparedEvent,
    check_event,
)
from charter.store._group import settle_waiters
from charter.store._port import IndexChange, LedgerStore, StoreError
from charter.store._sqlite import SQLiteStore

__all__ = ["ProcessCommitWriter"]

_log = logging.getLogger("charter.store")

_Waiter: TypeAlias = "Future[LedgerEntry] | asyncio.Future[LedgerEntry]"
# What travels to the child for one event: token, kind, time, payload (a dict, or the
# canonical text when already prepared), whether it is prepared, and the index change.
_Wire: TypeAlias = "tuple[int, str, str, Any, bool, tuple[Any, ...] | None]"
_HEADER = struct.Struct(">I")
_START_TIMEOUT = 120.0  # seconds for the child to open the store (a busy lock waits 30 s)
_FALLBACK_AFTER = 0.01  # seconds a loop may leave answers unread before the thread reads
_PIPE_SIZE = 1 << 20  # bytes; the default 64 KiB fills in ~10 ms at 5,000 decisions/s
_STOP_TIMEOUT = 120.0  # seconds for the child to commit what is queued and exit


def _write_frame(fd: int, data: bytes) -> None:
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Frames:
    """Frames from a non-blocking pipe: whatever has arrived, parsed whole, in order."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buffer = bytearray()
        self.ended = False  # the other side closed its end and everything was read

    def fill(self) -> None:
        """Read everything the pipe holds now, without waiting."""
        while not self.ended:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                self.ended = True
            self._buffer += chunk

    def take(self, limit: int = 1 << 30) -> list[Any]:
        """The whole frames read so far, unpickled (lists count as their length)."""
        items: list[Any] = []
        offset, size, buffer = 0, 0, self._buffer
        while size < limit and len(buffer) - offset >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + length
            if len(buffer) < end:
                break
            # Only our own parent or child writes these pipes, which nobody else holds.
            item = pickle.loads(buffer[offset + _HEADER.size : end])  # noqa: S301
            items.append(item)
            size += len(item) if isinstance(item, list) else 1
            offset = end
        del buffer[:offset]
        return items


def _index_wire(index: IndexChange | None) -> tuple[Any, ...] | None:
    if index is None:
        return None
    return (index.decision_id, dict(index.values), index.insert, index.seq_column, index.approval)


def _store_url(store: LedgerStore | str | os.PathLike[str]) -> str:
    """The database URL a child process opens for `store`."""
    if isinstance(store, str | os.PathLike):
        return f"sqlite:///{Path(store).resolve()}" if "://" not in str(store) else str(store)
    engine = getattr(store, "engine", None)
    url = getattr(engine, "url", None)
    if url is None or url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise StoreError("a ledger writer process needs a SQLite ledger in a file")
    return f"sqlite:///{Path(url.database).resolve()}"


class _Child:
    """One running writer process: its pipes, who waits on it, and who reads its answers.

    Answers are read by a thread of this process, or, once an event loop has submitted
    to it, by that loop itself (`attach`): the loop then reads them when the pipe is
    readable, between its other callbacks, instead of a thread that must win the GIL
    from the loop for every batch. The thread stays as a fallback that steps in when the
    loop has not read for a while (it is blocked, or gone), so blocking callers are never
    left waiting on a loop that no longer runs.
    """

    def __init__(self, url: str, max_batch: int) -> None:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        for fd in (requests_write, replies_write):  # room for a burst while a commit flushes
            with contextlib.suppress(OSError, AttributeError):  # Linux only; a hint
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this code
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "charter.store._writer_main",
                    url,
                    str(requests_read),
                    str(replies_write),
                    str(max_batch),
                    str(os.getpid()),  # the child exits when this process is gone
                ],
                pass_fds=(requests_read, replies_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                # Signals for the server's process group (Ctrl-C, a service manager's
                # SIGTERM) must not stop the writer before the server drains: the writer
                # stops when the server closes its pipe.
                start_new_session=True,
            )
        finally:
            os.close(requests_read)
            os.close(replies_write)
        self.requests = requests_write
        self.replies = _Frames(replies_read)
        self.waiting: dict[int, _Waiter] = {}
        self.failure: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # one reader at a time, loop or thread
        self._read_at = time.monotonic()
        self._wake_read, self._wake_write = os.pipe()
        self._wake_lock = threading.Lock()  # a closed descriptor's number may be reused
        self._wake_closed = False
        self._sleeping = False  # the thread waits for `_wake` alone, with no timeout
        self.reader = threading.Thread(
            target=self._watch, name="charter-ledger-replies", daemon=True
        )
        hello = self._hello()
        if hello is not None:
            self.stop()
            os.close(self.replies.fd)
            self._close_wake()
            raise StoreError(f"the ledger writer process did not start: {hello}")

    def _hello(self) -> str | None:
        """Wait for the child to open the store: None when it did, else why it did not."""
        deadline = time.monotonic() + _START_TIMEOUT
        while not (hello := self.replies.take(1)) and not self.replies.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                self.process.kill()
                return f"no answer within {_START_TIMEOUT:.0f} s"
            select.select([self.replies.fd], [], [], left)
            self.replies.fill()
        if not hello:
            return f"it exited with code {self.process.wait()}"
        kind, detail = hello[0]
        return None if kind == "ready" else str(detail)

    def read(self) -> None:
        """Resolve the waiters of every answer that has arrived; at the end, fail the rest."""
        with self._lock:
            if self.failure is not None:
                return
            self._read_at = time.monotonic()
            self.replies.fill()
            results: list[tuple[_Waiter, LedgerEntry | BaseException]] = []
            for answers in self.replies.take():
                for token, answer in answers:
                    waiter = self.waiting.pop(token, None)
                    if waiter is not None:
                        entry = LedgerEntry(*answer) if isinstance(answer, tuple) else answer
                        results.append((waiter, entry))
            settle_waiters(results)
            if self.replies.ended:
                self._end()

    def _end(self) -> None:
        """The child exited: every caller still waiting hears so; the pipe is let go."""
        code = self.process.wait()
        self.failure = f"the ledger writer process exited with code {code}"
        left = list(self.waiting.values())
        self.waiting.clear()
        if left:
            _log.error("%s with %d appends unanswered", self.failure, len(left))
            error = StoreError(f"{self.failure}; this append may or may not have committed")
            settle_waiters([(waiter, error) for waiter in left])
        loop = self.loop
        if loop is None or loop.is_closed():
            os.close(self.replies.fd)
        else:  # the loop's selector still watches it: let go of it there first
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release, loop)
        self._wake()

    def _wake(self) -> None:
        """Wake the thread from its `select`, unless it is already gone."""
        with self._wake_lock:
            if not self._wake_closed:
                os.write(self._wake_write, b"x")

    def _close_wake(self) -> None:
        with self._wake_lock:
            if not self._wake_closed:
                self._wake_closed = True
                os.close(self._wake_read)
                os.close(self._wake_write)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.replies.fd)
        os.close(self.replies.fd)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` (the running one, on its own thread) read the answers from now on."""
        with self._lock:
            if self.failure is not None or self.loop is loop:
                return
            self.loop = loop
            loop.add_reader(self.replies.fd, self.read)
        self._wake()  # the thread turns to its fallback watch

    def _watch(self) -> None:
        """The thread: read the answers, or, once a loop reads them, cover for it."""
        while self.failure is None:
            loop = self.loop
            if loop is None or loop.is_closed():
                ready, _, _ = select.select([self.replies.fd, self._wake_read], [], [])
            else:
                # A loop reads them. Only a blocking caller could be left waiting if that
                # loop stops: while one waits, wake now and then and step in if the loop
                # has stopped reading. Otherwise sleep until woken, so as not to take the
                # GIL from the loop a hundred times a second for nothing. (The flag goes
                # up first: a blocking caller registered after the check then wakes us.)
                self._sleeping = True
                if any(isinstance(w, Future) for w in list(self.waiting.values())):
                    self._sleeping = False
                    ready, _, _ = select.select([self._wake_read], [], [], _FALLBACK_AFTER)
                    late = time.monotonic() - self._read_at > _FALLBACK_AFTER
                    if not ready and late and select.select([self.replies.fd], [], [], 0)[0]:
                        ready = [self.replies.fd]
                else:
                    ready, _, _ = select.select([self._wake_read], [], [])
                    self._sleeping = False
            if self._wake_read in ready:
                os.read(self._wake_read, 64)
            if self.replies.fd in ready:
                self.read()
        self._close_wake()

    def expect_blocking(self) -> None:
        """A blocking caller waits now: make sure the thread watches over its answer."""
        if self._sleeping:
            self._wake()

    def send(self, frames: bytes) -> None:
        """Write whole frames (headers included) to the child."""
        view = memoryview(frames)
        while view:
            view = view[os.write(self.requests, view) :]

    def stop(self) -> None:
        """Close the request pipe and wait for the child to commit what it has and exit."""
        with contextlib.suppress(OSError):
            os.close(self.requests)
        try:
            self.process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _log.error("the ledger writer process did not stop in time; killing it")
            self.process.kill()
            self.process.wait()
        if self.reader.is_alive():
            self.read()  # the last answers, whoever was meant to read them
            self.reader.join()


@dataclasses.dataclass(slots=True)
class _Outgoing:
    """One frame for the child: an event, or a group that commits together."""

    frame: bytes  # length header included
    wires: list[_Wire]
    waiters: list[_Waiter]
    events: list[NewEvent | PreparedEvent]
    indexes: list[IndexChange | None]


class ProcessCommitWriter:
    """A `LedgerWriter` whose batching and SQLite work run in a child process.

    Same contract as `GroupCommitWriter`: events from any thread or event loop, groups
    that share a transaction, futures that resolve once the entry is durable. Two
    differences: a thread future cannot be cancelled once submitted (its event is already
    on its way), and a payload canonical JSON cannot encode fails through the future
    rather than from `submit` (the kind, time and payload type are still checked there).

    Events submitted on an event loop leave on the loop's next turn, all those of one
    turn in one write. When that turn brought a single event (or group) and the child
    has nothing in hand, the server is idle: the event commits right there, on the
    loop's thread, through `store`, rather than waking a process to do it (a fifth of a
    lone redeem's time over HTTP). It never waits for another connection's lock to do
    so. A busy server always has something in flight or several events per turn, so
    its commits stay batched in the child. Either way the ledger's order is the order
    of the submissions.

    Args:
        store: the SQLite store (or its file) the child opens for itself; a store object
            also commits idle events inline.
        max_batch: the most events the child commits in one transaction.
    """

    def __init__(
        self, store: LedgerStore | str | os.PathLike[str], *, max_batch: int = 512
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"the batch size `{max_batch}` must be at least 1")
        self._url = _store_url(store)
        # Lone events commit inline through this store's own connection.
        self._store = store if isinstance(store, SQLiteStore) else None
        self._max_batch = max_batch
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()  # the pipe, the queue and the child's life
        self._closed = False
        self._queue: list[_Outgoing] = []  # event-loop submissions not yet sent
        self._flushes: set[asyncio.AbstractEventLoop] = set()  # loops due to send them
        self._child = self._start()

    def _start(self) -> _Child:
        child = _Child(self._url, self._max_batch)
        child.reader.start()
        return child

    def _outgoing(
        self,
        events: Sequence[tuple[NewEvent | PreparedEvent, IndexChange | None]],
        waiters: Sequence[_Waiter],
        *,
        group: bool,
    ) -> _Outgoing:
        wires = [self._wire(event, index) for event, index in events]
        try:
            data = pickle.dumps(wires if group else wires[0], pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # a payload holding something that is not JSON at all
            raise EventError(f"the event payload is not a JSON object: {error}") from None
        return _Outgoing(
            _HEADER.pack(len(data)) + data,
            wires,
            list(waiters),
            [event for event, _ in events],
            [index for _, index in events],
        )

    def _wire(self, event: NewEvent | PreparedEvent, index: IndexChange | None) -> _Wire:
        token = next(self._tokens)
        if isinstance(event, PreparedEvent):
            return (token, event.kind, event.at, event.payload, True, _index_wire(index))
        check_event(event)
        return (token, event.kind, event.at, event.payload, False, _index_wire(index))

    def _deliver(self, batch: list[_Outgoing]) -> None:
        """Write `batch` to the child in one go; call with the lock held.

        Raises:
            StoreError: the child cannot be started or reached; nobody in `batch` waits.
        """
        if self._child.failure is None and self._child.process.poll() is not None:
            self._child.read()  # it exited unwatched: reading its end fails its waiters
        if self._child.failure is not None:  # it died: the next event starts another
            _log.warning("%s; starting a new one", self._child.failure)
            self._child = self._start()
        child = self._child
        blocking = False
        for item in batch:
            for wire, waiter in zip(item.wires, item.waiters, strict=True):
                child.waiting[wire[0]] = waiter  # before sending: the answer may come first
                blocking = blocking or isinstance(waiter, Future)
        if blocking:
            child.expect_blocking()
        try:
            child.send(b"".join(item.frame for item in batch))
        except OSError as error:
            for item in batch:
                for wire in item.wires:
                    child.waiting.pop(wire[0], None)
            raise StoreError(f"the ledger writer process cannot be reached: {error}") from None

    def _send_now(self, item: _Outgoing, awaited: bool) -> None:
        """Send a blocking caller's event, after whatever event loops queued before it.

        One the caller waits for at once commits here instead when all is quiet.
        """
        with self._lock:
            if self._closed:
                raise StoreError("the ledger writer is closed")
            here = self._commit_here(item) if awaited and not self._queue and self._idle() else None
            if here is not None:
                settle_waiters(here)
                return
            queued, self._queue = self._queue, []
            try:
                self._deliver([*queued, item])
            except StoreError as error:
                settle_waiters([(w, error) for q in queued for w in q.waiters])
                raise

    def _enqueue(self, item: _Outgoing) -> None:
        """Queue an event-loop caller's event for the loop's next turn."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise StoreError("the ledger writer is closed")
            self._queue.append(item)
            if loop in self._flushes:
                return
            self._flushes.add(loop)
        loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """A loop's turn: commit what was queued, inline when it is alone and all is quiet."""
        results: list[tuple[_Waiter, LedgerEntry | BaseException]] = []
        sent_to: _Child | None = None
        with self._lock:
            self._flushes.discard(loop)
            batch, self._queue = self._queue, []
            if not batch:
                return
            here = self._commit_here(batch[0]) if len(batch) == 1 and self._idle() else None
            if here is not None:
                results = here
            else:
                try:
                    self._deliver(batch)
                    sent_to = self._child
                except StoreError as error:
                    results = [(w, error) for item in batch for w in item.waiters]
        settle_waiters(results)
        if sent_to is not None and sent_to.loop is not loop:
            sent_to.attach(loop)  # this loop reads the answers from now on, without a thread

    def _idle(self) -> bool:
        """Whether an event may commit on this thread: the child has nothing in hand.

        Call with the lock held.
        """
        child = self._child
        return self._store is not None and child.failure is None and not child.waiting

    def _commit_here(
        self, item: _Outgoing
    ) -> list[tuple[_Waiter, LedgerEntry | BaseException]] | None:
        """Commit one event (or group) on this thread, through the parent's own store.

        The child has answered everything it was sent, so its transactions are over and
        this one follows them in the ledger; holding the lock keeps any other submission
        behind it. None when another connection holds the database's write lock: the
        loop must not wait for it, so the child does.
        """
        assert self._store is not None
        indexes = item.indexes if any(i is not None for i in item.indexes) else None
        try:
            entries = self._store.try_append(item.events, indexes)
        except Exception as error:  # as the child would answer it: this caller hears it
            return [(waiter, error) for waiter in item.waiters]
        if entries is None:
            return None
        return list(zip(item.waiters, entries, strict=True))

    def submit(
        self,
        event: NewEvent | PreparedEvent,
        index: IndexChange | None = None,
        *,
        awaited: bool = False,
    ) -> Future[LedgerEntry]:
        """Queue an event; the future resolves to its entry once it is durably committed.

        `awaited` says the caller waits for it at once: on an idle writer it then
        commits on the caller's thread (see `LedgerWriter.submit`).

        Raises:
            EventError: the event's kind, time or payload type is malformed.
            StoreError: the writer is closed, or its process cannot be started.
        """
        future = Future[LedgerEntry]()
        future.set_running_or_notify_cancel()
        self._send_now(self._outgoing([(event, index)], [future], group=False), awaited)
        return future

    def submit_async(
        self, event: NewEvent | PreparedEvent, index: IndexChange | None = None
    ) -> asyncio.Future[LedgerEntry]:
        """`submit` for a caller on an event loop: a future of the running loop.

        The event is written once queued, even if the future is cancelled. If the child
        cannot be reached, the future fails with `StoreError`.

        Raises:
            RuntimeError: no event loop is running in this thread.
            EventError: the event's kind, time or payload type is malformed.
            StoreError: the writer is closed.
        """
        future: asyncio.Future[LedgerEntry] = asyncio.get_running_loop().create_future()
        self._enqueue(self._outgoing([(event, index)], [future], group=False))
        return future

    def submit_many(
        self,
        events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]],
        *,
        awaited: bool = False,
    ) -> list[Future[LedgerEntry]]:
        """Queue events that must commit together: always in the same transaction.

        Raises:
            EventError: an event is malformed; nothing is queued.
            StoreError: the writer is closed, or its process cannot be started.
        """
        futures = [Future[LedgerEntry]() for _ in events]
        for future in futures:
            future.set_running_or_notify_cancel()
        self._send_now(self._outgoing(events, futures, group=True), awaited)
        return futures

    def submit_many_async(
        self, events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]]
    ) -> list[asyncio.Future[LedgerEntry]]:
        """`submit_many` for a caller on an event loop: futures of the running loop.

        Raises:
            RuntimeError: no event loop is running in this thread.
            EventError: an event is malformed; nothing is queued.
            StoreError: the writer is closed.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[LedgerEntry]] = [loop.create_future() for _ in events]
        self._enqueue(self._outgoing(events, futures, group=True))
        return futures

    def problem(self) -> str | None:
        """Why the writer cannot take events now, or None (a dead child is restarted)."""
        if self._closed:
            return "the ledger writer is closed"
        return self._child.failure

    @property
    def pid(self) -> int:
        """The writer process's id, for operators and tests."""
        return self._child.process.pid

    def close(self) -> None:
        """Commit everything already submitted, then stop the writer process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued, self._queue = self._queue, []
            if queued:  # a loop's turn that never came: these still commit
                try:
                    self._deliver(queued)
                except StoreError as error:
                    settle_waiters([(w, error) for q in queued for w in q.waiters])
        self._child.stop()

    def __enter__(self) -> ProcessCommitWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
