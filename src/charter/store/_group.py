"""Group commit: many threads append through one writer that batches their events.

With `synchronous=FULL` every commit waits for the disk, so one commit per decision caps
throughput at the disk's flush rate. The writer thread instead takes everything that
queued while the previous commit was flushing (up to `max_batch` events) and commits it
as one transaction. A caller waits for at most the commit in progress plus its own.

Blocking callers wait on a `concurrent.futures.Future` each (`submit`). Callers on an
event loop (`submit_async`) get an `asyncio.Future` of that loop instead: after a commit
the writer hands the whole batch's results to each loop in one `call_soon_threadsafe`,
rather than waking the loop and bridging a thread future once per event.

A failed commit answers every caller in it with the error and nothing else: no caller
is told its entry is durable unless its transaction committed. An outage (the database
away, the disk full) is answered as `StoreUnavailable`, and it stops nothing: the next
batch is tried afresh, on a new connection, so appends work again as soon as the
database does, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol, TypeAlias

from sqlalchemy.exc import IntegrityError

from charter.ledger import LedgerEntry, NewEvent, PreparedEvent, prepare_event
from charter.store._opening import unavailable
from charter.store._port import IndexChange, LedgerLog, SetOnceConflict, StoreError

__all__ = ["GroupCommitWriter", "LedgerWriter", "append_units", "settle_waiters"]

# A row the database refused (a constraint): the batch's other units may still commit.
_REFUSED = (SetOnceConflict, IntegrityError)

_Waiter: TypeAlias = "Future[LedgerEntry] | asyncio.Future[LedgerEntry]"
_Item: TypeAlias = "tuple[PreparedEvent, _Waiter, IndexChange | None]"
_Outcome: TypeAlias = "list[tuple[asyncio.Future[LedgerEntry], LedgerEntry | BaseException]]"


class LedgerWriter(Protocol):
    """What the gateway needs of a ledger writer: batched, durable appends it can await.

    `GroupCommitWriter` is a thread in this process; `ProcessCommitWriter` runs the same
    batching in a child process, so its SQLite work never holds this process's GIL.
    """

    def submit(
        self,
        event: NewEvent | PreparedEvent,
        index: IndexChange | None = None,
        *,
        awaited: bool = False,
    ) -> Future[LedgerEntry]:
        """Queue an event; the future resolves to its entry once durably committed.

        `awaited`: the caller waits for this entry before it submits anything else, so
        an idle writer may commit it on the caller's own thread, sparing two thread
        switches. A caller that queues several and then waits leaves it False: they
        then share one transaction.
        """

    def submit_async(
        self, event: NewEvent | PreparedEvent, index: IndexChange | None = None
    ) -> asyncio.Future[LedgerEntry]:
        """`submit` for a caller on an event loop: a future of the running loop."""

    def submit_many(
        self,
        events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]],
        *,
        awaited: bool = False,
    ) -> list[Future[LedgerEntry]]:
        """Queue events that must commit together, in one transaction.

        `awaited`: as in `submit`.
        """

    def submit_many_async(
        self, events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]]
    ) -> list[asyncio.Future[LedgerEntry]]:
        """`submit_many` for a caller on an event loop."""

    def problem(self) -> str | None:
        """Why the writer cannot take events now, or None when it can."""

    def close(self) -> None:
        """Commit everything already submitted, then stop."""


def _taken(waiter: _Waiter) -> bool:
    """Whether the writer takes an event up: a thread future's caller may cancel it first."""
    return not isinstance(waiter, Future) or waiter.set_running_or_notify_cancel()


def _heard(future: asyncio.Future[LedgerEntry]) -> None:
    """Mark a settled future's failure as read (see `submit_many_async`)."""
    if not future.cancelled():
        future.exception()


def _resolve(done: _Outcome) -> None:
    """Settle a loop's futures from one batch; runs on that loop's thread."""
    for future, result in done:
        if future.done():  # its awaiter was cancelled; the entry is committed anyway
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def settle_waiters(results: list[tuple[_Waiter, LedgerEntry | BaseException]]) -> None:
    """Hand each waiter its entry or error: thread futures here, each loop's in one call.

    Waking an event loop costs a system call and a pass of the loop, so a loop's futures
    from one batch are resolved together, with one `call_soon_threadsafe`.
    """
    loops: dict[asyncio.AbstractEventLoop, _Outcome] = {}
    for waiter, result in results:
        if isinstance(waiter, Future):
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        else:
            loops.setdefault(waiter.get_loop(), []).append((waiter, result))
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, done in loops.items():
        if loop is running:  # called on the loop itself: no need to wake it
            _resolve(done)
            continue
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            loop.call_soon_threadsafe(_resolve, done)


class GroupCommitWriter:
    """A thread that appends submitted events to a store in batched transactions.

    Use it as a context manager, or call `close` to commit what is queued and stop.
    """

    def __init__(self, store: LedgerLog, *, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ValueError(f"the batch size `{max_batch}` must be at least 1")
        self._store = store
        self._max_batch = max_batch
        # An item is one event, or a list of events that must share a transaction.
        self._queue: queue.SimpleQueue[_Item | list[_Item] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._pending = 0  # events queued and not yet answered by the thread
        self._here = threading.Lock()  # one blocking caller commits on its own at a time
        self._thread = threading.Thread(target=self._run, name="charter-ledger-writer")
        self._thread.daemon = True
        self._thread.start()

    def submit(
        self,
        event: NewEvent | PreparedEvent,
        index: IndexChange | None = None,
        *,
        awaited: bool = False,
    ) -> Future[LedgerEntry]:
        """Queue an event; the future resolves to its entry once it is durably committed.

        The event is validated here, in the caller's thread, so a bad payload fails its
        own caller at once instead of its batch. A future cancelled before the writer
        takes its event up is not written. `awaited` says the caller waits for it at
        once: an idle writer then commits it here (see `LedgerWriter.submit`).

        Raises:
            EventError: the event is malformed.
            StoreError: the writer is closed.
        """
        future = Future[LedgerEntry]()
        item = (prepare_event(event), future, index)
        if not (awaited and self._commit_here([item])):
            self._put(item)
        return future

    def _commit_here(self, items: list[_Item]) -> bool:
        """Commit a blocking caller's events on its own thread, if the writer is idle.

        The caller would otherwise wake the writer thread and sleep until it answers:
        two thread switches per commit, a fifth of a lone embedded call's time. Only
        when nothing is queued or in flight (so the ledger's order stays the order of
        submission), no other caller is doing the same, and the database's write lock is
        free right now; otherwise the events queue as usual and nothing was written.
        """
        if not self._here.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._closed:
                    raise StoreError("the ledger writer is closed")
                if self._pending:
                    return False
            indexes = [index for _, _, index in items]
            try:
                entries = self._store.try_append(
                    [event for event, _, _ in items],
                    indexes if any(i is not None for i in indexes) else None,
                )
            except Exception as error:  # as the thread would answer it: this caller's
                failure = _named(error)
                settle_waiters([(future, failure) for _, future, _ in items])
                return True
            if entries is None:
                return False
            settle_waiters([(f, e) for (_, f, _), e in zip(items, entries, strict=True)])
            return True
        finally:
            self._here.release()

    def submit_async(
        self, event: NewEvent | PreparedEvent, index: IndexChange | None = None
    ) -> asyncio.Future[LedgerEntry]:
        """`submit` for a caller on an event loop: a future of the running loop.

        The event is always written once queued, even if the future is cancelled (a
        caller that goes away must not undo a write others may already rely on).

        Raises:
            RuntimeError: no event loop is running in this thread.
            EventError: the event is malformed.
            StoreError: the writer is closed.
        """
        future: asyncio.Future[LedgerEntry] = asyncio.get_running_loop().create_future()
        self._put((prepare_event(event), future, index))
        return future

    def _put(self, item: _Item | list[_Item]) -> None:
        with self._lock:
            if self._closed:
                raise StoreError("the ledger writer is closed")
            self._pending += len(item) if isinstance(item, list) else 1
            self._queue.put(item)

    def submit_many(
        self,
        events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]],
        *,
        awaited: bool = False,
    ) -> list[Future[LedgerEntry]]:
        """Queue events that must commit together: always in the same transaction.

        Raises:
            EventError: an event is malformed; nothing is queued.
            StoreError: the writer is closed.
        """
        futures = [Future[LedgerEntry]() for _ in events]
        items: list[_Item] = [
            (prepare_event(event), future, index)
            for (event, index), future in zip(events, futures, strict=True)
        ]
        if not (awaited and self._commit_here(items)):
            self._put(items)
        return futures

    def submit_many_async(
        self, events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]]
    ) -> list[asyncio.Future[LedgerEntry]]:
        """`submit_many` for a caller on an event loop: futures of the running loop.

        Like `submit_async`, the events are written once queued, even if a future is
        cancelled.

        Raises:
            RuntimeError: no event loop is running in this thread.
            EventError: an event is malformed; nothing is queued.
            StoreError: the writer is closed.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[LedgerEntry]] = [loop.create_future() for _ in events]
        items: list[_Item] = [
            (prepare_event(event), future, index)
            for (event, index), future in zip(events, futures, strict=True)
        ]
        self._put(items)
        for follower in futures[1:]:
            # The group shares one outcome and its caller awaits the first future: a
            # failure left unread on the others is that same failure, already heard,
            # not one for asyncio to log as "never retrieved" when they are collected.
            follower.add_done_callback(_heard)
        return futures

    def problem(self) -> str | None:
        """Why the writer cannot take events now (closed, or its thread died), or None."""
        if self._closed:
            return "the ledger writer is closed"
        if not self._thread.is_alive():
            return "the ledger writer thread stopped"
        return None

    def close(self) -> None:
        """Commit everything already submitted, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)  # the stop signal, queued after every submitted event
        self._thread.join()

    def __enter__(self) -> GroupCommitWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            units: list[list[_Item]] = []  # an event alone, or a group, each a unit
            size = dequeued = 0
            item = self._queue.get()
            while True:
                if item is None:
                    stopping = True
                    break
                if isinstance(item, list):  # a group is never split across transactions
                    unit = [i for i in item if _taken(i[1])]
                    dequeued += len(item)
                else:
                    unit = [item] if _taken(item[1]) else []
                    dequeued += 1
                if unit:
                    units.append(unit)
                    size += len(unit)
                if size >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(units, dequeued)

    def _commit(self, units: list[list[_Item]], dequeued: int) -> None:
        """Commit a batch, then answer its callers; `dequeued` counts cancelled ones too."""
        try:
            results = (
                append_units(
                    self._store, [[(event, index) for event, _, index in unit] for unit in units]
                )
                if units
                else []
            )
        except BaseException as error:  # every waiting caller must hear about it
            failure = _named(error) if isinstance(error, Exception) else error
            settle_waiters([(waiter, failure) for unit in units for _, waiter, _ in unit])
            return
        finally:
            # Committed (or failed): no longer ahead of anyone. Said before the callers
            # hear, so that a caller's next event may already commit on its own thread.
            with self._lock:
                self._pending -= dequeued
        waiters = [waiter for unit in units for _, waiter, _ in unit]
        settle_waiters(list(zip(waiters, results, strict=True)))


_Pairs: TypeAlias = "Sequence[tuple[NewEvent | PreparedEvent, IndexChange | None]]"


def _named(error: Exception) -> Exception:
    """`error` as its caller hears it: an outage as `StoreUnavailable`, else itself."""
    return unavailable(error) or error


def _append_pairs(store: LedgerLog, pairs: _Pairs) -> list[LedgerEntry]:
    indexes = [index for _, index in pairs]
    entries = store.append(
        [event for event, _ in pairs], indexes if any(i is not None for i in indexes) else None
    )
    if len(entries) != len(pairs):
        raise StoreError(f"the store returned {len(entries)} entries for {len(pairs)}")
    return entries


def append_units(store: LedgerLog, units: Sequence[_Pairs]) -> list[LedgerEntry | Exception]:
    """Append units (an event, or a group that commits together) in one transaction.

    One result per event, in order: its entry, or why it was not written. When the
    database refuses a row (a constraint, such as a grant redeemed twice), each unit is
    tried again in a transaction of its own, so that only the refused unit fails and a
    client's mistake never costs the others in its batch their answer.
    """
    pairs = [pair for unit in units for pair in unit]
    try:
        return list(_append_pairs(store, pairs))
    except _REFUSED as error:
        if len(units) == 1:
            return [error] * len(pairs)
        one_by_one: list[LedgerEntry | Exception] = []
        for unit in units:
            try:
                one_by_one.extend(_append_pairs(store, unit))
            except Exception as alone:  # this unit's own answer
                one_by_one.extend([_named(alone)] * len(unit))
        return one_by_one
    except Exception as error:  # the whole batch failed: none of it is acknowledged
        return [_named(error)] * len(pairs)
