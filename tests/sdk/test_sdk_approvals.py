"""Waiting for people: `wait`, `@governed(wait=...)`, `resume`, and the pending cap.

Every case runs against the embedded gateway and the HTTP app alike. A reviewer acts from
another thread (as a person in the reviewer UI would) while the agent waits; waits are
short and bounded, and deadlines move on the gateway's fake clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest
from _sdk import AGENT, RATIONALE, payloads, refund_args

from charter import Charter
from charter.errors import CharterError, GrantRefused
from charter.sdk import (
    ActionDenied,
    ApprovalRequired,
    AsyncClient,
    AsyncEmbeddedClient,
    Client,
    EmbeddedClient,
    PendingLimitReached,
    governed,
)
from charter.sdk._protocol import LONG_POLL_MAX, status_exchange
from charter.service import Principal
from charter.testing import FakeClock

SyncClient = EmbeddedClient | Client
AsyncAnyClient = AsyncEmbeddedClient | AsyncClient
WHY = {"confidence": 0.9, "rationale": RATIONALE}
ALICE = Principal("key_alice", "reviewer", name="alice@example.com", groups=("finance",))
#: A refund large enough that the example policy sends it to `finance-review`.
LARGE = 2500
#: Long enough never to run out in a passing test, short enough to fail fast.
PATIENCE = 5.0


class Reviewer:
    """A person in another thread: acts on the first pending approval once it opens.

    It waits a moment after the approval opens, so the agent is usually already waiting
    when the reviewer acts (either order must work). An error in the thread is raised
    when the block ends.
    """

    def __init__(self, charter: Charter, act: Callable[[str], object], delay: float = 0.1):
        self.charter = charter
        self.act = act
        self.delay = delay
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + PATIENCE
            while not self.charter.approvals(state="pending"):
                assert time.monotonic() < deadline, "no approval opened"
                time.sleep(0.005)
            time.sleep(self.delay)
            self.act(self.charter.approvals(state="pending")[0].id)
        except BaseException as exc:  # handed to the test thread at the end of the block
            self.error = exc

    def __enter__(self) -> Reviewer:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.thread.join(PATIENCE * 2)
        if self.error is not None and exc is None:
            raise self.error


def make_refund(
    client: SyncClient | AsyncAnyClient,
    ran: list[dict[str, Any]],
    *,
    wait: float | None = None,
    action: str = "payments.refund",
    agent: str = AGENT,
) -> Any:
    @governed(action, client=client, agent=agent, context=WHY, wait=wait)
    def refund(order_id: str, amount: float, currency: str = "USD") -> str:
        ran.append({"order_id": order_id, "amount": amount, "currency": currency})
        return f"refunded {amount} {currency}"

    return refund


def make_async_refund(
    client: SyncClient | AsyncAnyClient, ran: list[dict[str, Any]], *, wait: float | None = None
) -> Any:
    @governed("payments.refund", client=client, agent=AGENT, context=WHY, wait=wait)
    async def refund(order_id: str, amount: float, currency: str = "USD") -> str:
        await asyncio.sleep(0)
        ran.append({"order_id": order_id, "amount": amount, "currency": currency})
        return f"refunded {amount} {currency}"

    return refund


def modified(charter: Charter, amount: float) -> Callable[[str], object]:
    """A reviewer's action: approve with a smaller amount."""

    def act(approval_id: str) -> object:
        return charter.modify(
            approval_id,
            ALICE,
            {"order_id": "ord-1003", "amount": amount, "currency": "USD"},
            note="partial refund: one item was fine",
        )

    return act


def first_decision(charter: Charter) -> str:
    """The id of the agent's decision (a modification records a re-decision after it)."""
    return str(payloads(charter, "decision")[0]["decision_id"])


def expire(charter: Charter, clock: FakeClock) -> None:
    """Let both tiers of `finance-review` time out: the approval expires (a denial)."""
    clock.advance(hours=4, seconds=1)
    charter.fire_due()  # finance-review → finance-managers
    clock.advance(hours=8, seconds=1)
    charter.fire_due()  # finance-managers → deny


class TestWaitingCall:
    def test_approved_while_waiting_runs_once_and_is_recorded(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A reviewer approves while the call waits: it runs once; the outcome is recorded."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran, wait=PATIENCE)

        with Reviewer(charter, lambda aid: charter.approve(aid, ALICE, note="photo checked")):
            assert refund("ord-1003", LARGE) == f"refunded {LARGE} USD"

        assert ran == [{"order_id": "ord-1003", "amount": LARGE, "currency": "USD"}]
        decision_id = first_decision(charter)
        assert [p["decision_id"] for p in payloads(charter, "grant.redeemed")] == [decision_id]
        [outcome] = payloads(charter, "outcome")
        assert (outcome["decision_id"], outcome["success"]) == (decision_id, True)
        assert sync_client.wait(decision_id, timeout=0).state == "executed"

    def test_denied_while_waiting_raises_the_reviewers_reason(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A reviewer's denial reaches the agent as ActionDenied with its reason and author."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran, wait=PATIENCE)
        why = "the order was never shipped; ask the customer to wait"

        with (
            Reviewer(charter, lambda aid: charter.deny(aid, ALICE, reason=why)),
            pytest.raises(ActionDenied) as raised,
        ):
            refund("ord-1003", LARGE)

        assert ran == []
        denied = raised.value
        assert (denied.reason, denied.denied_by) == (why, "alice@example.com")
        assert denied.decision_id == first_decision(charter)
        assert why in str(denied)
        assert "alice@example.com" in str(denied)
        assert payloads(charter, "grant.redeemed") == []
        assert payloads(charter, "outcome") == []

    def test_modified_args_are_the_ones_the_function_runs_with(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A reviewer lowers the amount: the function runs with the modified arguments."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran, wait=PATIENCE)

        with Reviewer(charter, modified(charter, 1800)):
            assert refund("ord-1003", LARGE) == "refunded 1800 USD"

        assert ran == [{"order_id": "ord-1003", "amount": 1800, "currency": "USD"}]
        decision_id = first_decision(charter)
        status = sync_client.wait(decision_id, timeout=0)
        assert status.state == "executed"
        assert status.approval is not None
        assert status.approval.modified
        assert status.args == {"order_id": "ord-1003", "amount": 1800, "currency": "USD"}

    def test_expired_while_waiting_is_a_denial(
        self, sync_client: SyncClient, charter: Charter, clock: FakeClock
    ) -> None:
        """Nobody approves before the last deadline: ActionDenied, by Charter, as expired."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran, wait=PATIENCE)

        with (
            Reviewer(charter, lambda _aid: expire(charter, clock)),
            pytest.raises(ActionDenied) as raised,
        ):
            refund("ord-1003", LARGE)

        assert ran == []
        resolution = raised.value.resolution
        assert resolution is not None
        assert resolution.code == "expired"
        assert raised.value.denied_by == "charter"
        assert "expired" in str(raised.value)

    def test_the_clients_default_wait_applies(
        self, sync_client: SyncClient, connect: Any, charter: Charter
    ) -> None:
        """`approval_wait` on the client is the wait of every governed call without one."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(connect(approval_wait=PATIENCE), ran)  # a client of either kind

        with Reviewer(charter, lambda aid: charter.approve(aid, ALICE)):
            refund("ord-1003", LARGE)

        assert len(ran) == 1

    def test_without_a_wait_approval_required_is_raised_at_once(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """The default (no wait anywhere) keeps the old behaviour: raise, do not wait."""
        started = time.monotonic()
        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, [])("ord-1003", LARGE)

        assert time.monotonic() - started < 1
        assert raised.value.waited is None
        assert raised.value.decision.approval is not None
        assert raised.value.decision.approval.state == "pending"


class TestResume:
    def test_a_timeout_hands_back_the_id_and_a_restarted_agent_resumes_it(
        self, sync_client: SyncClient, connect: Any, charter: Charter
    ) -> None:
        """Timed out → ApprovalRequired; approved later; a new client's `resume` runs it once."""
        ran: list[dict[str, Any]] = []
        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, ran, wait=0.05)("ord-1003", LARGE)
        waiting = raised.value
        assert waiting.waited == 0.05
        assert waiting.decision_id == first_decision(charter)
        assert "still waiting after 0.05 s" in str(waiting)
        assert ran == []

        # The agent restarts: a new client and a new function object; only the id is kept.
        again = make_refund(connect(), ran)
        with Reviewer(charter, lambda aid: charter.approve(aid, ALICE)):
            assert again.resume(waiting.decision_id, wait=PATIENCE) == f"refunded {LARGE} USD"

        assert ran == [{"order_id": "ord-1003", "amount": LARGE, "currency": "USD"}]
        [outcome] = payloads(charter, "outcome")
        assert outcome["decision_id"] == waiting.decision_id

    def test_a_second_resume_is_refused_and_does_not_run(
        self, sync_client: SyncClient, connect: Any, charter: Charter
    ) -> None:
        """The grant works once: resuming a decision that ran is `grant_used`, recorded."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran)
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-1003", LARGE)
        charter.approve(charter.approvals()[0].id, ALICE)
        refund.resume(raised.value.decision_id)

        for client in (sync_client, connect()):  # this process, or another one
            with pytest.raises(GrantRefused) as twice:
                make_refund(client, ran).resume(raised.value.decision_id)
            assert twice.value.code == "grant_used"

        assert len(ran) == 1
        assert len(payloads(charter, "outcome")) == 1
        assert [p["code"] for p in payloads(charter, "grant.refused")] == ["grant_used"] * 2

    def test_resume_runs_the_modified_args(self, sync_client: SyncClient, charter: Charter) -> None:
        """Modified after the agent gave up waiting: `resume` runs the reviewer's arguments."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran)
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-1003", LARGE)
        charter.modify(
            charter.approvals()[0].id,
            ALICE,
            {"order_id": "ord-1003", "amount": 900, "currency": "EUR"},
        )

        assert refund.resume(raised.value.decision_id) == "refunded 900 EUR"
        assert ran == [{"order_id": "ord-1003", "amount": 900, "currency": "EUR"}]

    def test_resume_of_a_denied_decision_raises_the_reason(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """Denied while nobody waited: `resume` raises ActionDenied with the reason."""
        ran: list[dict[str, Any]] = []
        refund = make_refund(sync_client, ran)
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-1003", LARGE)
        charter.deny(charter.approvals()[0].id, ALICE, reason="duplicate of ord-1002")

        with pytest.raises(ActionDenied) as denied:
            refund.resume(raised.value.decision_id, wait=PATIENCE)

        assert denied.value.reason == "duplicate of ord-1002"
        assert ran == []

    def test_resume_of_an_expired_decision_is_a_denial(
        self, sync_client: SyncClient, charter: Charter, clock: FakeClock
    ) -> None:
        """Expired while the agent was down: `resume` raises ActionDenied."""
        refund = make_refund(sync_client, [])
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-1003", LARGE)
        expire(charter, clock)

        with pytest.raises(ActionDenied) as denied:
            refund.resume(raised.value.decision_id)

        assert denied.value.resolution is not None
        assert denied.value.resolution.code == "expired"

    def test_still_pending_at_the_timeout_raises_approval_required(
        self, sync_client: SyncClient
    ) -> None:
        """Nobody has decided yet: `resume` gives up after its wait, the id intact."""
        refund = make_refund(sync_client, [])
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-1003", LARGE)

        with pytest.raises(ApprovalRequired) as still:
            refund.resume(raised.value.decision_id, wait=0.05)

        assert still.value.decision_id == raised.value.decision_id

    def test_a_decision_for_another_action_or_agent_is_refused(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """`resume` checks the decision is this function's action and agent; nothing runs."""
        ran: list[dict[str, Any]] = []
        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, ran)("ord-1003", LARGE)
        charter.approve(charter.approvals()[0].id, ALICE)

        for other in (
            make_refund(sync_client, ran, action="orders.cancel"),
            make_refund(sync_client, ran, agent="billing-bot"),
        ):
            with pytest.raises(CharterError) as refused:
                other.resume(raised.value.decision_id)
            assert refused.value.code == "decision_mismatch"

        assert ran == []
        assert payloads(charter, "grant.redeemed") == []

    def test_an_unknown_or_allowed_decision_cannot_be_resumed(
        self, sync_client: SyncClient
    ) -> None:
        """An id never decided is `decision_unknown`; one that needed nobody `not_resumable`."""
        refund = make_refund(sync_client, [])
        allowed = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        assert allowed.allowed

        with pytest.raises(CharterError) as unknown:
            refund.resume("d-999999")
        with pytest.raises(CharterError) as needless:
            refund.resume(allowed.id)

        assert unknown.value.code == "decision_unknown"
        assert needless.value.code == "not_resumable"


class TestRebinding:
    def test_excluded_and_variadic_parameters_are_rebound(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """`self`-like excluded parameters are kept; `**kwargs` takes the approved extras."""
        calls: list[tuple[Any, ...]] = []

        @governed(
            "payments.refund", client=sync_client, agent=AGENT, context=WHY, exclude=["session"]
        )
        def refund(session: str, order_id: str, **rest: Any) -> None:
            calls.append((session, order_id, rest))

        with pytest.raises(ApprovalRequired) as raised:
            refund("db-1", "ord-1003", amount=LARGE, currency="USD")
        charter.modify(
            charter.approvals()[0].id,
            ALICE,
            {"order_id": "ord-1003", "amount": 700, "currency": "USD"},
        )

        with pytest.raises(TypeError, match="`amount`"):
            refund.resume(raised.value.decision_id, amount=1)  # not the caller's to set
        refund.resume(raised.value.decision_id, session="db-2")

        assert calls == [("db-2", "ord-1003", {"amount": 700, "currency": "USD"})]

    def test_approved_args_that_do_not_fit_leave_the_grant_unspent(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A function that cannot take the approved args raises before redeeming."""
        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, [])("ord-1003", LARGE)
        charter.approve(charter.approvals()[0].id, ALICE)

        @governed("payments.refund", client=sync_client, agent=AGENT)
        def narrow(order_id: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(TypeError, match="does not take"):
            narrow.resume(raised.value.decision_id)
        assert payloads(charter, "grant.redeemed") == []
        assert make_refund(sync_client, []).resume(raised.value.decision_id)


class TestPendingCap:
    def test_a_refusal_at_the_cap_is_its_own_denial_and_never_retried(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """Beyond `max_pending`: PendingLimitReached (an ActionDenied), raised at once."""
        charter.max_pending = 1
        refund = make_refund(sync_client, [], wait=PATIENCE)
        first = make_refund(sync_client, [])
        with pytest.raises(ApprovalRequired):
            first("ord-1003", LARGE)

        started = time.monotonic()
        with pytest.raises(PendingLimitReached) as raised:
            refund("ord-1004", LARGE)

        assert time.monotonic() - started < 1  # not waited on, not retried
        refused = raised.value
        assert isinstance(refused, ActionDenied)
        assert refused.code == "too_many_pending"
        assert "already has 1 approvals pending" in str(refused)
        decisions = payloads(charter, "decision")
        assert len(decisions) == 2  # one request, one decision: nothing was asked again
        assert len(payloads(charter, "approval.refused")) == 1
        recorded = decisions[-1]["decision_id"]
        assert refused.decision_id == recorded
        assert refused.decision is not None
        assert refused.decision.approval is not None
        assert refused.decision.approval.state == "refused"
        assert sync_client.wait(recorded, timeout=0).state == "denied"

    def test_a_client_that_fails_open_does_not_run_at_the_cap(
        self, sync_client: SyncClient, connect: Any, charter: Charter
    ) -> None:
        """A 429 is Charter's answer, not Charter being away: `fail_open` does not apply."""
        charter.max_pending = 0
        ran: list[dict[str, Any]] = []

        with pytest.raises(PendingLimitReached):
            make_refund(connect(fail_open=True), ran)("ord-1003", LARGE)

        assert ran == []


class TestAsync:
    def test_approved_while_an_async_call_waits(
        self, async_client: AsyncAnyClient, charter: Charter
    ) -> None:
        """A coroutine waits without blocking its loop, then runs with the modified args."""
        ran: list[dict[str, Any]] = []
        refund = make_async_refund(async_client, ran, wait=PATIENCE)
        ticks = 0

        async def main() -> str:
            nonlocal ticks
            task = asyncio.create_task(refund("ord-1003", LARGE))
            while not task.done():  # the loop stays free while the call waits
                ticks += 1
                await asyncio.sleep(0.01)
            return await task

        with Reviewer(charter, modified(charter, 1200), delay=0.2):
            assert asyncio.run(main()) == "refunded 1200 USD"

        assert ticks >= 5
        assert ran == [{"order_id": "ord-1003", "amount": 1200, "currency": "USD"}]
        [outcome] = payloads(charter, "outcome")
        assert outcome["success"] is True

    def test_denied_then_resumed_async(
        self, async_client: AsyncAnyClient, charter: Charter
    ) -> None:
        """Timeout, then deny: the async `resume` raises ActionDenied with the reason."""
        refund = make_async_refund(async_client, [], wait=0.05)

        async def main() -> None:
            with pytest.raises(ApprovalRequired) as raised:
                await refund("ord-1003", LARGE)
            await asyncio.to_thread(
                charter.deny, charter.approvals()[0].id, ALICE, reason="fraud suspected"
            )
            with pytest.raises(ActionDenied) as denied:
                await refund.resume(raised.value.decision_id, wait=PATIENCE)
            assert denied.value.reason == "fraud suspected"

        asyncio.run(main())

    def test_async_resume_runs_once(self, async_client: AsyncAnyClient, charter: Charter) -> None:
        """Approved later: the async `resume` runs once; a second is `grant_used`."""
        ran: list[dict[str, Any]] = []
        refund = make_async_refund(async_client, ran)

        async def main() -> None:
            with pytest.raises(ApprovalRequired) as raised:
                await refund("ord-1003", LARGE)
            await asyncio.to_thread(charter.approve, charter.approvals()[0].id, ALICE)
            assert await refund.resume(raised.value.decision_id) == f"refunded {LARGE} USD"
            with pytest.raises(GrantRefused):
                await refund.resume(raised.value.decision_id)

        asyncio.run(main())
        assert len(ran) == 1

    def test_a_blocking_client_serves_a_waiting_coroutine(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A coroutine with a blocking client waits in a worker thread, and runs approved."""
        ran: list[dict[str, Any]] = []
        refund = make_async_refund(sync_client, ran, wait=PATIENCE)

        with Reviewer(charter, lambda aid: charter.approve(aid, ALICE)):
            assert asyncio.run(refund("ord-1003", LARGE)) == f"refunded {LARGE} USD"

        assert len(ran) == 1


class TestLongPoll:
    def test_the_http_wait_holds_one_request_instead_of_polling(
        self, charter: Charter, test_server: Any, api_key: str
    ) -> None:
        """While nobody decides, a wait is a few held requests, each naming `wait=`."""
        seen: list[str] = []

        class Recording:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def handle_request(self, request: Any) -> Any:
                seen.append(str(request.url))
                return self.inner.handle_request(request)

            def close(self) -> None:
                self.inner.close()

        with Client(
            "http://testserver", api_key, transport=Recording(test_server._transport)
        ) as client:
            with pytest.raises(ApprovalRequired) as raised:
                make_refund(client, [])("ord-1003", LARGE)
            seen.clear()
            with Reviewer(charter, lambda aid: charter.approve(aid, ALICE), delay=0.5):
                status = client.wait(raised.value.decision_id, timeout=PATIENCE)

        assert status.state == "approved"
        assert status.grant is not None  # with its token: the agent redeems it
        assert status.args == {"order_id": "ord-1003", "amount": LARGE, "currency": "USD"}
        assert 1 <= len(seen) <= 2  # held until the approval, not polled every backoff step
        assert all("wait=" in url for url in seen)

    def test_a_long_wait_is_sliced_into_held_requests(self) -> None:
        """No single request asks the server to hold it more than 30 s."""
        assert status_exchange("d-1", 600).path == "/v1/decisions/d-1?wait=30"
        assert status_exchange("d-1", 600).hold == LONG_POLL_MAX
        assert status_exchange("d-1", 2.5).path.endswith("?wait=2.5")
        assert status_exchange("d-1", 0).path == "/v1/decisions/d-1"

    def test_wait_times_out_with_the_waiting_status(self, sync_client: SyncClient) -> None:
        """`wait` returns the still-waiting status at its timeout; it does not raise."""
        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, [])("ord-1003", LARGE)

        started = time.monotonic()
        status = sync_client.wait(raised.value.decision_id, timeout=0.2)

        assert 0.15 <= time.monotonic() - started < 2
        assert status.waiting
        assert status.state == "pending"
        assert status.approval is not None
        assert status.approval.deadline is not None
