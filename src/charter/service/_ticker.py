"""A background thread that does one piece of work every interval until stopped.

The approval timers and the ledger follower both run this way: the work is retried at
the next tick when it fails (a store that is away must not end it), and the failure is
logged once per outage rather than at every tick. `poke` runs the work at once instead
of at the next tick (a notification that something changed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Ticker"]

_log = logging.getLogger("charter.service")


class Ticker:
    """Calls `work` every `interval` seconds in a daemon thread named `name`.

    Args:
        name: the thread's name, also how the log names the work.
        work: what to do at each tick; an exception is logged and retried next tick.
        settle: the least time, in seconds, between two runs of the work when pokes
            come faster: a burst of them (a notification per commit, under load) runs
            it once per `settle`, not once per poke.
    """

    def __init__(self, name: str, work: Callable[[], object], *, settle: float = 0.0) -> None:
        self._name = name
        self._work = work
        self._settle = settle
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._poked = threading.Event()

    def start(self, interval: float) -> None:
        """Start ticking, unless already started."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name=self._name, daemon=True
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        failing = False
        started = 0.0
        while True:
            self._poked.wait(interval)
            gap = self._settle - (time.monotonic() - started)
            if gap > 0 and self._stop.wait(gap):
                return
            # Cleared before the work, so a poke during it runs the work once more.
            self._poked.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self._work()
            except Exception:
                if not failing:
                    _log.exception("%s failed; retrying at every tick", self._name)
                failing = True
            else:
                if failing:
                    _log.warning("%s works again", self._name)
                failing = False

    @property
    def running(self) -> bool:
        """Whether the thread was started and not stopped since."""
        return self._thread is not None

    def poke(self) -> None:
        """Do the work now rather than at the next tick (if started); never blocks."""
        self._poked.set()

    def stop(self) -> None:
        """Stop and wait for the thread, if running."""
        if self._thread is None:
            return
        self._stop.set()
        self._poked.set()
        self._thread.join()
        self._thread = None
