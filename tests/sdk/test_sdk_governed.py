"""`@governed` end to end, against the embedded gateway and the HTTP app alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _sdk import AGENT, RATIONALE, payloads, refund_args

from charter import Charter, Verdict
from charter.errors import GrantRefused
from charter.sdk import (
    ActionDenied,
    ApprovalRequired,
    AsyncClient,
    AsyncEmbeddedClient,
    Client,
    EmbeddedClient,
    context,
    governed,
)

SyncClient = EmbeddedClient | Client
AsyncAnyClient = AsyncEmbeddedClient | AsyncClient
WHY = {"confidence": 0.9, "rationale": RATIONALE}


def make_refund(client: SyncClient, ran: list[dict[str, Any]]) -> Any:
    @governed("payments.refund", client=client, agent=AGENT, context=WHY)
    def refund(order_id: str, amount: float, currency: str = "USD") -> str:
        ran.append({"order_id": order_id, "amount": amount})
        return f"refunded {amount} {currency}"

    return refund


class TestGovernedFunction:
    def test_allowed_runs_once_and_records_the_outcome(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """An allowed call runs once, its grant is redeemed and its success is in the ledger."""
        ran: list[dict[str, Any]] = []

        assert make_refund(sync_client, ran)("ord-1001", 40) == "refunded 40 USD"

        assert ran == [{"order_id": "ord-1001", "amount": 40}]
        decision = payloads(charter, "decision")[-1]
        assert decision["request"]["args"] == refund_args()
        assert payloads(charter, "grant.redeemed")[-1]["decision_id"] == decision["decision_id"]
        outcome = payloads(charter, "outcome")[-1]
        assert (outcome["decision_id"], outcome["success"]) == (decision["decision_id"], True)
        assert outcome["duration_ms"] >= 0

    def test_denied_raises_with_reasons_and_does_not_run(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A denied call raises ActionDenied with the decision id and reasons; nothing runs."""
        ran: list[dict[str, Any]] = []

        with pytest.raises(ActionDenied) as raised:
            make_refund(sync_client, ran)("ord-1004", 25000)

        assert ran == []
        assert raised.value.decision_id == payloads(charter, "decision")[-1]["decision_id"]
        assert [r.code for r in raised.value.reasons] == ["outside_envelope"]
        assert payloads(charter, "grant.redeemed") == []
        assert payloads(charter, "outcome") == []

    def test_approval_raises_with_the_id_to_wait_on(self, sync_client: SyncClient) -> None:
        """A call needing approval raises ApprovalRequired; its id reads as pending."""
        ran: list[dict[str, Any]] = []

        with pytest.raises(ApprovalRequired) as raised:
            make_refund(sync_client, ran)("ord-1003", 2500)

        assert ran == []
        error = raised.value
        assert error.verdict is Verdict.REQUIRE_APPROVAL
        assert error.route is not None
        assert error.route.id == "finance-review"
        status = sync_client.wait(error.decision_id, timeout=0.05)
        assert (status.state, status.waiting) == ("pending", True)

    def test_escalation_raises_approval_required(self, charter: Charter) -> None:
        """An escalated call raises ApprovalRequired with the `escalate` verdict."""

        @governed("db.migrate", client=EmbeddedClient(charter), agent="infra-bot")
        def migrate(database: str, migration: str) -> None:
            raise AssertionError("must not run")

        with (
            context(environment="prod", rationale=RATIONALE),
            pytest.raises(ApprovalRequired) as raised,
        ):
            migrate("orders", "0042_add_index")

        assert raised.value.verdict is Verdict.ESCALATE
        assert raised.value.route is not None
        assert raised.value.route.id == "sre-oncall"

    def test_an_exception_is_recorded_as_a_failure_then_re_raised(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """The function's exception is reported with its type and message, then re-raised."""

        @governed("payments.refund", client=sync_client, agent=AGENT, context=WHY)
        def refund(order_id: str, amount: float, currency: str) -> None:
            raise TimeoutError("the payment provider timed out")

        with pytest.raises(TimeoutError, match="timed out"):
            refund("ord-1001", 40, "USD")

        outcome = payloads(charter, "outcome")[-1]
        assert outcome["success"] is False
        assert outcome["error"] == "TimeoutError: the payment provider timed out"

    def test_an_idempotent_retry_does_not_run_twice(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """The same idempotency key gets the first decision back, whose grant is spent."""
        ran: list[str] = []

        @governed(
            "payments.refund",
            client=sync_client,
            agent=AGENT,
            context=WHY,
            idempotency_key=lambda args: f"refund-{args['order_id']}",
        )
        def refund(order_id: str, amount: float, currency: str) -> None:
            ran.append(order_id)

        refund("ord-1001", 40, "USD")
        with pytest.raises(GrantRefused) as raised:
            refund("ord-1001", 40, "USD")

        assert raised.value.code == "grant_used"
        assert ran == ["ord-1001"]
        assert len(payloads(charter, "decision")) == 1

    def test_args_changed_in_place_after_deciding_are_refused(self, charter: Charter) -> None:
        """A list argument changed between decision and run is refused by redeem; no run."""
        order_ids = ["ord-1", "ord-2"]
        ran: list[list[str]] = []

        class Racing(EmbeddedClient):
            """Another thread adds an order right after the decision."""

            def decide(self, *args: Any, **kwargs: Any) -> Any:
                decided = super().decide(*args, **kwargs)
                order_ids.append("ord-666")
                return decided

        @governed("orders.bulk_cancel", client=Racing(charter), agent=AGENT, context=WHY)
        def cancel(order_ids: list[str]) -> None:
            ran.append(order_ids)

        with pytest.raises(GrantRefused) as raised:
            cancel(order_ids)

        assert raised.value.code == "args_mismatch"
        assert ran == []
        assert payloads(charter, "grant.refused")[-1]["code"] == "args_mismatch"


class TestArguments:
    def test_defaults_and_keywords_become_args(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """Args are the bound arguments with defaults applied, whichever way they were passed."""
        make_refund(sync_client, [])(amount=40, order_id="ord-1001")

        assert payloads(charter, "decision")[-1]["request"]["args"] == refund_args()

    def test_self_and_excluded_parameters_are_left_out(self, charter: Charter) -> None:
        """A method's `self` and the parameters in `exclude` are not sent as args."""
        client = EmbeddedClient(charter)

        class Payments:
            @governed("payments.refund", client=client, agent=AGENT, context=WHY, exclude=["log"])
            def refund(self, order_id: str, amount: float, currency: str, log: Any) -> str:
                return order_id

        assert Payments().refund("ord-1001", 40, "USD", log=print) == "ord-1001"
        assert payloads(charter, "decision")[-1]["request"]["args"] == refund_args()

    def test_var_keywords_are_merged_into_args(self, charter: Charter) -> None:
        """`**kwargs` appear as top-level args, as the action's contract names them."""

        @governed("payments.refund", client=EmbeddedClient(charter), agent=AGENT, context=WHY)
        def refund(order_id: str, **rest: Any) -> None:
            pass

        refund("ord-1001", amount=40, currency="USD")

        assert payloads(charter, "decision")[-1]["request"]["args"] == refund_args()

    def test_excluding_an_unknown_parameter_is_a_type_error(self, charter: Charter) -> None:
        """A typo in `exclude` is caught when decorating, not at the first call."""
        with pytest.raises(TypeError, match="`sesion`"):

            @governed("crm.note", client=EmbeddedClient(charter), agent=AGENT, exclude=["sesion"])
            def note(customer_id: str, text: str, session: object) -> None:
                pass


class TestGovernedCoroutine:
    def test_allowed_runs_once_and_records_the_outcome(
        self, async_client: AsyncAnyClient, charter: Charter
    ) -> None:
        """An allowed coroutine runs once and its success is recorded."""
        ran: list[str] = []

        @governed("payments.refund", client=async_client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> str:
            await asyncio.sleep(0)
            ran.append(order_id)
            return "refunded"

        assert asyncio.run(refund("ord-1001", 40, "USD")) == "refunded"
        assert ran == ["ord-1001"]
        assert payloads(charter, "outcome")[-1]["success"] is True

    def test_denied_and_approval_raise(self, async_client: AsyncAnyClient) -> None:
        """A denied coroutine raises ActionDenied, one needing approval ApprovalRequired."""

        @governed("payments.refund", client=async_client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(ActionDenied):
            asyncio.run(refund("ord-1004", 25000, "USD"))
        with pytest.raises(ApprovalRequired) as raised:
            asyncio.run(refund("ord-1003", 2500, "USD"))

        status = asyncio.run(async_client.wait(raised.value.decision_id, timeout=0.05))
        assert status.state == "pending"

    def test_an_exception_is_recorded_as_a_failure_then_re_raised(
        self, async_client: AsyncAnyClient, charter: Charter
    ) -> None:
        """A coroutine's exception is reported as a failure, then re-raised."""

        @governed("payments.refund", client=async_client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> None:
            raise KeyError("order")

        with pytest.raises(KeyError):
            asyncio.run(refund("ord-1001", 40, "USD"))

        outcome = payloads(charter, "outcome")[-1]
        assert (outcome["success"], outcome["error"]) == (False, "KeyError: 'order'")

    def test_a_blocking_client_serves_a_coroutine(
        self, sync_client: SyncClient, charter: Charter
    ) -> None:
        """A coroutine may use a blocking client; its calls run in a worker thread."""

        @governed("payments.refund", client=sync_client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> str:
            return order_id

        assert asyncio.run(refund("ord-1001", 40, "USD")) == "ord-1001"
        assert payloads(charter, "outcome")[-1]["success"] is True

    def test_a_plain_function_refuses_an_async_client(self, charter: Charter) -> None:
        """A plain function cannot await, so an async client is refused when decorating."""
        with pytest.raises(TypeError, match="client is async"):

            @governed("crm.note", client=AsyncEmbeddedClient(charter), agent=AGENT)
            def note(customer_id: str, text: str) -> None:
                pass
