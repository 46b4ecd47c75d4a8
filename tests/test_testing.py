"""The `charter.testing` kit: a clock tests control, predictable ids, a ready Charter."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from charter.examples import EXAMPLE_POLICY
from charter.store import open_store
from charter.testing import DEFAULT_START, FakeClock, make_charter, sequential_ids

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
NOTE = {"agent": "support-bot", "action": "crm.note", "args": {"customer_id": "c-1", "text": "hi"}}


class TestFakeClock:
    def test_stands_still_by_default(self) -> None:
        """Without a tick, every call returns the start until the clock is moved."""
        clock = FakeClock(START)
        assert [clock(), clock(), clock.now] == [START, START, START]

    def test_starts_at_a_monday_morning_by_default(self) -> None:
        """The default start is `DEFAULT_START`, a timezone-aware Monday."""
        assert FakeClock()() == DEFAULT_START
        assert DEFAULT_START.tzinfo is not None
        assert DEFAULT_START.weekday() == 0

    def test_advance_moves_forward(self) -> None:
        """`advance` adds seconds, minutes, hours and days, and returns the new time."""
        clock = FakeClock(START)
        moved = clock.advance(30, minutes=1, hours=2, days=1)
        assert moved == START + dt.timedelta(days=1, hours=2, minutes=1, seconds=30)
        assert clock() == moved

    def test_advance_refuses_to_go_back(self) -> None:
        """A negative `advance` is an error; going back takes an explicit `set`."""
        clock = FakeClock(START)
        with pytest.raises(ValueError, match="set"):
            clock.advance(-1)
        assert clock.set(START - dt.timedelta(days=1)) == clock()

    def test_tick_moves_after_each_call(self) -> None:
        """With a tick, the first call returns the start and each later call is one tick on."""
        clock = FakeClock(START, tick=dt.timedelta(milliseconds=250))
        assert [clock() for _ in range(3)] == [
            START,
            START + dt.timedelta(milliseconds=250),
            START + dt.timedelta(milliseconds=500),
        ]
        assert FakeClock(START, tick=2)() == START

    def test_naive_times_are_refused(self) -> None:
        """A time without a timezone is refused at start and on `set`."""
        with pytest.raises(ValueError, match="timezone"):
            FakeClock(dt.datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="timezone"):
            FakeClock(START).set(dt.datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="tick"):
            FakeClock(START, tick=-1)


class TestSequentialIds:
    def test_counts_from_one_with_a_prefix(self) -> None:
        """Ids are `prefix-NNNNNN` counting up from 1."""
        ids = sequential_ids()
        assert [ids(), ids(), ids()] == ["d-000001", "d-000002", "d-000003"]
        other = sequential_ids("req", width=2, start=99)
        assert [other(), other()] == ["req-99", "req-100"]

    def test_each_generator_is_independent_and_thread_safe(self) -> None:
        """Separate generators do not share a counter; one shared by threads never repeats."""
        ids = sequential_ids()
        assert sequential_ids()() == "d-000001"
        seen: list[str] = []

        def take() -> None:
            seen.extend(ids() for _ in range(500))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(seen)) == 2000


class TestMakeCharter:
    def test_uses_the_fake_clock_and_sequential_ids(self, tmp_path: Path) -> None:
        """`make_charter(policy, tmp_path)` records at `start` with ids from d-000001.

        A folder means a SQLite file in it: the next test gives it a store of each kind.
        """
        with make_charter(EXAMPLE_POLICY, tmp_path, start=START) as charter:
            record = charter.decide(NOTE)
        assert record.id == "d-000001"
        assert record.at == "2026-01-05T09:00:00.000000Z"
        assert (tmp_path / "charter.db").is_file()

    def test_accepts_a_store_and_a_clock(self, store_target: str) -> None:
        """Given a file or a database URL it uses that store; given a clock, time can move."""
        clock = FakeClock(START)
        with make_charter(EXAMPLE_POLICY, store_target, clock=clock) as charter:
            clock.advance(hours=1)
            record = charter.decide(NOTE)
        assert (record.id, record.at) == ("d-000001", "2026-01-05T10:00:00.000000Z")
        with open_store(store_target, read_only=True) as store:
            [entry] = store.entries(kinds=("decision",))
        assert entry.payload_object()["decision_id"] == record.id
