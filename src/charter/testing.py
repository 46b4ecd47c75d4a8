"""Helpers for testing code that uses Charter: a clock you control and predictable ids.

Decisions depend on the clock (budget windows, `now` in conditions) and are recorded
under generated ids, so tests that want exact answers pass both in:

    from charter.testing import FakeClock, make_charter

    def test_the_refund_budget(tmp_path):
        clock = FakeClock()
        with make_charter("policy/", tmp_path, clock=clock) as charter:
            ...
            clock.advance(hours=1)

Nothing here touches the wall clock or randomness, so a test built on it decides the same
way on every run.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from pathlib import Path

from charter.policy import Bundle
from charter.service import Charter

__all__ = ["DEFAULT_START", "FakeClock", "make_charter", "sequential_ids"]

#: Where a `FakeClock` starts unless told otherwise: a Monday morning, 10:00 UTC.
DEFAULT_START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def _require_aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must carry a timezone; Charter never guesses one")
    return moment


class FakeClock:
    """A clock that only moves when told to; pass it as a `Charter`'s `clock`.

    Calling the clock returns the current time. With `tick`, each call then moves the clock
    on by that much, so consecutive decisions get distinct, increasing times without the
    test advancing it by hand; the first call still returns `start`.

    Args:
        start: the first time the clock reads; it must carry a timezone.
        tick: how far each call moves the clock on afterwards, in seconds or as a
            timedelta; zero (the default) keeps the clock still between calls.

    Raises:
        ValueError: `start` is naive, or `tick` is negative.
    """

    def __init__(
        self, start: dt.datetime = DEFAULT_START, *, tick: float | dt.timedelta = 0.0
    ) -> None:
        step = tick if isinstance(tick, dt.timedelta) else dt.timedelta(seconds=tick)
        if step < dt.timedelta(0):
            raise ValueError("`tick` must not be negative: the clock never runs backwards")
        self._now = _require_aware(start)
        self._tick = step
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        """Return the current time, then move on by `tick` (if any)."""
        with self._lock:
            now = self._now
            self._now = now + self._tick
            return now

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()!r}, tick={self._tick.total_seconds()!r})"

    @property
    def now(self) -> dt.datetime:
        """The time the next call will return, without moving the clock."""
        return self._now

    def advance(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> dt.datetime:
        """Move the clock forward and return the new time.

        Raises:
            ValueError: the total is negative; use `set` to go back on purpose.
        """
        step = dt.timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
        if step < dt.timedelta(0):
            raise ValueError("`advance` only moves forward; use `set` to go back on purpose")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: dt.datetime) -> dt.datetime:
        """Put the clock at `moment` (backwards too) and return it.

        Raises:
            ValueError: `moment` is naive.
        """
        with self._lock:
            self._now = _require_aware(moment)
            return self._now


def sequential_ids(prefix: str = "d", *, width: int = 6, start: int = 1) -> Callable[[], str]:
    """Make an id generator for `Charter(ids=...)`: `d-000001`, `d-000002`, ...

    Recorded decision ids are random by default; sequential ones let a test name the
    decision it expects. Each call of this function starts a new, independent sequence;
    the generator itself is safe to share between threads.

    Args:
        prefix: what every id starts with, before a `-`.
        width: how many digits, zero-padded; larger numbers simply grow wider.
        start: the first number.
    """
    counter = itertools.count(start)
    lock = threading.Lock()

    def next_id() -> str:
        with lock:
            number = next(counter)
        return f"{prefix}-{number:0{width}d}"

    return next_id


def make_charter(
    policy: str | Path | Bundle,
    where: str | Path,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    start: dt.datetime = DEFAULT_START,
    ids: Callable[[], str] | None = None,
) -> Charter:
    """Open a `Charter` on a ledger with a fake clock and sequential ids.

    Args:
        policy: a bundle folder, or a compiled bundle.
        where: a directory (such as pytest's `tmp_path`), in which `charter.db` is used,
            the ledger file itself, or a database URL (`postgresql://...`, a database
            `charter migrate` has prepared).
        clock: the clock to use; a still `FakeClock(start)` when None. Pass your own
            `FakeClock` when the test needs to move time.
        start: where the default clock stands; ignored when `clock` is given.
        ids: the decision id generator; `sequential_ids()` when None.

    Returns:
        An open `Charter`; close it, or use it as a context manager.
    """
    path = Path(where)
    db: str | Path = (
        where if "://" in str(where) else path / "charter.db" if path.is_dir() else path
    )
    return Charter(
        policy,
        db,
        clock=clock if clock is not None else FakeClock(start),
        ids=ids if ids is not None else sequential_ids(),
    )
