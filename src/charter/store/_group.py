"""Group commit: many threads append through one writer that batches their events.

With `synchronous=FULL` every commit waits for the disk, so one commit per decision caps
throughput at the disk's flush rate. The writer thread instead takes everything that
queued while the previous commit was flushing (up to `max_batch` events) and commits it
as one transaction. A caller waits for at most the commit in progress plus its own.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from charter.ledger import LedgerEntry, NewEvent, PreparedEvent, prepare_event
from charter.store._port import IndexChange, LedgerStore, StoreError

__all__ = ["GroupCommitWriter"]

_Item = tuple[PreparedEvent, "Future[LedgerEntry]", IndexChange | None]


class GroupCommitWriter:
    """A thread that appends submitted events to a store in batched transactions.

    Use it as a context manager, or call `close` to commit what is queued and stop.
    """

    def __init__(self, store: LedgerStore, *, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ValueError(f"the batch size `{max_batch}` must be at least 1")
        self._store = store
        self._max_batch = max_batch
        # An item is one event, or a list of events that must share a transaction.
        self._queue: queue.SimpleQueue[_Item | list[_Item] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="charter-ledger-writer")
        self._thread.daemon = True
        self._thread.start()

    def submit(
        self, event: NewEvent | PreparedEvent, index: IndexChange | None = None
    ) -> Future[LedgerEntry]:
        """Queue an event; the future resolves to its entry once it is durably committed.

        The event is validated here, in the caller's thread, so a bad payload fails its
        own caller at once instead of its batch.

        Raises:
            EventError: the event is malformed.
            StoreError: the writer is closed.
        """
        item = (prepare_event(event), Future[LedgerEntry](), index)
        with self._lock:
            if self._closed:
                raise StoreError("the ledger writer is closed")
            self._queue.put(item)
        return item[1]

    def submit_many(
        self, events: list[tuple[NewEvent | PreparedEvent, IndexChange | None]]
    ) -> list[Future[LedgerEntry]]:
        """Queue events that must commit together: always in the same transaction.

        Raises:
            EventError: an event is malformed; nothing is queued.
            StoreError: the writer is closed.
        """
        items = [(prepare_event(event), Future[LedgerEntry](), index) for event, index in events]
        with self._lock:
            if self._closed:
                raise StoreError("the ledger writer is closed")
            self._queue.put(items)
        return [future for _, future, _ in items]

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
            batch: list[_Item] = []
            item = self._queue.get()
            while True:
                if item is None:
                    stopping = True
                    break
                if isinstance(item, list):  # a group is never split across transactions
                    batch.extend(i for i in item if i[1].set_running_or_notify_cancel())
                elif item[1].set_running_or_notify_cancel():
                    batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        try:
            indexes = [index for _, _, index in batch]
            entries = self._store.append(
                [event for event, _, _ in batch],
                indexes if any(i is not None for i in indexes) else None,
            )
        except BaseException as error:  # every waiting caller must hear about it
            for _, future, _ in batch:
                future.set_exception(error)
        else:
            for (_, future, _), entry in zip(batch, entries, strict=True):
                future.set_result(entry)
