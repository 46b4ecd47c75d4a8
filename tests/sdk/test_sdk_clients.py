"""The clients' own methods, the same over HTTP and in-process, and error answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest
from _sdk import AGENT, RATIONALE, refund_args

import charter.sdk
from charter import Charter, Verdict
from charter.errors import (
    CharterError,
    Conflict,
    GrantRefused,
    IdempotencyConflict,
    NotFound,
    RequestInvalid,
)
from charter.sdk import (
    AsyncClient,
    AsyncEmbeddedClient,
    CharterUnavailable,
    Client,
    EmbeddedClient,
    PendingLimitReached,
)
from charter.sdk._protocol import error_from_answer

SyncClient = EmbeddedClient | Client
WHY = {"rationale": RATIONALE}


class TestSyncClient:
    def test_decide_answers_a_grant_for_an_allow(self, sync_client: SyncClient) -> None:
        """An allowed decision carries its id, reasons and a grant bound to the args."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)

        assert result.verdict is Verdict.ALLOW
        assert result.allowed
        assert result.reasons[0].code == "allowed"
        assert result.grant is not None
        assert result.grant.args_hash
        assert "token" not in repr(result.grant) or "<hidden>" in repr(result.grant)

    def test_a_grant_is_redeemed_once(self, sync_client: SyncClient) -> None:
        """The second redeem of a grant is refused with `grant_used`."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        assert result.grant is not None

        sync_client.redeem(result.grant, refund_args())
        with pytest.raises(GrantRefused) as raised:
            sync_client.redeem(result.grant, refund_args())

        assert raised.value.code == "grant_used"

    def test_redeeming_with_other_args_is_refused(self, sync_client: SyncClient) -> None:
        """Arguments changed after the decision are refused with `args_mismatch`."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        assert result.grant is not None

        with pytest.raises(GrantRefused) as raised:
            sync_client.redeem(result.grant, refund_args(amount=4000))

        assert raised.value.code == "args_mismatch"

    def test_get_decision_follows_the_state(self, sync_client: SyncClient) -> None:
        """A decision reads `allowed`, then `redeemed`, then `executed` once reported."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        assert result.grant is not None

        states = [sync_client.get_decision(result.id)]
        sync_client.redeem(result.grant, refund_args())
        states.append(sync_client.get_decision(result.id))
        sync_client.report_outcome(result.id, success=True, duration_ms=3.5)
        states.append(sync_client.get_decision(result.id))

        assert [s.state if s else None for s in states] == ["allowed", "redeemed", "executed"]
        final = states[-1]
        assert final is not None
        assert final.outcome is not None
        assert final.outcome["success"] is True
        # The decision's own agent reads its grant with the token (it redeems grants an
        # approval issues that way); the token still works once, as the grant above did.
        assert final.grant is not None
        assert final.grant.id == result.grant.id
        assert final.approval is None

    def test_an_unknown_decision_reads_as_none(self, sync_client: SyncClient) -> None:
        """`get_decision` answers None for an id that was never decided."""
        assert sync_client.get_decision("d-999999") is None

    def test_wait_returns_a_final_state_at_once(self, sync_client: SyncClient) -> None:
        """Waiting on a decision that is not waiting for people returns it immediately."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)

        assert sync_client.wait(result.id, timeout=5).state == "allowed"

    def test_wait_on_an_unknown_decision_is_an_error(self, sync_client: SyncClient) -> None:
        """Waiting on an id that was never decided raises `decision_unknown`."""
        with pytest.raises(CharterError) as raised:
            sync_client.wait("d-999999", timeout=1)

        assert raised.value.code == "decision_unknown"

    def test_a_second_outcome_is_a_conflict(self, sync_client: SyncClient) -> None:
        """An outcome is recorded once per decision."""
        result = sync_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
        sync_client.report_outcome(result.id, success=True)

        with pytest.raises(Conflict):
            sync_client.report_outcome(result.id, success=False, error="again")

    def test_an_outcome_for_no_decision_is_not_found(self, sync_client: SyncClient) -> None:
        """Reporting on an unknown decision raises NotFound."""
        with pytest.raises(NotFound):
            sync_client.report_outcome("d-999999", success=True)

    def test_an_idempotency_key_gives_back_the_first_decision(
        self, sync_client: SyncClient
    ) -> None:
        """The same key and request answer the first decision, marked as replayed."""
        first = sync_client.decide(
            AGENT, "payments.refund", refund_args(), context=WHY, idempotency_key="k-1"
        )
        again = sync_client.decide(
            AGENT, "payments.refund", refund_args(), context=WHY, idempotency_key="k-1"
        )

        assert (again.id, again.replayed, first.replayed) == (first.id, True, False)
        assert again.grant == first.grant

    def test_a_reused_idempotency_key_with_other_args_conflicts(
        self, sync_client: SyncClient
    ) -> None:
        """The same key with a different request raises IdempotencyConflict."""
        sync_client.decide(AGENT, "payments.refund", refund_args(), idempotency_key="k-1")

        with pytest.raises(IdempotencyConflict):
            sync_client.decide(
                AGENT, "payments.refund", refund_args(amount=41), idempotency_key="k-1"
            )

    def test_a_malformed_request_names_its_field(self, sync_client: SyncClient) -> None:
        """A malformed request raises RequestInvalid naming the offending field."""
        with pytest.raises(RequestInvalid) as raised:
            sync_client.decide(AGENT, "Payments Refund!", refund_args())

        assert raised.value.field == "action"
        assert not raised.value.message.startswith("`action`: `action`")

    def test_args_that_are_not_json_are_refused(self, sync_client: SyncClient) -> None:
        """Arguments JSON cannot carry are refused before anything is decided."""
        with pytest.raises(RequestInvalid):
            sync_client.decide(AGENT, "payments.refund", {**refund_args(), "amount": {1, 2}})


class TestHttpClient:
    def test_a_wrong_key_is_refused(self, http_client: Client) -> None:
        """A key the server does not know is refused with `unauthenticated`."""
        stranger = Client("http://testserver", "chk_nobody", transport=http_client._http._transport)

        with pytest.raises(CharterError) as raised:
            stranger.decide(AGENT, "payments.refund", refund_args())

        assert raised.value.code == "unauthenticated"

    def test_an_agent_key_acts_only_as_its_agent(self, http_client: Client) -> None:
        """A support-bot key asking as another agent is refused with `agent_mismatch`."""
        with pytest.raises(CharterError) as raised:
            http_client.decide("infra-bot", "infra.restart", {"service": "api"})

        assert raised.value.code == "agent_mismatch"

    def test_the_api_key_is_not_in_the_repr(self, http_client: Client, api_key: str) -> None:
        """Printing a client never shows its key."""
        assert api_key not in repr(http_client)


class TestUrls:
    """Every request goes under the base URL, its path prefix included."""

    @staticmethod
    def recorder(charter: Charter, seen: list[str]) -> httpx2.MockTransport:
        """A transport that notes each URL and answers as the server would."""
        record = charter.decide(
            {"agent": AGENT, "action": "crm.note", "args": {"customer_id": "c", "text": "t"},
             "context": WHY}
        )  # fmt: skip
        view = charter.get_decision(record.id)
        assert view is not None

        def handle(request: httpx2.Request) -> httpx2.Response:
            seen.append(str(request.url))
            if request.method == "GET":
                return httpx2.Response(200, json=view.to_json(with_token=True))
            if request.url.path.endswith("/v1/decisions"):
                return httpx2.Response(200, json=record.to_json())
            return httpx2.Response(200, json={})

        return httpx2.MockTransport(handle)

    @pytest.mark.parametrize(
        "base", ["https://ops.example/charter", "https://ops.example/charter/"]
    )
    def test_blocking_client(self, charter: Charter, base: str) -> None:
        """Hot paths (merged once) and other paths (merged by httpx2) alike."""
        seen: list[str] = []
        with Client(base, "chk_k", transport=self.recorder(charter, seen)) as client:
            result = client.decide(AGENT, "crm.note", {"customer_id": "c", "text": "t"})
            assert result.grant is not None
            client.redeem(result.grant, {"customer_id": "c", "text": "t"})
            client.report_outcome(result.id, success=True)
            client.get_decision("d/1 ü")
        assert seen == [
            "https://ops.example/charter/v1/decisions",
            "https://ops.example/charter/v1/grants/redeem",
            "https://ops.example/charter/v1/outcomes",
            "https://ops.example/charter/v1/decisions/d%2F1%20%C3%BC",
        ]

    def test_async_client(self, charter: Charter) -> None:
        """The async client builds the same URLs."""
        seen: list[str] = []
        transport = self.recorder(charter, seen)

        async def scenario() -> None:
            async with AsyncClient("http://127.0.0.1:8470", "k", transport=transport) as client:
                result = await client.decide(AGENT, "crm.note", {"customer_id": "c", "text": "t"})
                assert result.grant is not None
                await client.redeem(result.grant, {"customer_id": "c", "text": "t"})
                await client.report_outcome(result.id, success=False, error="timeout")

        asyncio.run(scenario())
        assert seen == [
            "http://127.0.0.1:8470/v1/decisions",
            "http://127.0.0.1:8470/v1/grants/redeem",
            "http://127.0.0.1:8470/v1/outcomes",
        ]


class TestAsyncClient:
    def test_decide_redeem_report_and_read(self, async_client: Any) -> None:
        """The async clients decide, redeem, report and read like the blocking ones."""

        async def scenario() -> list[str | None]:
            result = await async_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
            assert result.grant is not None
            await async_client.redeem(result.grant, refund_args())
            await async_client.report_outcome(result.id, success=True)
            final = await async_client.wait(result.id, timeout=1)
            missing = await async_client.get_decision("d-999999")
            return [final.state, missing]

        assert asyncio.run(scenario()) == ["executed", None]

    def test_a_grant_is_refused_the_second_time(self, async_client: Any) -> None:
        """The async clients raise GrantRefused for a spent grant, as the blocking ones do."""

        async def scenario() -> str:
            result = await async_client.decide(AGENT, "payments.refund", refund_args(), context=WHY)
            await async_client.redeem(result.grant, refund_args())
            try:
                await async_client.redeem(result.grant, refund_args())
            except GrantRefused as refused:
                return refused.code
            return "redeemed twice"

        assert asyncio.run(scenario()) == "grant_used"

    def test_clients_close_cleanly(self, charter: Charter) -> None:
        """The async HTTP client closes its pool as an async context manager."""

        async def scenario() -> None:
            async with AsyncClient("http://127.0.0.1:9", "chk_key") as client:
                assert client.stats.failed_open == 0

        asyncio.run(scenario())
        assert repr(AsyncEmbeddedClient(charter)).startswith("AsyncEmbeddedClient(")


def answer(status: int, code: str, message: str = "m", field: str | None = None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()


class TestErrorAnswers:
    @pytest.mark.parametrize(
        ("status", "code", "expected"),
        [
            (403, "grant_unknown", GrantRefused),
            (409, "grant_used", GrantRefused),
            (403, "grant_expired", GrantRefused),
            (403, "args_mismatch", GrantRefused),
            (422, "idempotency_conflict", IdempotencyConflict),
            (404, "not_found", NotFound),
            (409, "conflict", Conflict),
            (422, "request_invalid", RequestInvalid),
            (500, "internal", CharterUnavailable),
            (503, "ledger_error", CharterUnavailable),
            (429, "too_many", CharterUnavailable),
            (429, "too_many_pending", PendingLimitReached),
        ],
    )
    def test_codes_map_to_the_embedded_errors(
        self, status: int, code: str, expected: type[CharterError]
    ) -> None:
        """Each stable code becomes the error the embedded service raises for it."""
        error = error_from_answer(status, answer(status, code))

        assert type(error) is expected
        if expected is not CharterUnavailable:
            assert error.code == code

    def test_a_refusal_at_the_cap_keeps_the_decision_it_names(self) -> None:
        """A 429 `too_many_pending` naming its decision carries the id (no decision yet)."""
        body = json.dumps(
            {"error": {"code": "too_many_pending", "message": "cap", "decision_id": "d-7"}}
        ).encode()

        error = error_from_answer(429, body)

        assert isinstance(error, PendingLimitReached)
        assert (error.decision_id, error.decision, error.refusal) == ("d-7", None, "cap")
        assert str(error) == "too_many_pending: cap (decision d-7)"

    def test_a_field_is_kept_without_repeating_it(self) -> None:
        """A RequestInvalid from the wire names its field once, as the server wrote it."""
        error = error_from_answer(422, answer(422, "request_invalid", "`args.x`: bad", "args.x"))

        assert isinstance(error, RequestInvalid)
        assert (error.field, error.message) == ("args.x", "`args.x`: bad")

    def test_an_unknown_code_keeps_its_code(self) -> None:
        """Codes the SDK does not know pass through as a CharterError with that code."""
        error = error_from_answer(401, answer(401, "unauthenticated", "who are you"))

        assert (type(error), error.code, error.message) == (
            CharterError,
            "unauthenticated",
            "who are you",
        )

    def test_a_body_that_is_not_an_error_document_still_maps(self) -> None:
        """A proxy's HTML 502 is unavailability; an odd 400 keeps its status in the code."""
        assert isinstance(error_from_answer(502, b"<html>bad gateway</html>"), CharterUnavailable)
        assert error_from_answer(400, b"nope").code == "http_400"


class TestPublicFace:
    def test_exports_are_pinned(self) -> None:
        """`charter.sdk` exports exactly this sorted list."""
        assert charter.sdk.__all__ == [
            "REFUSED",
            "WAITING",
            "ActionDenied",
            "ApprovalInfo",
            "ApprovalRequired",
            "AsyncClient",
            "AsyncEmbeddedClient",
            "AsyncGovernanceClient",
            "Backoff",
            "CharterUnavailable",
            "Client",
            "ClientStats",
            "DecisionResult",
            "DecisionStatus",
            "EmbeddedClient",
            "GovernanceClient",
            "Governed",
            "Grant",
            "GrantRefused",
            "PendingLimitReached",
            "Resolution",
            "context",
            "current_context",
            "governed",
        ]

    def test_every_export_exists(self) -> None:
        """Every name in `__all__` is importable from `charter.sdk`."""
        for name in charter.sdk.__all__:
            assert getattr(charter.sdk, name) is not None
