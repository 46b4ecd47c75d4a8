"""The ledger writer process's side of `ProcessCommitWriter`: commit what arrives, answer.

It runs until its request pipe ends (the parent closed it, or died and the system closed
it) or its parent is gone, whichever it notices first: a pipe can outlive the parent when
a process the parent forked still holds its end. On Linux the kernel tells it at once
(`PR_SET_PDEATHSIG`); everywhere it also looks at its parent id whenever it has been idle
for a second. Either way it commits the events it has read whole, then exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import sys
from typing import Any

from charter.ledger import EventError, NewEvent, PreparedEvent, prepare_event
from charter.store._group import append_units
from charter.store._opening import open_store
from charter.store._port import IndexChange, LedgerLog, StoreError
from charter.store._process import _Frames, _Wire, _write_frame

__all__ = ["child_main"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: What the kernel sends when the parent goes; any other sender is checked all the same.
_PARENT_GONE_SIGNAL = signal.SIGUSR1
_IDLE_CHECK = 1.0  # seconds idle between two looks at the parent id


class _ParentGone(Exception):
    """The parent died while the writer waited for requests."""


class _Parent:
    """Whether the process that started this writer is still its parent.

    The kernel's signal also comes when the parent's *thread* that started us exits
    (a worker thread, say) while the parent itself lives on; the parent id tells the
    two apart, since it changes only when the parent process is gone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.gone = False
        self._waiting = False

    def watch(self) -> None:
        """Ask to be told when the parent dies, then check it did not die already."""
        signal.signal(_PARENT_GONE_SIGNAL, self._signalled)
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):  # no libc: the idle look stays
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, int(_PARENT_GONE_SIGNAL), 0, 0, 0)
        # Had the parent died before the request above, nobody would send the signal.
        self._look()

    def _look(self) -> None:
        if os.getppid() != self.pid:
            self.gone = True

    def _signalled(self, _signum: int, _frame: Any) -> None:
        self._look()
        if self.gone and self._waiting:
            raise _ParentGone

    def wait(self, fd: int) -> None:
        """Wait until `fd` is readable, a second has passed, or the parent is gone."""
        self._waiting = True
        try:
            if not self.gone:
                select.select([fd], [], [], _IDLE_CHECK)
            self._look()
        except _ParentGone:
            pass
        finally:
            self._waiting = False


def _prepared(wire: _Wire) -> tuple[int, PreparedEvent, IndexChange | None]:
    token, kind, at, payload, ready, index = wire
    if ready:
        event = PreparedEvent(kind, at, payload)
    else:
        event = prepare_event(NewEvent(kind, at, payload))
    return token, event, IndexChange(*index) if index is not None else None


def _answer(replies: int, answers: list[tuple[int, Any]]) -> None:
    try:
        frame = pickle.dumps(answers, pickle.HIGHEST_PROTOCOL)
    except Exception:  # an error that does not pickle still reaches its caller, in words
        words = [
            (token, StoreError(f"{type(a).__name__}: {a}") if isinstance(a, BaseException) else a)
            for token, a in answers
        ]
        frame = pickle.dumps(words, pickle.HIGHEST_PROTOCOL)
    _write_frame(replies, frame)


def _commit(store: LedgerLog, replies: int, batch: list[_Wire | list[_Wire]]) -> None:
    answers: list[tuple[int, Any]] = []
    units: list[list[tuple[int, PreparedEvent, IndexChange | None]]] = []
    for item in batch:
        group = item if isinstance(item, list) else [item]
        try:
            units.append([_prepared(wire) for wire in group])
        except EventError as error:  # only this event (or its whole group) fails
            answers.extend((wire[0], error) for wire in group)
    if units:
        results = append_units(
            store, [[(event, index) for _, event, index in unit] for unit in units]
        )
        tokens = [token for unit in units for token, _, _ in unit]
        answers.extend(
            (
                token,
                result
                if isinstance(result, Exception)
                else (
                    result.seq,
                    result.kind,
                    result.at,
                    result.payload,
                    result.leaf_hash,
                    result.chain_hash,
                ),
            )
            for token, result in zip(tokens, results, strict=True)
        )
    _answer(replies, answers)


def child_main(url: str, requests: int, replies: int, max_batch: int, parent: int) -> None:
    """The writer process: open the store, then commit what arrives while the parent lives.

    Args:
        url: the database URL to open.
        requests: the pipe descriptor requests arrive on.
        replies: the pipe descriptor answers leave on.
        max_batch: the most events one transaction commits.
        parent: the process id of the parent that started it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    watcher = _Parent(parent)
    watcher.watch()
    try:
        store = open_store(url)
    except Exception as error:  # the parent reports why the writer did not start
        _write_frame(replies, pickle.dumps(("failed", f"{type(error).__name__}: {error}")))
        return
    inbox = _Frames(requests)
    _write_frame(replies, pickle.dumps(("ready", os.getpid())))
    try:
        while True:
            # One thread reads and commits: whatever queued while the last batch was
            # flushing is the next batch. (A second thread only to drain the pipe would
            # pass the child's GIL back and forth on every frame.)
            inbox.fill()
            batch = inbox.take(max_batch)
            if batch:
                try:
                    _commit(store, replies, batch)
                except BrokenPipeError:  # committed, but nobody reads answers any more
                    watcher.gone = True
            elif inbox.ended or watcher.gone:
                break
            else:
                with contextlib.suppress(_ParentGone):  # a signal just as the wait ends
                    watcher.wait(inbox.fd)
    finally:
        store.close()
        os.close(replies)
        os.close(requests)
