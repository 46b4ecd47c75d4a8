"""The service layer of the embedded Charter: idempotency, grants, outcomes and keys."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from _postgres import stored_bytes
from charter import AgentProfile, Charter, Verdict, load_bundle
from charter.errors import Conflict, GrantRefused, IdempotencyConflict, NotFound, RequestInvalid
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store
from charter.testing import FakeClock, sequential_ids

BUNDLE = load_bundle(EXAMPLE_POLICY)


def refund(amount: float = 40, order: str = "ord-1") -> dict[str, Any]:
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
def charter(store_target: str, clock: FakeClock) -> Charter:
    with Charter(BUNDLE, store_target, clock=clock, ids=sequential_ids()) as c:
        yield c


def kinds(charter: Charter) -> list[str]:
    return [e.kind for e in charter.store.entries()]


class TestIdempotency:
    """An idempotency key makes a retried request return the first answer."""

    def test_same_key_same_request_gives_the_same_decision_and_grant(
        self, charter: Charter
    ) -> None:
        """A retry with the same key gets the same id and grant and adds no ledger entry."""
        first = charter.decide(refund(), idempotency_key="k-1")
        count = charter.store.count()
        again = charter.decide(refund(), idempotency_key="k-1")
        assert again.id == first.id
        assert again.grant == first.grant
        assert again.replayed
        assert not first.replayed
        assert charter.store.count() == count

    def test_same_key_other_request_is_refused_and_records_nothing(self, charter: Charter) -> None:
        """A key reused with a different payload is an error and nothing is decided."""
        charter.decide(refund(), idempotency_key="k-1")
        count = charter.store.count()
        with pytest.raises(IdempotencyConflict):
            charter.decide(refund(amount=41), idempotency_key="k-1")
        assert charter.store.count() == count

    @pytest.mark.parametrize("key", ["a\nb", "k" * 257, "", " "])
    def test_a_malformed_key_is_refused_by_name_and_records_nothing(
        self, charter: Charter, key: str
    ) -> None:
        """The embedded call checks the key as the HTTP edge does, before anything is stored."""
        count = charter.store.count()
        with pytest.raises(RequestInvalid, match="idempotency_key"):
            charter.decide(refund(), idempotency_key=key)
        assert charter.store.count() == count

    def test_keys_belong_to_one_agent(self, charter: Charter) -> None:
        """Two agents may use the same key string without meeting each other's decisions."""
        first = charter.decide(refund(), idempotency_key="shared")
        other = dict(refund(), agent="support-bot-trainee")
        second = charter.decide(other, idempotency_key="shared")
        assert second.id != first.id

    def test_concurrent_retries_decide_once(self, charter: Charter) -> None:
        """Sixteen threads sending one key at once produce exactly one decision."""
        results: list[str] = []
        barrier = threading.Barrier(16)

        def send() -> None:
            barrier.wait()
            results.append(charter.decide(refund(), idempotency_key="burst").id)

        threads = [threading.Thread(target=send) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) == 1
        assert kinds(charter).count("decision") == 1


class TestGrants:
    """An allowed decision yields a grant that runs the exact arguments once."""

    def test_only_allowed_decisions_carry_a_grant(self, charter: Charter) -> None:
        """Allow gives a grant; approval, escalation and deny give none."""
        assert charter.decide(refund()).grant is not None
        needs_approval = charter.decide(refund(amount=2500, order="ord-2"))
        assert needs_approval.verdict is Verdict.REQUIRE_APPROVAL
        assert needs_approval.grant is None

    def test_a_grant_redeems_once(self, charter: Charter) -> None:
        """The first redeem succeeds; the second is refused as used and recorded."""
        record = charter.decide(refund())
        assert record.grant is not None
        charter.redeem(record.grant.id, record.grant.token, record.request.args)
        with pytest.raises(GrantRefused) as refused:
            charter.redeem(record.grant.id, record.grant.token, record.request.args)
        assert refused.value.code == "grant_used"
        assert kinds(charter)[-2:] == ["grant.redeemed", "grant.refused"]

    def test_swapped_arguments_are_refused(self, charter: Charter) -> None:
        """Arguments other than the decided ones do not redeem the grant."""
        record = charter.decide(refund())
        assert record.grant is not None
        with pytest.raises(GrantRefused) as refused:
            charter.redeem(
                record.grant.id, record.grant.token, {**record.request.args, "amount": 4000}
            )
        assert refused.value.code == "args_mismatch"
        charter.redeem(
            record.grant.id,
            record.grant.token,
            {"currency": "USD", "amount": 40.0, "order_id": "ord-1"},
        )

    def test_an_expired_grant_is_refused(self, charter: Charter, clock: FakeClock) -> None:
        """A grant past its lifetime cannot be redeemed."""
        record = charter.decide(refund())
        assert record.grant is not None
        clock.advance(charter.grant_ttl + 1)
        with pytest.raises(GrantRefused) as refused:
            charter.redeem(record.grant.id, record.grant.token, record.request.args)
        assert refused.value.code == "grant_expired"

    def test_a_wrong_token_reveals_nothing(self, charter: Charter) -> None:
        """A guessed token is refused the same way as an unknown grant."""
        record = charter.decide(refund())
        assert record.grant is not None
        for grant_id, token in ((record.grant.id, "guess"), ("g_nothing", record.grant.token)):
            with pytest.raises(GrantRefused) as refused:
                charter.redeem(grant_id, token, record.request.args)
            assert refused.value.code == "grant_unknown"

    def test_grants_survive_a_restart(self, store_target: str, clock: FakeClock) -> None:
        """A grant issued before a restart redeems after it, once."""
        with Charter(BUNDLE, store_target, clock=clock) as first:
            record = first.decide(refund())
        assert record.grant is not None
        with Charter(BUNDLE, store_target, clock=clock) as second:
            second.redeem(record.grant.id, record.grant.token, record.request.args)
            with pytest.raises(GrantRefused):
                second.redeem(record.grant.id, record.grant.token, record.request.args)


class TestOutcomesAndState:
    """Outcomes are recorded once and move the decision's state along."""

    def test_state_follows_the_decision(self, charter: Charter) -> None:
        """Allowed → redeemed → executed, and a failure reads as failed."""
        record = charter.decide(refund())
        assert record.grant is not None
        view = charter.get_decision(record.id)
        assert view is not None
        assert view.state == "allowed"
        charter.redeem(record.grant.id, record.grant.token, record.request.args)
        assert charter.get_decision(record.id).state == "redeemed"  # type: ignore[union-attr]
        charter.record_outcome(record.id, success=True, duration_ms=12.5)
        shown = charter.get_decision(record.id)
        assert shown is not None
        assert shown.state == "executed"
        assert shown.to_json()["outcome"]["success"] is True
        assert "token" not in shown.to_json()["grant"]

    def test_a_second_outcome_is_a_conflict(self, charter: Charter) -> None:
        """What happened is recorded once."""
        record = charter.decide(refund())
        charter.record_outcome(record.id, success=False, error="TimeoutError: bank")
        assert charter.get_decision(record.id).state == "failed"  # type: ignore[union-attr]
        with pytest.raises(Conflict):
            charter.record_outcome(record.id, success=True)

    def test_unknown_decisions_are_not_found(self, charter: Charter) -> None:
        """An outcome for a decision that does not exist is refused."""
        with pytest.raises(NotFound):
            charter.record_outcome("nope", success=True)
        assert charter.get_decision("nope") is None

    def test_the_ledger_still_verifies_and_replays(self, charter: Charter) -> None:
        """Grants, redemptions and outcomes leave the ledger verifiable and replayable."""
        record = charter.decide(refund())
        assert record.grant is not None
        charter.redeem(record.grant.id, record.grant.token, record.request.args)
        charter.record_outcome(record.id, success=True)
        assert charter.verify().ok
        assert charter.replay().ok


class TestKeys:
    """API keys are shown once, stored as hashes, and can be revoked."""

    def test_a_key_authenticates_until_revoked(self, charter: Charter) -> None:
        """A created key maps to its principal; after revocation it maps to nothing."""
        key_id, secret = charter.create_key("agent", agent="support-bot", label="bot")
        principal = charter.authenticate(secret)
        assert principal is not None
        assert (principal.key_id, principal.role, principal.agent) == (
            key_id,
            "agent",
            "support-bot",
        )
        charter.revoke_key(key_id, by="admin")
        assert charter.authenticate(secret) is None
        assert kinds(charter)[-2:] == ["key.created", "key.revoked"]

    def test_only_a_hash_of_the_secret_is_stored(self, store_target: str, clock: FakeClock) -> None:
        """The secret never reaches the database: its file(s), or its rows and files."""
        with Charter(BUNDLE, store_target, clock=clock) as charter:
            _, secret = charter.create_key("admin")
            assert "key_hash" not in charter.list_keys()[0]
        if "://" in store_target:
            stored = stored_bytes(store_target)
        else:
            db = Path(store_target)
            stored = b"".join(p.read_bytes() for p in db.parent.glob(f"{db.name}*"))
        assert b"key.created" in stored  # what is searched holds the ledger
        assert secret.encode() not in stored

    def test_roles_are_checked(self, charter: Charter) -> None:
        """Unknown roles and agent keys without an agent are refused."""
        with pytest.raises(RequestInvalid):
            charter.create_key("superuser")
        with pytest.raises(RequestInvalid):
            charter.create_key("agent")
        with pytest.raises(NotFound):
            charter.revoke_key("key_missing")


class TestIdempotencyInBatches:
    """`decide_many` applies idempotency within one batch too."""

    def test_a_key_repeated_in_one_batch_decides_once(self, charter: Charter) -> None:
        """Two requests with one key in the same batch give one decision, twice."""
        first, second = charter.decide_many(
            [dict(refund(), idempotency_key="b-1"), dict(refund(), idempotency_key="b-1")]
        )
        assert first.id == second.id
        assert second.replayed
        assert kinds(charter).count("decision") == 1

    def test_a_conflict_in_a_batch_records_nothing(self, charter: Charter) -> None:
        """A batch whose key is reused with another payload is refused whole."""
        count = charter.store.count()
        with pytest.raises(IdempotencyConflict):
            charter.decide_many(
                [dict(refund(), idempotency_key="b-2"), dict(refund(99), idempotency_key="b-2")]
            )
        assert charter.store.count() == count


class TestRegistry:
    """Agents registered at run time decide like bundle agents, and replay exactly."""

    def test_a_registered_agent_is_decided_for_and_replays(self, charter: Charter) -> None:
        """A new agent with a bundle role gets that role's envelope, and replay reproduces it."""
        charter.put_agent(
            AgentProfile("support-bot-2", "support", "lead@example.com", "m", "1", 1), by="admin"
        )
        record = charter.decide(dict(refund(amount=600), agent="support-bot-2"))
        assert record.verdict is Verdict.REQUIRE_APPROVAL  # level 1 may take 20; this is 40
        assert charter.get_agent("support-bot-2") is not None
        assert charter.replay().ok

    def test_an_update_changes_later_decisions_only(self, charter: Charter) -> None:
        """Raising an agent's level in the registry changes what it may do from then on."""
        before = charter.decide(dict(refund(amount=600), agent="support-bot-trainee"))
        charter.put_agent(
            AgentProfile("support-bot-trainee", "support", "lead@example.com", "m", "1", 2),
            by="admin",
        )
        after = charter.decide(dict(refund(amount=600, order="ord-9"), agent="support-bot-trainee"))
        assert before.verdict is Verdict.REQUIRE_APPROVAL
        assert after.verdict is Verdict.ALLOW
        assert charter.replay().ok

    def test_unknown_roles_and_levels_are_refused(self, charter: Charter) -> None:
        """The registry cannot invent a role or a level the bundle does not define."""
        with pytest.raises(RequestInvalid):
            charter.put_agent(AgentProfile("x", "wizard", "o", "m", "1", 1), by="admin")
        with pytest.raises(RequestInvalid):
            charter.put_agent(AgentProfile("x", "support", "o", "m", "1", 9), by="admin")


class TestDecideAsync:
    """`decide_async` decides on the event loop and awaits the ledger without a thread."""

    def test_concurrent_coroutines_share_commits_and_keys(self, charter: Charter) -> None:
        """Many coroutines decide at once; one idempotency key among them decides once."""

        async def run() -> list[str]:
            plain = [charter.decide_async(refund(order=f"ord-{i}")) for i in range(20)]
            keyed = [charter.decide_async(refund(), idempotency_key="same") for _ in range(8)]
            records = await asyncio.gather(*plain, *keyed)
            return [r.id for r in records]

        ids = asyncio.run(run())
        assert len(set(ids[:20])) == 20
        assert len(set(ids[20:])) == 1
        assert kinds(charter).count("decision") == 21
        assert charter.verify().ok

    def test_a_cancelled_caller_does_not_cancel_the_write(
        self, store_target: str, clock: FakeClock
    ) -> None:
        """A decision whose caller is cancelled while it waits for the ledger is still recorded."""
        db = store_target

        async def run(charter: Charter) -> None:
            task = asyncio.ensure_future(charter.decide_async(refund(order="ord-77")))
            await asyncio.sleep(0)  # the task decides and queues its entry, then waits
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        with Charter(BUNDLE, db, clock=clock) as charter:
            asyncio.run(run(charter))
        store = open_store(db)
        try:
            assert any("ord-77" in e.payload for e in store.entries(kinds=("decision",)))
        finally:
            store.close()
