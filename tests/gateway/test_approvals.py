"""Approvals in the embedded Charter: routing, quorum, separation of duties, timers."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from charter import Charter, load_bundle
from charter.errors import (
    Conflict,
    Forbidden,
    GrantRefused,
    NotFound,
    RequestInvalid,
    TooManyPending,
)
from charter.examples import EXAMPLE_POLICY
from charter.service import Principal
from charter.testing import FakeClock, sequential_ids

BUNDLE = load_bundle(EXAMPLE_POLICY)

ALICE = Principal("key_a", "reviewer", name="alice@example.com", groups=("finance",))
BOB = Principal("key_b", "reviewer", name="bob@example.com", groups=("finance",))
CAROL = Principal("key_c", "reviewer", name="carol@example.com", groups=("finance-managers",))
DAVE = Principal("key_d", "reviewer", name="dave@example.com", groups=("finance-managers",))
OPS = Principal("key_o", "reviewer", name="olga@example.com", groups=("ops",))
SRE = Principal("key_s", "reviewer", name="sam@example.com", groups=("sre",))
AGENT = Principal("key_g", "agent", agent="support-bot", groups=("finance",))
OWNER = Principal("key_w", "reviewer", name="support-lead@example.com", groups=("finance",))


def refund(amount: float = 2500, order: str = "ord-1", **extra: Any) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": order, "amount": amount, "currency": "USD", **extra},
        "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def charter(store_target: str, clock: FakeClock) -> Charter:
    with Charter(BUNDLE, store_target, clock=clock, ids=sequential_ids()) as c:
        yield c


def kinds(charter: Charter) -> list[str]:
    return [e.kind for e in charter.store.entries()]


def approval_of(charter: Charter, record: Any) -> str:
    assert record.approval is not None
    assert record.approval["state"] == "pending"
    return str(record.approval["id"])


class TestOpening:
    def test_a_decision_needing_approval_opens_one_in_the_same_transaction(
        self, charter: Charter
    ) -> None:
        """The decision and `approval.opened` are adjacent entries; the state is pending."""
        record = charter.decide(refund())
        entries = list(charter.store.entries(after=record.seq - 1))
        assert [e.kind for e in entries] == ["decision", "approval.opened"]
        opened = entries[1].payload_object()
        assert opened["decision_id"] == record.id
        assert opened["route"]["id"] == "finance-review"
        assert opened["deadline"] == "2026-03-02T14:00:00.000000Z"  # 10:00 + the 4 h SLA
        view = charter.get_decision(record.id)
        assert view is not None
        assert view.state == "pending"
        assert not view.settled
        approval = charter.get_approval(approval_of(charter, record))
        assert approval is not None
        body = approval.to_json()
        assert body["args"] == {"order_id": "ord-1", "amount": 2500, "currency": "USD"}
        assert body["context"]["rationale"] == "damaged item, photo attached"
        assert body["agent_profile"]["owner"] == "support-lead@example.com"
        assert [f["id"] for f in body["factors"]] == ["refund-over-100", "refund-over-500"]
        assert "large-refunds-need-finance" in [r.get("rule") for r in body["reasons"]]

    def test_an_allowed_decision_opens_nothing(self, charter: Charter) -> None:
        record = charter.decide(refund(amount=20))
        assert record.approval is None
        assert "approval.opened" not in kinds(charter)

    def test_an_escalation_carries_its_runbook(self, charter: Charter) -> None:
        """An `escalate` decision opens an escalation with the runbook's text."""
        record = charter.decide(
            {
                "agent": "infra-bot",
                "action": "db.migrate",
                "args": {"database": "orders", "migration": "0042_add_index"},
                "context": {"environment": "prod", "rationale": "index for the slow report"},
            }
        )
        assert record.verdict.value == "escalate"
        view = charter.get_approval(approval_of(charter, record))
        assert view is not None
        body = view.to_json()
        assert body["kind"] == "escalation"
        assert body["runbook"] == "runbooks/prod-migration.md"
        assert body["runbook_text"] == BUNDLE.runbooks["runbooks/prod-migration.md"]
        assert charter.get_decision(record.id).state == "escalated"  # type: ignore[union-attr]


class TestApproving:
    def test_a_reviewer_in_the_group_approves_and_the_grant_runs_once(
        self, charter: Charter
    ) -> None:
        """Approval issues a grant bound to the arguments; the agent redeems it once."""
        record = charter.decide(refund())
        view = charter.approve(approval_of(charter, record), ALICE, note="photos check out")
        assert view.state == "approved"
        decision = charter.get_decision(record.id)
        assert decision is not None
        assert decision.state == "approved"
        assert decision.settled
        grant = decision.record.grant
        assert grant is not None
        args = {"order_id": "ord-1", "amount": 2500, "currency": "USD"}
        redeemed = charter.redeem(grant.id, grant.token, args)
        assert redeemed.decision_id == record.id
        with pytest.raises(GrantRefused) as again:
            charter.redeem(grant.id, grant.token, args)
        assert again.value.code == "grant_used"
        approved = [
            e.payload_object() for e in charter.store.entries() if e.kind == "approval.approved"
        ]
        assert approved[0]["reviewer"] == "alice@example.com"
        assert approved[0]["complete"] is True
        assert approved[0]["grant"]["args_hash"] == grant.args_hash

    def test_a_reviewer_outside_the_groups_is_refused(self, charter: Charter) -> None:
        record = charter.decide(refund())
        head = charter.store.head().seq
        with pytest.raises(Forbidden) as refused:
            charter.approve(approval_of(charter, record), OPS)
        assert refused.value.code == "not_in_group"
        assert charter.store.head().seq == head

    def test_an_agent_key_can_never_approve(self, charter: Charter) -> None:
        """Even an agent key that claims the right group is refused."""
        record = charter.decide(refund())
        with pytest.raises(Forbidden) as refused:
            charter.approve(approval_of(charter, record), AGENT)
        assert refused.value.code == "role_cannot_review"

    def test_the_owner_cannot_be_the_only_approver(self, charter: Charter) -> None:
        """The agent's owner's vote counts, but someone else must approve too."""
        record = charter.decide(refund())
        aid = approval_of(charter, record)
        view = charter.approve(aid, OWNER)
        assert view.state == "pending"
        last = list(charter.store.entries())[-1].payload_object()
        assert last["waiting_for"] == "a reviewer other than the agent's owner"
        assert charter.approve(aid, ALICE).state == "approved"

    def test_a_quorum_of_two_needs_two_people(self, charter: Charter, clock: FakeClock) -> None:
        """After escalation to finance-managers (2 approvals) one person cannot count twice."""
        record = charter.decide(refund())
        aid = approval_of(charter, record)
        clock.advance(hours=4)
        [escalated] = charter.fire_due()
        assert escalated.approval["route"]["id"] == "finance-managers"
        assert escalated.approval["tier"] == 1
        with pytest.raises(Forbidden):
            charter.approve(aid, ALICE)  # finance, not finance-managers
        assert charter.approve(aid, CAROL).state == "pending"
        with pytest.raises(Conflict) as twice:
            charter.approve(aid, CAROL)
        assert twice.value.code == "already_voted"
        same_person = Principal(
            "key_c2", "reviewer", name="carol@example.com", groups=("finance-managers",)
        )
        with pytest.raises(Conflict):
            charter.approve(aid, same_person)  # another key of the same person
        assert charter.approve(aid, DAVE).state == "approved"

    def test_a_settled_approval_takes_no_more_steps(self, charter: Charter) -> None:
        record = charter.decide(refund())
        aid = approval_of(charter, record)
        charter.deny(aid, ALICE, reason="the order was already refunded")
        with pytest.raises(Conflict) as settled:
            charter.approve(aid, BOB)
        assert settled.value.code == "not_pending"

    def test_unknown_approval(self, charter: Charter) -> None:
        with pytest.raises(NotFound):
            charter.approve("apr_nope", ALICE)


class TestDenying:
    def test_a_denial_reaches_the_decision_with_its_reason(self, charter: Charter) -> None:
        record = charter.decide(refund())
        view = charter.deny(approval_of(charter, record), ALICE, reason="duplicate of ord-0")
        assert view.state == "denied"
        decision = charter.get_decision(record.id)
        assert decision is not None
        assert decision.state == "denied"
        assert decision.record.grant is None
        assert decision.record.approval is not None
        assert decision.record.approval["resolution"]["reason"] == "duplicate of ord-0"

    def test_a_denial_needs_a_reason(self, charter: Charter) -> None:
        record = charter.decide(refund())
        with pytest.raises(RequestInvalid) as bad:
            charter.deny(approval_of(charter, record), ALICE, reason="  ")
        assert bad.value.field == "reason"


class TestModifying:
    def test_a_modification_is_decided_again_and_binds_the_grant(self, charter: Charter) -> None:
        """The new arguments are re-decided (recorded), the diff kept, the grant bound to them."""
        record = charter.decide(refund(amount=2500))
        aid = approval_of(charter, record)
        new = {"order_id": "ord-1", "amount": 900, "currency": "USD"}
        view = charter.modify(aid, ALICE, new, note="partial refund")
        body = view.to_json()
        assert body["state"] == "approved"  # the modifier's change is their vote; quorum 1
        assert body["args"] == new
        assert body["original_args"]["amount"] == 2500
        [change] = body["modifications"]
        assert change["diff"] == [
            {"field": "amount", "op": "changed", "before": 2500, "after": 900}
        ]
        redecision = [e.payload_object() for e in charter.store.entries() if e.kind == "decision"][
            -1
        ]
        assert redecision["modifies"] == aid
        assert redecision["budgets"] == []  # a re-decision spends no budget
        grant = charter.get_decision(record.id).record.grant  # type: ignore[union-attr]
        assert grant is not None
        with pytest.raises(GrantRefused) as old:
            charter.redeem(
                grant.id, grant.token, {"order_id": "ord-1", "amount": 2500, "currency": "USD"}
            )
        assert old.value.code == "args_mismatch"
        charter.redeem(grant.id, grant.token, new)
        assert charter.replay().ok

    def test_arguments_breaking_the_contract_are_refused_and_nothing_recorded(
        self, charter: Charter
    ) -> None:
        record = charter.decide(refund())
        aid = approval_of(charter, record)
        head = charter.store.head().seq
        with pytest.raises(RequestInvalid) as bad:
            charter.modify(aid, ALICE, {"order_id": "ord-1", "amount": -5, "currency": "USD"})
        assert bad.value.field == "args"
        assert "contract" in bad.value.message
        assert charter.store.head().seq == head
        assert charter.get_approval(aid).state == "pending"  # type: ignore[union-attr]

    def test_a_modification_the_policy_denies_is_refused(self, charter: Charter) -> None:
        """Above the role's envelope condition (amount <= 10000) the policy denies it."""
        record = charter.decide(refund())
        head = charter.store.head().seq
        with pytest.raises(RequestInvalid):
            charter.modify(
                approval_of(charter, record),
                ALICE,
                {"order_id": "ord-1", "amount": 20000, "currency": "USD"},
            )
        assert charter.store.head().seq == head

    def test_unchanged_arguments_are_not_a_modification(self, charter: Charter) -> None:
        record = charter.decide(refund())
        with pytest.raises(RequestInvalid):
            charter.modify(
                approval_of(charter, record),
                ALICE,
                {"order_id": "ord-1", "amount": 2500, "currency": "USD"},
            )


class TestTimers:
    def test_nothing_fires_before_the_deadline(self, charter: Charter, clock: FakeClock) -> None:
        charter.decide(refund())
        clock.advance(hours=3, minutes=59)
        assert charter.fire_due() == []

    def test_timeout_moves_to_the_next_tier_then_expires(
        self, charter: Charter, clock: FakeClock
    ) -> None:
        """finance-review (4 h) → finance-managers (8 h) → expired: the decision is refused."""
        record = charter.decide(refund())
        clock.advance(hours=4)
        [first] = charter.fire_due()
        assert first.approval["deadline"] == "2026-03-02T22:00:00.000000Z"  # 14:00 + 8 h
        clock.advance(hours=8)
        [second] = charter.fire_due()
        assert second.state == "expired"
        decision = charter.get_decision(record.id)
        assert decision is not None
        assert decision.state == "expired"
        assert kinds(charter)[-2:] == ["approval.escalated", "approval.expired"]
        assert charter.fire_due() == []

    def test_overdue_approvals_fire_once_after_a_restart(
        self, store_target: str, clock: FakeClock
    ) -> None:
        """Pending approvals survive a restart; what fell due meanwhile fires once."""
        db = store_target
        with Charter(BUNDLE, db, clock=clock) as first:
            ids = [first.decide(refund(order=f"ord-{i}")).id for i in range(5)]
        clock.advance(hours=5)
        with Charter(BUNDLE, db, clock=clock) as second:
            assert second.count_approvals() == 5
            fired = second.fire_due()
            assert len(fired) == 5
            assert {v.approval["tier"] for v in fired} == {1}
        with Charter(BUNDLE, db, clock=clock) as third:
            assert third.fire_due() == []
            escalations = [e for e in third.store.entries() if e.kind == "approval.escalated"]
            assert sorted(e.payload_object()["decision_id"] for e in escalations) == sorted(ids)

    def test_the_timer_thread_fires_deadlines(self, store_target: str) -> None:
        """`start_timers` runs deadlines with the clock Charter was given."""
        clock = FakeClock()
        with Charter(BUNDLE, store_target, clock=clock) as charter:
            # scaling to zero goes to ops-review: 2 h, then deny
            record = charter.decide(
                {
                    "agent": "infra-bot",
                    "action": "infra.scale",
                    "args": {"service": "search", "replicas": 0},
                    "context": {"rationale": "the service is being retired today"},
                }
            )
            settled = threading.Event()
            charter.watch(record.id, settled.set)
            charter.start_timers(interval=0.01)
            assert not settled.wait(0.1)
            clock.advance(hours=2)
            assert settled.wait(5)
            assert charter.get_decision(record.id).state == "expired"  # type: ignore[union-attr]


class TestFloods:
    def test_the_pending_cap_refuses_and_records(self, store_target: str, clock: FakeClock) -> None:
        with Charter(BUNDLE, store_target, clock=clock, max_pending=2) as charter:
            charter.decide(refund(order="ord-1"))
            charter.decide(refund(order="ord-2"))
            with pytest.raises(TooManyPending) as refused:
                charter.decide(refund(order="ord-3"))
            decision = charter.get_decision(refused.value.decision_id)
            assert decision is not None
            assert decision.state == "denied"
            last = list(charter.store.entries())[-1]
            assert last.kind == "approval.refused"
            assert last.payload_object()["code"] == "too_many_pending"
            assert charter.count_approvals() == 2
            assert charter.replay().ok

    def test_similar_approvals_are_decided_as_a_batch(self, charter: Charter) -> None:
        ids = [
            approval_of(charter, charter.decide(refund(order=f"ord-{i}", amount=2000 + i)))
            for i in range(3)
        ]
        other = approval_of(charter, charter.decide(refund(order="ord-9", reason="damaged")))
        similar = {v.id for v in charter.similar_approvals(ids[0])}
        assert similar == set(ids)
        head = charter.store.head().seq
        with pytest.raises(RequestInvalid):
            charter.decide_batch([*ids, other], ALICE, approve=True)
        assert charter.store.head().seq == head  # all or none
        views = charter.decide_batch(ids, ALICE, approve=False, reason="fraud pattern")
        assert {v.state for v in views} == {"denied"}
        assert charter.get_approval(other).state == "pending"  # type: ignore[union-attr]


class TestWaiting:
    def test_wait_returns_when_a_reviewer_approves(self, charter: Charter) -> None:
        record = charter.decide(refund())
        aid = approval_of(charter, record)
        timer = threading.Timer(0.05, lambda: charter.approve(aid, ALICE))
        timer.start()
        view = charter.wait_decision(record.id, timeout=5)
        timer.join()
        assert view is not None
        assert view.state == "approved"

    def test_wait_times_out_on_a_pending_decision(self, charter: Charter) -> None:
        record = charter.decide(refund())
        view = charter.wait_decision(record.id, timeout=0.05)
        assert view is not None
        assert view.state == "pending"


class TestIdempotencyRetention:
    def test_a_key_is_kept_for_its_retention_then_decides_anew(
        self, store_target: str, clock: FakeClock
    ) -> None:
        with Charter(BUNDLE, store_target, clock=clock, idempotency_ttl=3600) as charter:
            first = charter.decide(refund(amount=20), idempotency_key="k-1")
            clock.advance(minutes=59)
            again = charter.decide(refund(amount=20), idempotency_key="k-1")
            assert again.id == first.id
            assert again.replayed
            clock.advance(minutes=2)
            later = charter.decide(refund(amount=20), idempotency_key="k-1")
            assert later.id != first.id
            assert not later.replayed
            # the newest use is the one in force from now on
            assert charter.decide(refund(amount=20), idempotency_key="k-1").id == later.id

    def test_the_default_retention_is_at_least_a_day(
        self, charter: Charter, clock: FakeClock
    ) -> None:
        first = charter.decide(refund(amount=20), idempotency_key="k-2")
        clock.advance(hours=23, minutes=59)
        assert charter.decide(refund(amount=20), idempotency_key="k-2").id == first.id


def test_times_are_recorded_in_utc(charter: Charter) -> None:
    record = charter.decide(refund())
    approval = charter.get_approval(approval_of(charter, record))
    assert approval is not None
    opened = dt.datetime.fromisoformat(approval.approval["opened_at"])
    assert opened.tzinfo is not None
    assert opened.utcoffset() == dt.timedelta(0)


def test_the_group_filter_matches_whole_names(charter: Charter) -> None:
    """`finance` lists finance's approvals; a LIKE wildcard or a prefix matches nothing."""
    charter.decide(refund())
    assert charter.count_approvals(group="finance") == 1
    for other in ("fin_nce", "fin%", "financ", "finance-managers"):
        assert charter.count_approvals(group=other) == 0
        assert charter.approvals(group=other) == []


class TestPersonalData:
    """Approvals keep personal data only while someone still needs it."""

    def test_a_denied_approval_keeps_only_the_ledgers_form(self, charter: Charter) -> None:
        record = charter.decide(refund(customer_email="ann@example.com"))
        aid = approval_of(charter, record)
        pending = charter.get_approval(aid)
        assert pending is not None
        assert pending.approval["args"]["customer_email"] == "ann@example.com"  # to decide on
        charter.deny(aid, ALICE, reason="no")
        denied = charter.get_approval(aid)
        assert denied is not None
        assert denied.approval["args"]["customer_email"].startswith("sha256:")
        assert denied.approval["original_args"]["customer_email"].startswith("sha256:")
        stored = charter.store.approval_row(approval_id=aid)
        assert stored is not None
        assert "ann@example.com" not in stored["body"]

    def test_approved_arguments_stay_whole_until_the_grant_is_redeemed(
        self, charter: Charter
    ) -> None:
        record = charter.decide(refund(customer_email="ann@example.com"))
        aid = approval_of(charter, record)
        charter.modify(
            aid,
            ALICE,
            {"order_id": "ord-1", "amount": 900, "currency": "USD", "customer_email": "bo@x.io"},
        )
        decision = charter.get_decision(record.id)
        assert decision is not None
        assert decision.record.approval is not None
        approved = decision.record.approval["args"]
        assert approved["customer_email"] == "bo@x.io"  # the agent runs these
        grant = decision.record.grant
        assert grant is not None
        charter.redeem(grant.id, grant.token, approved)
        stored = charter.store.approval_row(approval_id=aid)
        assert stored is not None
        assert "bo@x.io" not in stored["body"]
        assert "ann@example.com" not in stored["body"]
        view = charter.get_approval(aid)
        assert view is not None
        [change] = view.approval["modifications"]
        assert {"field": "customer_email", "op": "changed", "redacted": True} in change["diff"]


def test_deadlines_of_approvals_another_process_opened_fire_too(
    store_target: str, clock: FakeClock
) -> None:
    """A server fires the deadline of an approval the command line opened meanwhile."""
    db = store_target
    with Charter(BUNDLE, db, clock=clock) as server:
        with Charter(BUNDLE, db, clock=clock) as command_line:
            record = command_line.decide(refund())
        clock.advance(hours=4)
        [fired] = server.fire_due()
        assert fired.approval["decision_id"] == record.id
        assert fired.approval["route"]["id"] == "finance-managers"
        assert server.fire_due() == []


def test_a_wait_sees_an_approval_settled_by_another_process(
    store_target: str, clock: FakeClock
) -> None:
    """No callback crosses processes: the wait reads the decision again every second."""
    db = store_target
    with Charter(BUNDLE, db, clock=clock) as agent_side, Charter(BUNDLE, db, clock=clock) as ui:
        record = agent_side.decide(refund())
        aid = approval_of(agent_side, record)
        timer = threading.Timer(0.2, lambda: ui.approve(aid, ALICE))
        timer.start()
        view = agent_side.wait_decision(record.id, timeout=10)
        timer.join()
        assert view is not None
        assert view.state == "approved"
