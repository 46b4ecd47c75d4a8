"""The four clients answer alike: blocking and async, over HTTP and in-process.

Every test here runs once per client (`EmbeddedClient`, `Client`, `AsyncEmbeddedClient`,
`AsyncClient`) against the same kind of gateway, and asserts the same answers and the
same errors for each: code written against one runs unchanged against any other.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from _sdk import AGENT, RATIONALE, payloads, refund_args

from charter import Bundle, Charter, Verdict
from charter.errors import (
    CharterError,
    Conflict,
    GrantRefused,
    IdempotencyConflict,
    NotFound,
    RequestInvalid,
)
from charter.sdk import (
    ActionDenied,
    ApprovalRequired,
    AsyncClient,
    AsyncEmbeddedClient,
    CharterUnavailable,
    Client,
    EmbeddedClient,
    PendingLimitReached,
    governed,
)
from charter.service import Principal
from charter.testing import make_charter

WHY = {"confidence": 0.9, "rationale": RATIONALE}
#: A refund large enough that the example policy sends it to people.
LARGE = 2500
ALICE = Principal("key_alice", "reviewer", name="alice@example.com", groups=("finance",))
KINDS = ["embedded", "http", "async-embedded", "async-http"]


def settled(loop: asyncio.Runner, answer: Any) -> Any:
    """The answer itself, or what it gives once awaited on `loop` (for an async client)."""
    return loop.run(answer) if inspect.isawaitable(answer) else answer


class Calls:
    """A client whose methods answer at once, whether the client blocks or awaits.

    An async client's calls all run on one event loop, as they would in an agent.
    """

    def __init__(self, client: Any, loop: asyncio.Runner) -> None:
        self.client = client
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        return lambda *args, **kwargs: settled(self.loop, method(*args, **kwargs))


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def client_of(kind: str, charter: Charter, request: pytest.FixtureRequest, **options: Any) -> Any:
    """A new client of `kind` over `charter` (through the HTTP app for the HTTP kinds)."""
    if kind == "embedded":
        return EmbeddedClient(charter, **options)
    if kind == "async-embedded":
        return AsyncEmbeddedClient(charter, **options)
    key: str = request.getfixturevalue("api_key")
    if kind == "http":
        server = request.getfixturevalue("test_server")
        return Client("http://testserver", key, transport=server._transport, **options)
    transport = httpx2.ASGITransport(request.getfixturevalue("app"))
    return AsyncClient("http://testserver", key, transport=transport, **options)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def calls(
    kind: str, charter: Charter, request: pytest.FixtureRequest, loop: asyncio.Runner
) -> Calls:
    return Calls(client_of(kind, charter, request), loop)


class TestSameAnswers:
    def test_decide_redeem_report_read(self, calls: Calls, charter: Charter) -> None:
        """Allowed, redeemed, executed: the same decision and states from every client."""
        result = calls.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        assert result.grant is not None
        states = [calls.get_decision(result.id).state]
        calls.redeem(result.grant, refund_args())
        states.append(calls.get_decision(result.id).state)
        calls.report_outcome(result.id, success=True, duration_ms=2.0, result_digest="sha256:r")
        final = calls.wait(result.id, timeout=1)

        assert (result.verdict, result.reasons[0].code) == (Verdict.ALLOW, "allowed")
        assert [*states, final.state] == ["allowed", "redeemed", "executed"]
        assert payloads(charter, "outcome")[-1]["result_digest"] == "sha256:r"
        assert final.outcome is not None
        assert final.outcome["success"] is True

    def test_an_unknown_decision(self, calls: Calls) -> None:
        """Reading it answers None; waiting on it raises `decision_unknown`."""
        assert calls.get_decision("d-999999") is None
        with pytest.raises(CharterError) as raised:
            calls.wait("d-999999", timeout=0)

        assert raised.value.code == "decision_unknown"

    def test_replaying_an_idempotency_key(self, calls: Calls) -> None:
        """The same key gives the first decision back; with other args, a conflict."""
        first = calls.decide(AGENT, "payments.refund", refund_args(), idempotency_key="k-1")
        again = calls.decide(AGENT, "payments.refund", refund_args(), idempotency_key="k-1")

        assert (again.id, again.replayed) == (first.id, True)
        with pytest.raises(IdempotencyConflict):
            calls.decide(AGENT, "payments.refund", refund_args(amount=41), idempotency_key="k-1")


class TestSameErrors:
    def test_a_grant_works_once_and_only_on_its_args(self, calls: Calls) -> None:
        result = calls.decide(AGENT, "payments.refund", refund_args(), context=WHY)

        with pytest.raises(GrantRefused) as changed:
            calls.redeem(result.grant, refund_args(amount=4000))
        calls.redeem(result.grant, refund_args())
        with pytest.raises(GrantRefused) as again:
            calls.redeem(result.grant, refund_args())

        assert (changed.value.code, again.value.code) == ("args_mismatch", "grant_used")

    def test_outcomes_once_and_only_for_a_decision(self, calls: Calls) -> None:
        result = calls.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        calls.report_outcome(result.id, success=True)

        with pytest.raises(Conflict):
            calls.report_outcome(result.id, success=False, error="again")
        with pytest.raises(NotFound):
            calls.report_outcome("d-999999", success=True)

    def test_a_malformed_request_names_its_field(self, calls: Calls) -> None:
        with pytest.raises(RequestInvalid) as raised:
            calls.decide(AGENT, "Payments Refund!", refund_args())

        assert raised.value.field == "action"

    def test_args_that_are_not_json_are_refused(self, calls: Calls) -> None:
        with pytest.raises(RequestInvalid):
            calls.decide(AGENT, "payments.refund", {**refund_args(), "amount": {1, 2}})

    def test_a_refusal_at_the_pending_cap_carries_its_decision(
        self, calls: Calls, charter: Charter
    ) -> None:
        """Every client reads the refused decision, so the error carries it whole."""
        charter.max_pending = 1
        waiting = calls.decide(AGENT, "payments.refund", refund_args(amount=LARGE), context=WHY)
        assert waiting.verdict is Verdict.REQUIRE_APPROVAL

        with pytest.raises(PendingLimitReached) as raised:
            calls.decide(AGENT, "payments.refund", refund_args("ord-1002", LARGE), context=WHY)

        refused = raised.value
        assert refused.decision is not None
        assert refused.decision_id == refused.decision.id != waiting.id
        assert refused.decision.approval is not None
        assert refused.decision.approval.state == "refused"
        assert "already has 1 approvals pending" in refused.refusal
        assert calls.wait(refused.decision_id, timeout=0).state == "denied"


class Refund:
    """A governed refund over `calls`' client: plain for a blocking client, else async."""

    def __init__(self, calls: Calls, **options: Any) -> None:
        self.loop = calls.loop
        self.ran: list[str] = []
        client = calls.client

        def blocking(order_id: str, amount: float, currency: str = "USD") -> str:
            self.ran.append(order_id)
            return f"refunded {order_id}"

        async def awaiting(order_id: str, amount: float, currency: str = "USD") -> str:
            return blocking(order_id, amount, currency)

        chosen = blocking if isinstance(client, EmbeddedClient | Client) else awaiting
        decorate = governed("payments.refund", client=client, agent=AGENT, context=WHY, **options)
        self.governed: Any = decorate(chosen)

    def __call__(self, order_id: str, amount: float) -> Any:
        return settled(self.loop, self.governed(order_id, amount))

    def resume(self, decision_id: str, wait: float = 0) -> Any:
        return settled(self.loop, self.governed.resume(decision_id, wait=wait))


class TestSameGovernedCalls:
    """`@governed` over each client: a plain function for the blocking ones, else async."""

    def test_allowed_runs_once_and_is_reported(self, calls: Calls, charter: Charter) -> None:
        refund = Refund(calls)

        assert refund("ord-1", 40) == "refunded ord-1"
        assert refund.ran == ["ord-1"]
        assert [p["success"] for p in payloads(charter, "outcome")] == [True]

    def test_needing_people_raises_and_does_not_run(self, calls: Calls) -> None:
        refund = Refund(calls)

        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-2", LARGE)

        assert refund.ran == []
        assert calls.get_decision(raised.value.decision_id).state == "pending"

    def test_resumed_once_approved_runs_the_approved_args(
        self, calls: Calls, charter: Charter
    ) -> None:
        refund = Refund(calls)
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-3", LARGE)
        charter.approve(charter.approvals(state="pending")[0].id, ALICE)

        assert refund.resume(raised.value.decision_id) == "refunded ord-3"
        with pytest.raises(GrantRefused) as again:
            refund.resume(raised.value.decision_id)

        assert (refund.ran, again.value.code) == (["ord-3"], "grant_used")

    def test_resumed_after_a_denial_raises_the_reason(self, calls: Calls, charter: Charter) -> None:
        refund = Refund(calls)
        with pytest.raises(ApprovalRequired) as raised:
            refund("ord-3", LARGE)
        charter.deny(charter.approvals(state="pending")[0].id, ALICE, reason="not shipped yet")

        with pytest.raises(ActionDenied) as denied:
            refund.resume(raised.value.decision_id)

        assert (denied.value.reason, refund.ran) == ("not shipped yet", [])


class TestSameUnavailability:
    """A closed embedded service cannot write its ledger; both embedded clients say so."""

    @pytest.mark.parametrize("kind", ["embedded", "async-embedded"])
    def test_fails_closed_then_open(
        self, kind: str, bundle: Bundle, store_target: str, request: pytest.FixtureRequest
    ) -> None:
        closed = make_charter(bundle, store_target)
        closed.close()
        with asyncio.Runner() as loop:
            shut = Calls(client_of(kind, closed, request), loop)
            with pytest.raises(CharterUnavailable, match="the ledger cannot be written"):
                shut.decide(AGENT, "payments.refund", refund_args(), context=WHY)

            lenient = Calls(client_of(kind, closed, request, fail_open=True), loop)
            refund = Refund(lenient)
            assert refund("ord-4", 40) == "refunded ord-4"
        assert (refund.ran, lenient.client.stats.failed_open) == (["ord-4"], 1)
