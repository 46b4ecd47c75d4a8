"""POST /v1/decisions and GET /v1/decisions/{id}: the answer, idempotency, concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter


def decision_entries(charter: Charter) -> int:
    return sum(1 for e in charter.ledger_page(0, 10_000) if e.kind == "decision")


class TestDecide:
    """A decision answer carries the verdict, its reasons and, for `allow`, a grant."""

    def test_allow_answer_shape(self, client: TestClient, charter: Charter, keys: Keys):
        """An allowed refund answers the decision with a single-use grant, durable first."""
        response = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent))
        assert response.status_code == 200
        body = response.json()
        for field in ("id", "verdict", "risk", "factors", "reasons", "policy_version"):
            assert field in body
        assert body["verdict"] == "allow"
        assert body["idempotent_replay"] is False
        grant = body["grant"]
        assert set(grant) >= {"id", "token", "expires_at", "args_hash"}
        assert grant["args_hash"].startswith("sha256:")
        entry = charter.ledger_page(body["seq"] - 1, 1)[0]
        assert entry.kind == "decision"
        assert entry.payload_object()["decision_id"] == body["id"]
        assert grant["token"] not in entry.payload

    def test_require_approval_has_no_grant(self, client: TestClient, keys: Keys):
        """A refund above 1000 waits for finance: no grant."""
        body = client.post(
            "/v1/decisions", json=refund(2500, 1003), headers=bearer(keys.agent)
        ).json()
        assert body["verdict"] == "require_approval"
        assert body["grant"] is None

    def test_unknown_agent_and_action_are_recorded_denials(
        self, client: TestClient, charter: Charter, keys: Keys
    ):
        """Charter fails closed: an unknown agent or action is a recorded deny, not an error."""
        for request in (
            {**refund(), "agent": "nobody"},
            {**refund(), "action": "payments.teleport"},
        ):
            response = client.post("/v1/decisions", json=request, headers=bearer(keys.admin))
            assert response.status_code == 200
            assert response.json()["verdict"] == "deny"
        assert decision_entries(charter) == 2

    def test_get_decision_state(self, client: TestClient, keys: Keys):
        """Reading a decision shows its state and its grant without the token."""
        decided = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent)).json()
        view = client.get(f"/v1/decisions/{decided['id']}", headers=bearer(keys.reviewer))
        assert view.status_code == 200
        body = view.json()
        assert body["state"] == "allowed"
        assert body["grant"]["id"] == decided["grant"]["id"]
        assert "token" not in body["grant"]

    def test_get_unknown_decision_is_404(self, client: TestClient, keys: Keys):
        """An id that was never decided is not found."""
        response = client.get("/v1/decisions/d-999999", headers=bearer(keys.auditor))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


class TestIdempotency:
    """Same key and payload: same decision and grant; another payload: 422, nothing decided."""

    def test_header_repeat_returns_the_same_decision(
        self, client: TestClient, charter: Charter, keys: Keys
    ):
        """A repeat with the same `Idempotency-Key` adds no ledger entry and says it replayed."""
        headers = {**bearer(keys.agent), "Idempotency-Key": "refund-ord-1001"}
        first = client.post("/v1/decisions", json=refund(), headers=headers)
        second = client.post("/v1/decisions", json=refund(), headers=headers)
        assert first.status_code == second.status_code == 200
        a, b = first.json(), second.json()
        assert a["id"] == b["id"]
        assert a["grant"] == b["grant"]
        assert (a["idempotent_replay"], b["idempotent_replay"]) == (False, True)
        assert second.headers["idempotent-replayed"] == "true"
        assert decision_entries(charter) == 1

    def test_body_key_works_like_the_header(self, client: TestClient, keys: Keys):
        """`idempotency_key` in the body and the header are one and the same key."""
        in_body = refund(idempotency_key="k-1")
        first = client.post("/v1/decisions", json=in_body, headers=bearer(keys.agent)).json()
        headers = {**bearer(keys.agent), "Idempotency-Key": "k-1"}
        second = client.post("/v1/decisions", json=refund(), headers=headers).json()
        assert first["id"] == second["id"]

    def test_header_and_body_keys_must_agree(self, client: TestClient, keys: Keys):
        """Two different keys in one request are refused, naming the field."""
        headers = {**bearer(keys.agent), "Idempotency-Key": "k-1"}
        response = client.post("/v1/decisions", json=refund(idempotency_key="k-2"), headers=headers)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "idempotency_key"

    def test_same_key_other_payload_is_422(self, client: TestClient, charter: Charter, keys: Keys):
        """Reusing a key for a different request decides nothing."""
        headers = {**bearer(keys.agent), "Idempotency-Key": "k-1"}
        client.post("/v1/decisions", json=refund(40), headers=headers)
        response = client.post("/v1/decisions", json=refund(41), headers=headers)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_conflict"
        assert decision_entries(charter) == 1

    def test_concurrent_same_key_decides_once(
        self, client: TestClient, charter: Charter, keys: Keys
    ):
        """Sixteen threads sending one key at once get one decision between them."""
        headers = {**bearer(keys.agent), "Idempotency-Key": "storm"}
        barrier = threading.Barrier(16)

        def send(_: int) -> tuple[int, str | None]:
            barrier.wait(timeout=10)
            response = client.post("/v1/decisions", json=refund(), headers=headers)
            return response.status_code, response.json().get("id")

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, range(16)))
        ok = [decision_id for status, decision_id in results if status == 200]
        assert all(status in (200, 409) for status, _ in results)
        assert ok
        assert len(set(ok)) == 1
        assert decision_entries(charter) == 1
