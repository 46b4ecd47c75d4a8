"""When Charter cannot be asked: fail closed by default, fail open only when told, counted."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx2
import pytest
from _sdk import AGENT, RATIONALE

from charter.sdk import AsyncClient, CharterUnavailable, Client, governed

WHY = {"rationale": RATIONALE}
ALLOW = {
    "id": "d-1",
    "seq": 1,
    "at": "2026-03-02T10:00:00.000000Z",
    "verdict": "allow",
    "risk": 0,
    "factors": [],
    "reasons": [{"code": "allowed", "message": "within the envelope"}],
    "policy_version": "sha256:p",
    "agent": AGENT,
    "action": "payments.refund",
    "grant": {"id": "g-1", "token": "t", "expires_at": "2026-03-02T10:05:00Z", "args_hash": "h"},
    "idempotent_replay": False,
}


def server(**answers: tuple[int, Any]) -> httpx2.MockTransport:
    """A fake server answering each path (`/v1/decisions` as `decisions`) as given."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        name = request.url.path.removeprefix("/v1/").replace("/", "_")
        status, body = answers[name]
        return httpx2.Response(status, content=json.dumps(body).encode())

    return httpx2.MockTransport(handle)


def refund_with(client: Client, ran: list[str]) -> Any:
    @governed("payments.refund", client=client, agent=AGENT, context=WHY)
    def refund(order_id: str, amount: float, currency: str) -> str:
        ran.append(order_id)
        return "refunded"

    return refund


class TestFailClosed:
    def test_an_unreachable_server_stops_the_action(self, closed_port: int) -> None:
        """With nothing listening, the call raises CharterUnavailable and nothing runs."""
        ran: list[str] = []
        client = Client(f"http://127.0.0.1:{closed_port}", "chk_key", timeout=2)

        with pytest.raises(CharterUnavailable, match="could not be asked"):
            refund_with(client, ran)("ord-1", 40, "USD")

        assert ran == []
        assert client.stats.failed_open == 0

    def test_a_5xx_answer_stops_the_action(self) -> None:
        """A failing server (503) is unavailable too, with the status kept."""
        ran: list[str] = []
        down = server(decisions=(503, {"error": {"code": "ledger_error", "message": "disk"}}))
        client = Client("http://charter", "chk_key", transport=down)

        with pytest.raises(CharterUnavailable) as raised:
            refund_with(client, ran)("ord-1", 40, "USD")

        assert raised.value.status == 503
        assert ran == []

    def test_an_unreachable_server_stops_a_coroutine(self, closed_port: int) -> None:
        """The async client fails closed the same way."""
        client = AsyncClient(f"http://127.0.0.1:{closed_port}", "chk_key", timeout=2)

        @governed("payments.refund", client=client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(CharterUnavailable):
            asyncio.run(refund("ord-1", 40, "USD"))


class TestFailOpen:
    def test_the_action_runs_and_is_counted_and_logged(
        self, closed_port: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With fail_open the action runs, `stats.failed_open` counts it and a warning says so."""
        ran: list[str] = []
        client = Client(f"http://127.0.0.1:{closed_port}", "chk_key", timeout=2, fail_open=True)
        refund = refund_with(client, ran)

        with caplog.at_level(logging.WARNING, logger="charter.sdk"):
            assert refund("ord-1", 40, "USD") == "refunded"
            assert refund("ord-2", 40, "USD") == "refunded"

        assert ran == ["ord-1", "ord-2"]
        assert client.stats.failed_open == 2
        assert "running `payments.refund` anyway" in caplog.text

    def test_a_coroutine_runs_and_is_counted(self, closed_port: int) -> None:
        """The async client fails open the same way."""
        client = AsyncClient(
            f"http://127.0.0.1:{closed_port}", "chk_key", timeout=2, fail_open=True
        )

        @governed("payments.refund", client=client, agent=AGENT, context=WHY)
        async def refund(order_id: str, amount: float, currency: str) -> str:
            return order_id

        assert asyncio.run(refund("ord-1", 40, "USD")) == "ord-1"
        assert client.stats.failed_open == 1


class TestLostOutcome:
    def test_an_outcome_that_cannot_be_recorded_does_not_fail_the_call(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The action already ran, so a failed report is counted and logged, not raised."""
        ran: list[str] = []
        flaky = server(
            decisions=(200, ALLOW),
            grants_redeem=(200, {"grant_id": "g-1"}),
            outcomes=(503, {"error": {"code": "ledger_error", "message": "disk full"}}),
        )
        client = Client("http://charter", "chk_key", transport=flaky)

        with caplog.at_level(logging.WARNING, logger="charter.sdk"):
            assert refund_with(client, ran)("ord-1", 40, "USD") == "refunded"

        assert ran == ["ord-1"]
        assert client.stats.outcomes_lost == 1
        assert client.stats.failed_open == 0
        assert "outcome of decision d-1 could not be recorded" in caplog.text
