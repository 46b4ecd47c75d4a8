"""POST /v1/grants/redeem and POST /v1/outcomes: single use, bound arguments, recorded."""

from __future__ import annotations

from typing import Any

from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter
from charter.testing import FakeClock


def allowed(client: TestClient, keys: Keys) -> dict[str, Any]:
    body = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent)).json()
    assert body["verdict"] == "allow"
    return body


def redeem(client: TestClient, keys: Keys, decision: dict[str, Any], **change: Any):
    request = {
        "grant_id": decision["grant"]["id"],
        "token": decision["grant"]["token"],
        "args": refund()["args"],
        **change,
    }
    return client.post("/v1/grants/redeem", json=request, headers=bearer(keys.agent))


def kinds(charter: Charter) -> list[str]:
    return [e.kind for e in charter.ledger_page(0, 1000)]


class TestRedeem:
    """A grant runs once, for exactly the decided arguments, before it expires."""

    def test_redeem_once_then_409(self, client: TestClient, charter: Charter, keys: Keys):
        """The first redeem succeeds; the second is `grant_used` (409), both recorded."""
        decision = allowed(client, keys)
        first = redeem(client, keys, decision)
        assert first.status_code == 200
        assert first.json()["decision_id"] == decision["id"]
        second = redeem(client, keys, decision)
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "grant_used"
        assert kinds(charter)[-2:] == ["grant.redeemed", "grant.refused"]
        view = client.get(f"/v1/decisions/{decision['id']}", headers=bearer(keys.agent)).json()
        assert view["state"] == "redeemed"

    def test_tampered_args_are_403(self, client: TestClient, charter: Charter, keys: Keys):
        """Swapping an argument after the decision is `args_mismatch` (403), recorded."""
        decision = allowed(client, keys)
        args = {**refund()["args"], "amount": 4000}
        response = redeem(client, keys, decision, args=args)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "args_mismatch"
        assert kinds(charter)[-1] == "grant.refused"
        assert redeem(client, keys, decision).status_code == 200

    def test_wrong_token_is_403(self, client: TestClient, keys: Keys):
        """A guessed token is indistinguishable from an unknown grant."""
        decision = allowed(client, keys)
        response = redeem(client, keys, decision, token="forged")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "grant_unknown"

    def test_expired_grant_is_403(self, client: TestClient, clock: FakeClock, keys: Keys):
        """After its time to live a grant is refused as `grant_expired`."""
        decision = allowed(client, keys)
        clock.advance(hours=1)
        response = redeem(client, keys, decision)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "grant_expired"

    def test_refusals_are_counted(self, client: TestClient, keys: Keys):
        """Metrics count redeemed grants and refusals by reason."""
        decision = allowed(client, keys)
        redeem(client, keys, decision)
        redeem(client, keys, decision)
        text = client.get("/metrics").text
        assert "charter_grants_redeemed_total 1.0" in text
        assert 'charter_grants_refused_total{code="grant_used"} 1.0' in text


class TestOutcomes:
    """The executor reports what happened; it lands in the ledger, linked to the decision."""

    def test_outcome_recorded(self, client: TestClient, charter: Charter, keys: Keys):
        """A reported success is a ledger entry and moves the decision to `executed`."""
        decision = allowed(client, keys)
        assert redeem(client, keys, decision).status_code == 200
        report = {
            "decision_id": decision["id"],
            "success": True,
            "duration_ms": 12.5,
            "result_digest": "sha256:abc",
        }
        response = client.post("/v1/outcomes", json=report, headers=bearer(keys.agent))
        assert response.status_code == 200
        body = response.json()
        assert body["decision_id"] == decision["id"]
        entry = charter.ledger_page(body["seq"] - 1, 1)[0]
        assert entry.kind == "outcome"
        assert entry.payload_object()["duration_ms"] == 12.5
        view = client.get(f"/v1/decisions/{decision['id']}", headers=bearer(keys.agent)).json()
        assert view["state"] == "executed"

    def test_second_outcome_is_409(self, client: TestClient, keys: Keys):
        """One outcome per decision."""
        decision = allowed(client, keys)
        report = {"decision_id": decision["id"], "success": False, "error": "timeout"}
        assert client.post("/v1/outcomes", json=report, headers=bearer(keys.agent)).is_success
        again = client.post("/v1/outcomes", json=report, headers=bearer(keys.agent))
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conflict"

    def test_unknown_decision_is_404(self, client: TestClient, keys: Keys):
        """An outcome for a decision that does not exist is refused."""
        report = {"decision_id": "d-424242", "success": True}
        for key in (keys.agent, keys.admin):
            response = client.post("/v1/outcomes", json=report, headers=bearer(key))
            assert response.status_code == 404

    def test_wrong_type_names_the_field(self, client: TestClient, keys: Keys):
        """`success` must be a boolean, not a string that looks like one."""
        report = {"decision_id": "d-1", "success": "yes"}
        response = client.post("/v1/outcomes", json=report, headers=bearer(keys.agent))
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "success"
