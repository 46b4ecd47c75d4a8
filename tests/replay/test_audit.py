"""Replaying a ledger in worker processes gives the report one process gives, on each store."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from charter import Charter, load_bundle
from charter.cli import app
from charter.demo import Fleet, what_if_bundle
from charter.examples import EXAMPLE_POLICY
from charter.service import replay_ledger

BUNDLE = load_bundle(EXAMPLE_POLICY)


@pytest.fixture(scope="module")
def written() -> dict[str, str]:
    """The module's ledger on each store, once written (3,000 decisions take a while)."""
    return {}


@pytest.fixture
def ledger(store_kind: str, store_target: str, written: dict[str, str]) -> str:
    """One ledger per store for the whole module: decisions, a halt, its resume, more."""
    if store_kind in written:
        return written[store_kind]
    moments = iter(
        dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC) + dt.timedelta(seconds=5 * i)
        for i in range(10**6)
    )
    fleet = Fleet(11)
    with Charter(BUNDLE, store_target, clock=lambda: next(moments)) as charter:
        charter.decide_many([fleet.next() for _ in range(1500)])
        charter.halt("all", reason="drill", by="ops")
        charter.decide_many([fleet.next() for _ in range(100)])
        charter.resume("all", by="ops")
        charter.decide_many([fleet.next() for _ in range(1400)])
    written[store_kind] = store_target
    return store_target


class TestReplayLedger:
    """`replay_ledger` splits a ledger across processes without changing the answer."""

    def test_parallel_verify_matches_one_process(self, ledger: str) -> None:
        """Two workers reproduce every decision and report exactly what one process reports."""
        one = replay_ledger(ledger, workers=1)
        two = replay_ledger(ledger, workers=2)
        assert one.ok
        assert one.total == 3000
        assert two.to_json() == one.to_json()

    def test_parallel_what_if_matches_one_process(self, ledger: str) -> None:
        """A what-if replay merges transitions, rules, agents and examples in ledger order."""
        stricter = what_if_bundle(BUNDLE)
        one = replay_ledger(ledger, stricter, workers=1)
        two = replay_ledger(ledger, stricter, workers=2)
        assert one.changed > 0
        assert one.against == stricter.version
        assert two.to_json() == one.to_json()


REQUEST = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


class TestRecordedState:
    """Replay checks each decision's recorded state against the fold of the ledger before it."""

    def test_a_ledger_written_by_one_service_agrees_with_its_history(self, ledger: str) -> None:
        """Budgets spent, a halt and its resume: every decision saw what the ledger gives."""
        report = replay_ledger(ledger, workers=2)
        assert report.state is not None
        assert (report.state.checked, report.state.differing) == (3000, 0)
        assert report.to_json()["state"] == {"checked": 3000, "differing": 0, "examples": []}

    def test_a_what_if_replay_does_not_check_it(self, ledger: str) -> None:
        """Under another bundle the recorded state is an input, not something to check."""
        assert replay_ledger(ledger, what_if_bundle(BUNDLE), workers=1).state is None

    def test_a_decision_that_missed_a_halt_is_named(self, store_target: str) -> None:
        """A second service on the ledger has not seen the first one's halt when it decides.

        Its decision follows the halt in the ledger but records no halt: the check names
        it (seq and field), and replay still reproduces it from what it recorded.
        """
        db = store_target
        with Charter(BUNDLE, db) as first, Charter(BUNDLE, db) as second:
            first.decide(REQUEST)
            first.halt("agent", "support-bot", reason="drill", by="ops")
            missed = second.decide(REQUEST)
            assert missed.decision.verdict.value == "allow"  # it did not know
            halted = first.decide(REQUEST)
            assert halted.decision.verdict.value == "deny"
        report = replay_ledger(db, workers=1)
        assert report.ok
        assert report.state is not None
        assert (report.state.checked, report.state.differing) == (3, 1)
        assert report.state.examples == [(missed.seq, ["halts"])]

    def test_the_cli_says_it_on_one_line_and_keeps_its_exit_code(self, store_target: str) -> None:
        """`charter replay` prints the state line; differences alone do not fail it."""
        db = store_target
        with Charter(BUNDLE, db) as first, Charter(BUNDLE, db) as second:
            first.halt("agent", "support-bot", reason="drill", by="ops")
            missed = second.decide(REQUEST)
        result = CliRunner().invoke(app, ["replay", "--store", db])
        assert result.exit_code == 0, result.output
        assert (
            f"state: 1 of 1 decisions recorded a state the ledger before them does not give "
            f"(first: seq {missed.seq}: halts)"
        ) in " ".join(result.output.split())
