"""Circuit breakers on outcomes, through a real service on SQLite and PostgreSQL.

The example policy's `refunds-failing` breaker opens when half of at least 10 refund
outcomes in 15 minutes failed; refunds then need approval for 10 minutes, after which 3
trials run and it closes when they succeed. `infra-changes-failing` is per agent and
denies. Refunds declare a 2-minute `timeout`: an outcome that never comes is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from charter import Charter, Verdict
from charter.errors import Conflict
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.store import open_store, verify_store
from charter.testing import FakeClock


def refund(order: int) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{order}", "amount": 20, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
    }


RESTART = {
    "agent": "infra-bot",
    "action": "infra.restart",
    "args": {"service": "search"},
    "context": {
        "confidence": 0.9,
        "rationale": "the service stopped answering",
        "environment": "staging",
    },
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(tick=0.001)


@pytest.fixture
def charter(store_target: str, clock: FakeClock) -> Iterator[Charter]:
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as service:
        yield service
    with open_store(store_target, read_only=True) as store:
        assert verify_store(store).ok


def act(charter: Charter, request: dict[str, Any], *, success: bool) -> Any:
    """Decide, redeem and report the outcome; the decision record."""
    record = charter.decide(request)
    assert record.verdict is Verdict.ALLOW, record.decision.reasons
    assert record.grant is not None
    charter.redeem(record.grant.id, record.grant.token, request["args"])
    charter.record_outcome(record.id, success=success, error=None if success else "gateway 502")
    return record


def kinds(charter: Charter, kind: str) -> list[dict[str, Any]]:
    return [e.payload_object() for e in charter.store.entries(kinds={kind})]


def codes(record: Any) -> list[str]:
    return [r.code for r in record.decision.reasons]


def trip_refunds(charter: Charter, start: int = 0) -> None:
    """Ten refund outcomes, five failed: the breaker opens on the tenth."""
    for i in range(10):
        act(charter, refund(start + i), success=i % 2 == 0)


def test_failures_open_the_breaker_and_refunds_need_a_person(
    charter: Charter, clock: FakeClock
) -> None:
    for i in range(9):  # 9 outcomes: below the minimum sample, whatever failed
        act(charter, refund(i), success=False)
    assert kinds(charter, events.BREAKER_OPENED) == []
    act(charter, refund(9), success=False)
    (opened,) = kinds(charter, events.BREAKER_OPENED)
    assert opened["breaker"] == "refunds-failing"
    assert opened["agent"] is None  # one circuit for every agent
    assert (opened["failures"], opened["sample"], opened["generation"]) == (10, 10, 1)
    held = charter.decide(refund(100))
    assert held.verdict is Verdict.REQUIRE_APPROVAL
    reason = next(r for r in held.decision.reasons if r.code == "breaker_open")
    assert reason.rule == "refunds-failing"
    assert "10 of 10 outcomes failed" in reason.message
    assert "payment provider" in reason.message
    # another agent's refunds fall under the same circuit; other actions do not
    trainee = charter.decide({**refund(101), "agent": "support-bot-trainee"})
    assert "breaker_open" in codes(trainee)
    note = charter.decide(
        {
            "agent": "support-bot",
            "action": "crm.note",
            "args": {"customer_id": "c-1", "text": "called back"},
            "context": {"confidence": 0.9, "rationale": "keeping the record current"},
        }
    )
    assert note.verdict is Verdict.ALLOW


def test_after_the_cool_down_trials_run_and_success_closes_it(
    charter: Charter, clock: FakeClock
) -> None:
    trip_refunds(charter)
    assert charter.decide(refund(50)).verdict is Verdict.REQUIRE_APPROVAL
    clock.advance(minutes=10)
    trials = [charter.decide(refund(60 + i)) for i in range(3)]
    assert all(t.verdict is Verdict.ALLOW for t in trials)
    assert all("breaker_trial" in codes(t) for t in trials)
    fourth = charter.decide(refund(70))  # every trial is under way: held back
    assert fourth.verdict is Verdict.REQUIRE_APPROVAL
    assert "half-open" in next(
        r.message for r in fourth.decision.reasons if r.code == "breaker_open"
    )
    (view,) = [c for c in charter.circuits() if c.breaker == "refunds-failing"]
    assert (view.status, view.trials_left) == ("half_open", 0)
    for trial in trials:
        assert trial.grant is not None
        charter.redeem(trial.grant.id, trial.grant.token, trial.request.args)
        charter.record_outcome(trial.id, success=True)
    (closed,) = kinds(charter, events.BREAKER_CLOSED)
    assert (closed["generation"], closed["trials"]) == (2, 3)
    after = charter.decide(refund(80))
    assert after.verdict is Verdict.ALLOW
    assert not {"breaker_open", "breaker_trial"} & set(codes(after))
    assert [c.status for c in charter.circuits() if c.breaker == "refunds-failing"] == ["closed"]
    report = charter.replay()
    assert report.ok, report
    assert report.changed == 0, report
    assert report.state is not None
    assert report.state.differing == 0, report.state


def test_a_failed_trial_opens_it_again(charter: Charter, clock: FakeClock) -> None:
    trip_refunds(charter)
    clock.advance(minutes=10)
    act(charter, refund(200), success=False)  # the first trial fails
    opened = kinds(charter, events.BREAKER_OPENED)
    assert [o["generation"] for o in opened] == [1, 2]
    assert "trial failed" in opened[-1]["reason"]
    held = charter.decide(refund(201))
    assert held.verdict is Verdict.REQUIRE_APPROVAL
    assert "breaker_open" in codes(held)


def test_an_outcome_that_never_comes_is_a_failure(charter: Charter, clock: FakeClock) -> None:
    request = refund(1)
    record = charter.decide(request)
    assert record.grant is not None
    redeemed = charter.redeem(record.grant.id, record.grant.token, request["args"])
    (entry,) = kinds(charter, events.GRANT_REDEEMED)
    assert entry["outcome_due"] > redeemed.at  # two minutes after the redemption
    assert charter.fire_overdue() == 0  # not due yet
    clock.advance(minutes=2, seconds=1)
    assert charter.fire_overdue() == 1
    assert charter.fire_overdue() == 0  # once
    (overdue,) = kinds(charter, events.OUTCOME_OVERDUE)
    assert overdue["decision_id"] == record.id
    assert overdue["breakers"] == [{"id": "refunds-failing", "agent": None}]
    with pytest.raises(Conflict, match="already has an outcome"):
        charter.record_outcome(record.id, success=True)  # too late: it counted as failed
    # nine more failures make ten, with the overdue one: the breaker opens
    for i in range(9):
        act(charter, refund(10 + i), success=False)
    assert len(kinds(charter, events.BREAKER_OPENED)) == 1


def test_the_breaker_survives_a_restart(store_target: str, clock: FakeClock) -> None:
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as first:
        trip_refunds(first)
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as second:
        held = second.decide(refund(300))
        assert held.verdict is Verdict.REQUIRE_APPROVAL
        assert "breaker_open" in codes(held)
        clock.advance(minutes=10)
        assert "breaker_trial" in codes(second.decide(refund(301)))
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as third:
        (view,) = [c for c in third.circuits() if c.breaker == "refunds-failing"]
        assert (view.status, view.trials_left) == ("half_open", 2)  # one trial was used


def test_a_breaker_opened_on_one_service_holds_on_another(
    store_target: str, clock: FakeClock
) -> None:
    with (
        Charter(EXAMPLE_POLICY, store_target, clock=clock) as a,
        Charter(EXAMPLE_POLICY, store_target, clock=clock) as b,
    ):
        for i in range(5):  # outcomes recorded on both count towards one circuit
            act(a, refund(i), success=False)
        b.catch_up()
        for i in range(5, 9):
            act(b, refund(i), success=False)
        a.catch_up()
        act(a, refund(9), success=False)
        (opened,) = kinds(a, events.BREAKER_OPENED)
        assert opened["sample"] == 10
        b.catch_up()
        assert "breaker_open" in codes(b.decide(refund(20)))


def test_a_deny_breaker_per_agent_refuses_that_agents_changes(
    charter: Charter, clock: FakeClock
) -> None:
    for _ in range(5):
        act(charter, RESTART, success=False)
    (opened,) = kinds(charter, events.BREAKER_OPENED)
    assert (opened["breaker"], opened["agent"]) == ("infra-changes-failing", "infra-bot")
    refused = charter.decide(RESTART)
    assert refused.verdict is Verdict.DENY
    assert "breaker_open" in codes(refused)
    # the circuit is the action's: scaling by the same agent is not held back
    scale = charter.decide(
        {**RESTART, "action": "infra.scale", "args": {"service": "search", "replicas": 3}}
    )
    assert "breaker_open" not in codes(scale)
