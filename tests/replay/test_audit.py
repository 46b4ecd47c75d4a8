"""Replaying a ledger file in worker processes gives the report one process gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from charter import Charter, load_bundle
from charter.demo import Fleet, what_if_bundle
from charter.examples import EXAMPLE_POLICY
from charter.service import replay_ledger

BUNDLE = load_bundle(EXAMPLE_POLICY)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("audit") / "ledger.db"
    moments = iter(
        dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC) + dt.timedelta(seconds=5 * i)
        for i in range(10**6)
    )
    fleet = Fleet(11)
    with Charter(BUNDLE, db, clock=lambda: next(moments)) as charter:
        charter.decide_many([fleet.next() for _ in range(1500)])
        charter.halt("all", reason="drill", by="ops")
        charter.decide_many([fleet.next() for _ in range(100)])
        charter.resume("all", by="ops")
        charter.decide_many([fleet.next() for _ in range(1400)])
    return db


class TestReplayLedger:
    """`replay_ledger` splits a ledger across processes without changing the answer."""

    def test_parallel_verify_matches_one_process(self, ledger: Path) -> None:
        """Two workers reproduce every decision and report exactly what one process reports."""
        one = replay_ledger(ledger, workers=1)
        two = replay_ledger(ledger, workers=2)
        assert one.ok
        assert one.total == 3000
        assert two.to_json() == one.to_json()

    def test_parallel_what_if_matches_one_process(self, ledger: Path) -> None:
        """A what-if replay merges transitions, rules, agents and examples in ledger order."""
        stricter = what_if_bundle(BUNDLE)
        one = replay_ledger(ledger, stricter, workers=1)
        two = replay_ledger(ledger, stricter, workers=2)
        assert one.changed > 0
        assert one.against == stricter.version
        assert two.to_json() == one.to_json()
