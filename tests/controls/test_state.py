"""The state fold: what a service holds is the fold of its ledger, at start and while running."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from charter import AgentProfile, Charter, Verdict, load_bundle
from charter.controls import ServiceState
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.model import Halt
from charter.testing import FakeClock, sequential_ids

BUNDLE = load_bundle(EXAMPLE_POLICY)
AT = "2026-03-02T08:00:00.000000Z"


def refund(amount: float = 40) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": "ord-1", "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
    }


def test_apply_returns_a_new_state_and_leaves_the_old_one() -> None:
    """Halts, autonomy and the registry change by replacement, never in place."""
    start = ServiceState()
    halted = start.apply_event(events.halt(AT, "agent", "support-bot", "runaway", "ops"))
    assert start.halts == {}
    assert halted.halts == {("agent", "support-bot"): Halt("agent", "support-bot", "runaway")}
    resumed = halted.apply_event(events.resume(AT, "agent", "support-bot", "ops"))
    assert resumed.halts == {}
    assert halted.halts  # still as it was
    raised = resumed.apply_event(events.autonomy_changed(AT, "support-bot", 3, "trusted", "ops"))
    restored = raised.apply_event(events.autonomy_changed(AT, "support-bot", None, "back", "ops"))
    assert raised.autonomy == {"support-bot": 3}
    assert restored.autonomy == {}


def test_changes_folded_in_any_order_end_as_the_ledger_orders_them() -> None:
    """A replica reads another's entries after its own: the newest change still wins."""
    changes = [
        (1, events.halt(AT, "agent", "support-bot", "runaway", "ops")),
        (2, events.autonomy_changed(AT, "support-bot", 3, "trusted", "ops")),
        (3, events.resume(AT, "agent", "support-bot", "ops")),
        (4, events.halt(AT, "all", None, "incident", "ops")),
        (5, events.autonomy_changed(AT, "support-bot", 1, "slip", "ops")),
    ]
    in_order = ServiceState()
    for seq, event in changes:
        in_order = in_order.apply_event(event, seq)
    assert in_order.halts == {("all", None): Halt("all", None, "incident")}
    assert in_order.autonomy == {"support-bot": 1}
    for order in ([4, 2, 0, 1, 3], [3, 4, 1, 2, 0], [0, 0, 4, 3, 3, 2, 1]):
        shuffled = ServiceState()
        for i in order:
            shuffled = shuffled.apply_event(changes[i][1], changes[i][0])
        assert shuffled.halts == in_order.halts
        assert shuffled.autonomy == in_order.autonomy
    # Without a position (an event not yet committed) a change applies as it comes.
    assert in_order.apply_event(changes[2][1]).halts == in_order.halts


def test_kinds_that_carry_no_state_pass_through() -> None:
    """An outcome, a key or an approval step leaves the state as it is."""
    state = ServiceState()
    for event in (
        events.key_revoked(AT, "k1", "ops"),
        events.grant_refused(AT, "g_1", None, "grant_unknown"),
        events.approval_refused(AT, "d1", "no_route", "nobody"),
    ):
        assert state.apply_event(event) is state


def test_a_restarted_service_holds_what_the_running_one_held(store_target: str) -> None:
    """Halts, overrides, the registry and budget spending survive a restart exactly."""
    clock = FakeClock()
    db = store_target
    with Charter(BUNDLE, db, clock=clock, ids=sequential_ids()) as charter:
        charter.halt("action", "mail.send", reason="spam wave", by="ops")
        charter.halt("agent", "ops-bot", reason="drift", by="ops")
        charter.resume("agent", "ops-bot", by="ops")
        charter.set_autonomy("support-bot", 1, reason="after an incident", by="ops")
        charter.put_agent(
            AgentProfile("new-bot", "support", "lead@example.com", "m", "1", 2), by="ops"
        )
        for _ in range(3):
            assert charter.decide(refund()).verdict is Verdict.ALLOW
        before = (charter.halts, charter.autonomy("support-bot"), charter.agents())
        budgets_before = _budgets(charter)
    with Charter(BUNDLE, db, clock=clock, ids=sequential_ids("r")) as reopened:
        assert (reopened.halts, reopened.autonomy("support-bot"), reopened.agents()) == before
        # The probe that read the budgets before counted once more itself.
        after = _budgets(reopened)["refunds-per-hour"]
        assert after["count"] == budgets_before["refunds-per-hour"]["count"] + 1 == 4
        folded = ServiceState.fold(reopened.store.entries())
        assert tuple(folded.halts.values()) == reopened.halts


def _budgets(charter: Charter) -> dict[str, Any]:
    """The budget usage the next refund decision records (its state)."""
    record = charter.decide(refund(1))
    entry = charter.store.entry(record.seq)
    assert entry is not None
    budgets: dict[str, Any] = entry.payload_object()["state"]["budgets"]
    return budgets


def test_decisions_before_the_cutoff_are_skipped_undecoded() -> None:
    """A decision older than every budget window never counts again, and is not read."""

    class Undecodable:
        kind = events.DECISION
        at = "2026-03-01T00:00:00.000000Z"
        payload = '{"decision":{"verdict":"allow"}}'  # read as text only, for a trial's mark

        def payload_object(self) -> dict[str, Any]:
            raise AssertionError("a decision before the cutoff was decoded")

    state = ServiceState.fold([Undecodable()], budget_cutoff="2026-03-02T00:00:00.000000Z")  # type: ignore[list-item]
    assert (
        state.spending.state(
            "support-bot", [("refunds-per-hour", 3600)], dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
        )
        == {}
    )
    with pytest.raises(AssertionError):
        ServiceState.fold([Undecodable()])  # type: ignore[list-item]
