"""Two services on one ledger: what one changes is in force in the other once it follows.

Halts, resumes, autonomy changes, agent updates, key revocations, deploys, budget
spending and approval steps appended by one process reach the other through the ledger
(`Charter.catch_up`, run four times a second by `charter serve`, and at once when
PostgreSQL announces an append), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from _postgres import Cluster
from charter import Charter, Verdict, load_bundle
from charter.errors import Conflict, IdempotencyConflict
from charter.examples import EXAMPLE_POLICY
from charter.service import Principal
from charter.store import open_store, verify_store
from charter.testing import FakeClock

FINANCE = Principal("key_a", "reviewer", name="alice@example.com", groups=("finance",))

NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


def refund(amount: float, order: str = "ord-1") -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": order, "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def two(store_target: str, clock: FakeClock) -> Iterator[tuple[Charter, Charter]]:
    """Services `a` and `b` on one fresh ledger and one clock; the chain verifies after."""
    with (
        Charter(EXAMPLE_POLICY, store_target, clock=clock) as a,
        Charter(EXAMPLE_POLICY, store_target, clock=clock) as b,
    ):
        yield a, b
    with open_store(store_target, read_only=True) as store:
        assert verify_store(store).ok


def policy_with(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the example policy with one text of `risk.yaml` replaced."""
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, folder)
    risk = folder / "risk.yaml"
    content = risk.read_text()
    assert old in content
    risk.write_text(content.replace(old, new, 1))
    return folder


def verdict(charter: Charter, request: dict[str, Any] = NOTE) -> Verdict:
    return charter.decide(request).decision.verdict


def test_a_halt_made_on_one_service_denies_on_the_other(two: tuple[Charter, Charter]) -> None:
    a, b = two
    assert verdict(b) is Verdict.ALLOW
    a.halt("agent", "support-bot", reason="runaway refunds", by="ops")
    assert verdict(b) is Verdict.ALLOW  # not read yet
    assert b.catch_up() == 1
    record = b.decide(NOTE)
    assert record.decision.verdict is Verdict.DENY
    assert "runaway refunds" in " ".join(r.message for r in record.decision.reasons)
    a.resume("agent", "support-bot", by="ops")
    b.catch_up()
    assert verdict(b) is Verdict.ALLOW


def test_the_position_moves_past_entries_that_change_nothing(
    two: tuple[Charter, Charter],
) -> None:
    a, b = two
    for _ in range(3):
        a.decide(NOTE)
    assert b.catch_up() == 0
    assert b._follower.position == a.store.head().seq
    a.halt("all", reason="incident", by="ops")
    assert b.catch_up() == 1
    assert b.catch_up() == 0


def test_autonomy_changes_and_agents_follow(two: tuple[Charter, Charter]) -> None:
    a, b = two
    a.set_autonomy("support-bot", 0, reason="new model", by="ops")
    b.catch_up()
    assert b.autonomy("support-bot") == 0
    a.set_autonomy("support-bot", None, reason="back", by="ops")
    b.catch_up()
    assert b.autonomy("support-bot") == a.autonomy("support-bot")


def test_both_end_where_the_ledger_order_says(two: tuple[Charter, Charter]) -> None:
    """Each folds its own change first and the other's later: both agree after."""
    a, b = two
    a.halt("all", reason="incident", by="ops")
    b.resume("all", by="ops")  # later in the ledger: the halt is lifted
    assert b.halts == ()
    b.catch_up()  # reads a's older halt: ignored
    assert b.halts == ()
    a.catch_up()
    assert a.halts == ()
    assert verdict(a) is Verdict.ALLOW
    assert verdict(b) is Verdict.ALLOW


def test_a_key_revoked_on_one_service_stops_on_the_other(two: tuple[Charter, Charter]) -> None:
    a, b = two
    key_id, secret = a.keys.create("agent", agent="support-bot", label="bot")
    assert b.keys.authenticate(secret) is not None  # cached for up to a second
    a.keys.revoke(key_id, by="ops")
    b.catch_up()
    assert b.keys.authenticate(secret) is None


def test_following_in_the_background_keeps_within_a_second(
    two: tuple[Charter, Charter],
) -> None:
    a, b = two
    b.start_following(0.05)
    try:
        a.halt("action", "crm.note", reason="bad notes", by="ops")
        started = time.monotonic()
        while b.halts == () and time.monotonic() - started < 1.0:
            time.sleep(0.01)
        assert b.halts != ()
        assert verdict(b) is Verdict.DENY
    finally:
        b.stop_following()


def test_a_budget_counts_the_decisions_of_every_service(
    store_target: str, clock: FakeClock, tmp_path: Path
) -> None:
    """Three refunds an hour, made on either service: the fourth is refused on both."""
    policy = policy_with(tmp_path, "max_count: 40", "max_count: 3")
    with (
        Charter(policy, store_target, clock=clock) as a,
        Charter(policy, store_target, clock=clock) as b,
    ):
        assert a.decide(refund(20, "ord-1")).verdict is Verdict.ALLOW
        assert b.decide(refund(20, "ord-2")).verdict is Verdict.ALLOW
        assert a.decide(refund(20, "ord-3")).verdict is Verdict.ALLOW
        assert b.catch_up() == 2  # a's two refunds; b's own is counted already
        assert a.catch_up() == 1
        for charter in (a, b):
            record = charter.decide(refund(20, "ord-4"))
            assert record.verdict is not Verdict.ALLOW
            assert "budget" in " ".join(r.message for r in record.decision.reasons)
        clock.advance(hours=1)
        assert b.decide(refund(20, "ord-5")).verdict is Verdict.ALLOW  # the window moved on


def test_a_deploy_on_one_service_is_live_on_the_other(
    two: tuple[Charter, Charter], tmp_path: Path
) -> None:
    a, b = two
    bundle = load_bundle(policy_with(tmp_path, "max_count: 40", "max_count: 39"))
    a.deploy(bundle)
    assert b.bundle.version != bundle.version
    assert b.catch_up() == 1
    assert b.bundle.version == bundle.version
    b.catch_up()  # nothing new: stays
    assert b.bundle.version == bundle.version


def test_an_approval_settled_on_one_service_wakes_a_waiter_on_the_other(
    two: tuple[Charter, Charter],
) -> None:
    a, b = two
    record = a.decide(refund(2500))
    assert record.approval is not None
    assert record.approval["state"] == "pending"
    woken = threading.Event()
    a.watch(record.id, woken.set)
    b.approve(record.approval["id"], FINANCE, note="checked")
    assert not woken.is_set()
    a.catch_up()
    assert woken.is_set()
    view = a.get_approval(record.approval["id"])
    assert view is not None
    assert view.state == "approved"
    assert a.approvals(state="pending") == []


def test_a_deadline_fires_once_whichever_service_fires_it(
    two: tuple[Charter, Charter], clock: FakeClock
) -> None:
    a, b = two
    record = a.decide(refund(2500))
    assert record.approval is not None
    b.catch_up()  # b holds the approval too, and times it
    clock.advance(hours=5)
    fired = a.fire_due() + b.fire_due()
    assert [v.id for v in fired] == [record.approval["id"]]
    escalations = [e for e in a.store.entries() if e.kind == "approval.escalated"]
    assert len(escalations) == 1
    a.catch_up()
    b.catch_up()
    assert a.fire_due() == []
    assert b.fire_due() == []


def test_of_two_steps_on_one_approval_the_first_recorded_wins(
    two: tuple[Charter, Charter],
) -> None:
    """`b` acts on the approval as it last read it; `a` denied it since: refused."""
    a, b = two
    record = a.decide(refund(2500))
    assert record.approval is not None
    approval_id = record.approval["id"]
    b.catch_up()
    a.deny(approval_id, FINANCE, reason="not this one")
    with pytest.raises(Conflict, match="changed by another step"):
        b.approve(approval_id, FINANCE, note="fine by me")
    view = b.get_approval(approval_id)  # the stored state, taken back after the refusal
    assert view is not None
    assert view.state == "denied"
    settled = [e.kind for e in a.store.entries() if e.kind.startswith("approval.")]
    assert settled == ["approval.opened", "approval.denied"]
    decision = b.get_decision(record.id)
    assert decision is not None
    assert decision.state == "denied"


def test_an_announced_append_is_read_at_once(postgres: Cluster) -> None:
    """PostgreSQL announces each append: a halt is read at once, not at the next poll.

    The follower polls every ten seconds here, yet reads each halt within a second;
    with its listening connection killed it reconnects and goes on.

    (A SQLite file announces nothing: its followers poll, as the test above shows.)
    """
    url = postgres.database()
    with Charter(EXAMPLE_POLICY, url) as a, Charter(EXAMPLE_POLICY, url) as b:
        follow_announcements(a, b)


def follow_announcements(a: Charter, b: Charter) -> None:
    b.start_following(10.0)
    try:
        listener = b._follower._listener
        assert listener is not None
        assert listener.wait_connected(5)
        for round_ in range(2):
            a.halt("action", "crm.note", reason=f"round {round_}", by="ops")
            started = time.monotonic()
            while b.halts == () and time.monotonic() - started < 1.0:
                time.sleep(0.005)
            assert b.halts != (), "the halt was not read within a second"
            a.resume("action", "crm.note", by="ops")
            started = time.monotonic()
            while b.halts != () and time.monotonic() - started < 1.0:
                time.sleep(0.005)
            assert b.halts == ()
            with a.store.engine.connect() as connection:  # type: ignore[attr-defined]
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'charter-listener'"
                    )
                ).scalar()
            assert killed == 1
            started = time.monotonic()
            while not listener.connected and time.monotonic() - started < 5:
                time.sleep(0.01)
            time.sleep(0.05)
            assert listener.wait_connected(5)
    finally:
        b.stop_following()


def test_one_idempotency_key_gives_one_decision_across_services(
    two: tuple[Charter, Charter],
) -> None:
    """Both services asked at the same moment under one key: one decision, one answer."""
    a, b = two
    rounds = 40
    answers: dict[str, list[str]] = {}
    barrier = threading.Barrier(2)

    def ask(charter: Charter) -> None:
        for n in range(rounds):
            barrier.wait(timeout=10)
            record = charter.decide(NOTE, idempotency_key=f"note-{n}")
            answers.setdefault(f"note-{n}", []).append(record.id)

    threads = [threading.Thread(target=ask, args=(c,)) for c in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(len(set(ids)) == 1 and len(ids) == 2 for ids in answers.values())
    assert len(answers) == rounds
    decided = [e for e in a.store.entries() if e.kind == "decision"]
    assert len(decided) == rounds
    with pytest.raises(IdempotencyConflict):
        b.decide({**NOTE, "args": {**NOTE["args"], "text": "other"}}, idempotency_key="note-0")
