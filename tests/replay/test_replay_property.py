"""Replay under recorded versions reproduces every recorded decision, whatever the traffic."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import Charter, load_bundle
from charter.demo import Fleet, what_if_bundle
from charter.examples import EXAMPLE_POLICY

BUNDLE = load_bundle(EXAMPLE_POLICY)
START = dt.datetime(2026, 3, 6, 20, 0, tzinfo=dt.UTC)  # a Friday evening: weekends come up

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
amounts = st.floats(min_value=0.01, max_value=30_000, allow_nan=False) | st.integers(1, 30_000)


def _refunds() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "agent": st.sampled_from(["support-bot", "support-bot-trainee", "intruder"]),
            "action": st.sampled_from(["payments.refund", "orders.cancel", "infra.restart"]),
            "args": st.fixed_dictionaries(
                {
                    "order_id": st.sampled_from(["ord-1", "ord-22", "bad"]),
                    "amount": amounts,
                    "currency": st.sampled_from(["USD", "EUR", "JPY"]),
                },
                optional={
                    "customer_email": st.emails(),
                    "extra": json_scalars,
                },
            ),
            "context": st.fixed_dictionaries(
                {},
                optional={
                    "confidence": st.floats(0, 1),
                    "rationale": st.text(max_size=30),
                    "data_sources": st.lists(
                        st.fixed_dictionaries(
                            {"name": st.sampled_from(["orders-db", "crm"])},
                            optional={"age_seconds": st.integers(0, 10_000)},
                        ),
                        max_size=2,
                    ),
                },
            ),
        }
    )


class TestReplayReproduces:
    """Replaying a ledger under the versions it recorded gives back every decision exactly."""

    @settings(
        max_examples=20,
        deadline=None,
        # One run per store, each on a new instance of the class (which holds nothing).
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        requests=st.lists(_refunds(), min_size=1, max_size=40),
        gaps=st.lists(st.integers(0, 900), min_size=40, max_size=40),
        seed=st.integers(0, 2**16),
    )
    def test_any_traffic_replays_exactly(
        self,
        store_kind: str,
        tmp_path: Path,
        request: pytest.FixtureRequest,
        requests: list[dict[str, Any]],
        gaps: list[int],
        seed: int,
    ) -> None:
        """Generated requests, fleet traffic, halts and budgets replay to the same bytes.

        The state each decision recorded is also what the fold of the ledger before it gives.
        """
        moments = iter(START + dt.timedelta(seconds=sum(gaps[: i + 1]) * 7) for i in range(10**6))
        # One fresh ledger per example: hypothesis reuses the test's fixtures.
        db: str | Path = (
            Path(tempfile.mkdtemp(dir=tmp_path)) / "ledger.db"
            if store_kind == "sqlite"
            else request.getfixturevalue("postgres").database()
        )
        fleet = Fleet(seed)
        with Charter(BUNDLE, db, clock=lambda: next(moments)) as charter:
            charter.decide_many(requests)
            charter.halt("agent", "support-bot", reason="incident", by="ops")
            charter.decide_many([fleet.next() for _ in range(30)])
            charter.resume("agent", "support-bot", by="ops")
            charter.decide_many([fleet.next() for _ in range(30)])
            report = charter.replay()
            assert report.ok, report.mismatches[:3] or report.errors[:3]
            assert report.total == len(requests) + 60
            assert report.unchanged == report.total
            # ... and each recorded the halts and budget use the ledger before it gives.
            assert report.state is not None
            assert (report.state.checked, report.state.differing) == (report.total, 0)

    def test_what_if_counts_only_real_changes(self, store_target: str) -> None:
        """Replaying under the same content rebuilt from the ledger changes nothing."""
        moments = iter(START + dt.timedelta(seconds=9 * i) for i in range(10**6))
        fleet = Fleet(3)
        with Charter(BUNDLE, store_target, clock=lambda: next(moments)) as charter:
            charter.decide_many([fleet.next() for _ in range(400)])
            same = charter.replay(load_bundle(EXAMPLE_POLICY))
            stricter = charter.replay(what_if_bundle(BUNDLE))
        assert same.changed == 0
        assert same.ok
        assert stricter.changed > 0
        assert set(stricter.by_rule) >= {"large-refunds-need-finance"}
