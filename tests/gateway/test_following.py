"""Two services on one ledger: what one changes is in force in the other once it follows.

Halts, resumes, autonomy changes, agent updates and key revocations appended by one
process reach the other through the ledger (`Charter.catch_up`, run four times a second
by `charter serve`), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from charter import Charter, Verdict
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store, verify_store

NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


@pytest.fixture
def two(store_target: str) -> Iterator[tuple[Charter, Charter]]:
    """Services `a` and `b` on one fresh ledger; the chain verifies after the test."""
    with Charter(EXAMPLE_POLICY, store_target) as a, Charter(EXAMPLE_POLICY, store_target) as b:
        yield a, b
    with open_store(store_target, read_only=True) as store:
        assert verify_store(store).ok


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
