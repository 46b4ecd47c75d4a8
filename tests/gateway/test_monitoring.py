"""The closed loop through a real service: figures, alerts, demotion, proposal, acceptance.

The example policy's `outcomes-failing` alert fires when an agent's success rate is
below 0.8 on 20 outcomes in an hour; its `demote-on-drift-or-failures` autonomy rule
demotes the agent one level when it is below 0.7, and proposes the level back after 100
clean decisions. Both are judged by `Monitors.evaluate`, which `charter serve` runs every
few seconds on the process that leads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from charter import Charter, Verdict
from charter.errors import NotFound
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.store import open_store, verify_store
from charter.testing import FakeClock

NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}
#: Risk 40: level 2 (max 45) takes it alone, level 1 (max 20) does not.
BIG_REFUND = {
    "agent": "support-bot",
    "action": "payments.refund",
    "args": {"order_id": "ord-9", "amount": 700, "currency": "USD"},
    "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(tick=0.01)


@pytest.fixture
def charter(store_target: str, clock: FakeClock) -> Iterator[Charter]:
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as service:
        yield service
    with open_store(store_target, read_only=True) as store:
        assert verify_store(store).ok


def note(charter: Charter, *, success: bool) -> None:
    record = charter.decide(NOTE)
    assert record.verdict is Verdict.ALLOW, record.decision.reasons
    assert record.grant is not None
    charter.redeem(record.grant.id, record.grant.token, NOTE["args"])
    charter.record_outcome(record.id, success=success, error=None if success else "crm down")


def entries(charter: Charter, kind: str) -> list[dict[str, Any]]:
    return [e.payload_object() for e in charter.store.entries(kinds={kind})]


def test_failing_outcomes_fire_the_alert_and_demote_the_agent(
    charter: Charter, clock: FakeClock
) -> None:
    for i in range(20):
        note(charter, success=i % 5 == 0)  # 4 of 20 succeed
    clock.advance(minutes=1)
    (figures,) = charter.monitors.figures(agent="support-bot", level="agent")
    assert (figures.outcomes, figures.success_rate) == (20, 0.2)
    recorded = charter.monitors.evaluate()
    assert {e.kind for e in recorded} == {events.ALERT_FIRED, events.AUTONOMY_CHANGED}
    fired = [a for a in charter.monitors.alerts() if a["alert"] == "outcomes-failing"]
    assert len(fired) == 1
    assert fired[0]["agent"] == "support-bot"
    assert fired[0]["runbook"] == "runbooks/failures.md"
    assert (fired[0]["value"], fired[0]["sample"]) == (0.2, 20)
    (demoted,) = entries(charter, events.AUTONOMY_CHANGED)
    assert demoted["by"] == "controller"
    assert demoted["rule"] == "demote-on-drift-or-failures"
    assert (demoted["from"], demoted["level"]) == (2, 1)
    assert "success_rate is 0.2 on 20" in demoted["reason"]
    assert charter.autonomy("support-bot") == 1
    held = charter.decide(BIG_REFUND)
    assert held.verdict is Verdict.REQUIRE_APPROVAL
    assert "over_autonomy" in {r.code for r in held.decision.reasons}
    # judged again at once: the alert fires once, and the same bad hour demotes no further
    clock.advance(seconds=10)
    assert charter.monitors.evaluate() == []
    assert charter.autonomy("support-bot") == 1


def test_clean_work_earns_a_proposal_that_a_person_accepts(
    charter: Charter, clock: FakeClock
) -> None:
    for i in range(20):
        note(charter, success=i % 5 == 0)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    assert charter.autonomy("support-bot") == 1
    clock.advance(minutes=1)
    for _ in range(60):
        note(charter, success=True)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    assert charter.monitors.proposals() == []  # 60 of the 100 clean decisions
    for _ in range(40):
        note(charter, success=True)
    clock.advance(minutes=1)
    recorded = charter.monitors.evaluate()
    assert events.AUTONOMY_PROPOSED in {e.kind for e in recorded}
    (proposal,) = charter.monitors.proposals()
    assert (proposal["agent"], proposal["level"], proposal["from"]) == ("support-bot", 2, 1)
    assert proposal["decisions"] >= 100
    assert charter.autonomy("support-bot") == 1  # only proposed: a person decides
    charter.monitors.evaluate()
    assert len(entries(charter, events.AUTONOMY_PROPOSED)) == 1  # proposed once
    charter.monitors.accept("support-bot", by="key:rita")
    assert charter.autonomy("support-bot") == 2
    changes = entries(charter, events.AUTONOMY_CHANGED)
    assert changes[-1]["by"] == "key:rita"
    assert changes[-1]["level"] is None  # the bundle's own level again
    assert charter.monitors.proposals() == []
    with pytest.raises(NotFound):
        charter.monitors.accept("support-bot", by="key:rita")
    assert charter.decide(BIG_REFUND).verdict is Verdict.ALLOW


def test_a_declined_proposal_waits_for_more_clean_work(charter: Charter, clock: FakeClock) -> None:
    for i in range(20):
        note(charter, success=i % 5 == 0)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    clock.advance(minutes=1)
    for _ in range(100):
        note(charter, success=True)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    charter.monitors.decline("support-bot", by="key:rita", reason="not before the audit")
    assert charter.monitors.proposals() == []
    (declined,) = entries(charter, events.AUTONOMY_DECLINED)
    assert declined["reason"] == "not before the audit"
    clock.advance(minutes=1)
    assert charter.monitors.evaluate() == []  # the 100 before the decline count no more
    assert charter.autonomy("support-bot") == 1


def test_a_restarted_service_keeps_the_alert_and_the_controllers_memory(
    store_target: str, clock: FakeClock
) -> None:
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as first:
        for i in range(20):
            note(first, success=i % 5 == 0)
        clock.advance(minutes=1)
        first.monitors.evaluate()
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as second:
        assert [a["alert"] for a in second.monitors.alerts()] == ["outcomes-failing"]
        demotion = second.monitors.demotion("support-bot")
        assert demotion is not None
        assert demotion["rule"] == "demote-on-drift-or-failures"
        (figures,) = second.monitors.figures(agent="support-bot", level="agent")
        assert figures.outcomes == 20
        clock.advance(seconds=10)
        assert second.monitors.evaluate() == []  # nothing fires or demotes twice


def test_the_alert_resolves_when_the_figure_clears(charter: Charter, clock: FakeClock) -> None:
    for i in range(20):
        note(charter, success=i % 5 == 0)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    clock.advance(hours=1, minutes=2)  # the failures leave the window
    for _ in range(25):
        note(charter, success=True)
    clock.advance(minutes=1)
    recorded = charter.monitors.evaluate()
    resolved = [e.payload for e in recorded if e.kind == events.ALERT_RESOLVED]
    assert [r["alert"] for r in resolved] == ["outcomes-failing"]
    assert resolved[0]["fired_at"] is not None
    assert charter.monitors.alerts() == []


def test_figures_follow_the_ledger_when_no_thread_does(charter: Charter, clock: FakeClock) -> None:
    # `charter serve --no-monitors`: nothing folds in the background, yet the figures a
    # page or `/v1/monitors` asks for include every decision recorded since they were built.
    assert charter.monitors.figures(agent="support-bot", level="agent") == []
    for _ in range(3):
        note(charter, success=True)
    clock.advance(minutes=1)
    (figures,) = charter.monitors.figures(agent="support-bot", level="agent")
    assert (figures.decisions, figures.outcomes, figures.success_rate) == (3, 3, 1.0)
