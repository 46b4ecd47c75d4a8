"""Who may call what: bearer keys, roles per route, and agent keys bound to their agent."""

from __future__ import annotations

import time

import pytest
from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter
from charter.server import ROUTE_ROLES, create_app
from charter.service import PRINCIPAL_TTL
from charter.store import open_store

ROUTES = [
    ("POST", "/v1/decisions"),
    ("GET", "/v1/decisions/d-000001"),
    ("POST", "/v1/grants/redeem"),
    ("POST", "/v1/outcomes"),
    ("GET", "/v1/ledger"),
    ("GET", "/v1/ledger/verify"),
    ("GET", "/v1/agents/support-bot"),
    ("PUT", "/v1/agents/support-bot"),
]


def kinds(charter: Charter) -> list[str]:
    return [e.kind for e in charter.ledger_page(0, 1000)]


class TestAuthentication:
    """Every /v1 route needs a live key; health and metrics do not."""

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_missing_key_is_401(self, client: TestClient, keys: Keys, method: str, path: str):
        """A request without `Authorization` is refused before anything else happens."""
        response = client.request(method, path, json={})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer", "bearer  "])
    def test_invalid_key_is_401(self, client: TestClient, keys: Keys, header: str):
        """An unknown secret or another scheme is unauthenticated."""
        response = client.post("/v1/decisions", json=refund(), headers={"Authorization": header})
        assert response.status_code == 401
        assert response.json()["error"]["field"] == "Authorization"

    def test_revoked_key_is_401(self, client: TestClient, charter: Charter, keys: Keys):
        """A key stops working the moment it is revoked."""
        assert client.get("/v1/ledger", headers=bearer(keys.auditor)).status_code == 200
        auditor = next(k["key_id"] for k in charter.list_keys() if k["role"] == "auditor")
        charter.revoke_key(auditor)
        assert client.get("/v1/ledger", headers=bearer(keys.auditor)).status_code == 401

    def test_no_keys_refuses_and_says_how_to_start(self, client: TestClient):
        """With no keys at all the server runs closed and names the command that fixes it."""
        response = client.post("/v1/decisions", json=refund(), headers=bearer("chk_anything"))
        assert response.status_code == 401
        assert "charter keys create --role admin" in response.json()["error"]["message"]

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
    def test_open_routes(self, client: TestClient, path: str):
        """Health, readiness, metrics and the API document need no key."""
        assert client.get(path).status_code == 200


class TestRoles:
    """Each route admits only the roles in `ROUTE_ROLES`."""

    def test_every_route_has_a_role_entry(self, charter):
        """The table names every authenticated operation the API documents, and no other."""
        document = create_app(charter).openapi()
        operations = {
            op["operationId"]
            for path in document["paths"].values()
            for op in path.values()
            if op.get("security")
        }
        assert set(ROUTE_ROLES) == operations
        assert {"approve_approval", "deny_approval", "modify_approval"} <= operations

    @pytest.mark.parametrize(
        ("role", "method", "path"),
        [
            ("auditor", "POST", "/v1/decisions"),
            ("reviewer", "POST", "/v1/decisions"),
            ("agent", "GET", "/v1/ledger"),
            ("reviewer", "GET", "/v1/ledger/verify"),
            ("agent", "PUT", "/v1/agents/support-bot"),
            ("auditor", "POST", "/v1/grants/redeem"),
            ("policy_admin", "POST", "/v1/outcomes"),
        ],
    )
    def test_wrong_role_is_403(
        self, client: TestClient, keys: Keys, role: str, method: str, path: str
    ):
        """A valid key whose role the route does not admit is forbidden."""
        response = client.request(method, path, json={}, headers=bearer(getattr(keys, role)))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"


class TestAgentBinding:
    """An agent key acts only as its own agent, and a try at another is recorded."""

    def test_deciding_as_another_agent_is_403_and_recorded(
        self, client: TestClient, charter: Charter, keys: Keys
    ):
        """The trainee's key cannot ask on behalf of `support-bot`; nothing is decided."""
        before = kinds(charter)
        response = client.post("/v1/decisions", json=refund(), headers=bearer(keys.trainee))
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("agent_mismatch", "agent")
        after = kinds(charter)
        assert after[len(before) :] == ["access.denied"]
        denied = charter.ledger_page(len(after) - 1, 1)[0].payload_object()
        assert denied["agent"] == "support-bot-trainee"
        assert denied["named_agent"] == "support-bot"

    def test_own_agent_is_allowed(self, client: TestClient, keys: Keys):
        """The same request with the agent's own key is decided."""
        response = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent))
        assert response.status_code == 200
        assert response.json()["verdict"] == "allow"

    def test_reading_another_agents_decision_is_403(self, client: TestClient, keys: Keys):
        """An agent key cannot read, or report on, another agent's decision."""
        decided = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent)).json()
        read = client.get(f"/v1/decisions/{decided['id']}", headers=bearer(keys.trainee))
        assert read.status_code == 403
        outcome = client.post(
            "/v1/outcomes",
            json={"decision_id": decided["id"], "success": True},
            headers=bearer(keys.trainee),
        )
        assert outcome.status_code == 403
        agent = client.get("/v1/agents/support-bot", headers=bearer(keys.trainee))
        assert agent.status_code == 403

    def test_admin_may_name_any_agent(self, client: TestClient, keys: Keys):
        """Keys of other roles are not bound to an agent."""
        response = client.post("/v1/decisions", json=refund(), headers=bearer(keys.admin))
        assert response.status_code == 200


class TestRevocationElsewhere:
    """Keys revoked by another process stop working within the lookup cache's lifetime."""

    def test_revoked_elsewhere_is_401(
        self, client: TestClient, charter: Charter, keys: Keys, store_target: str
    ):
        """A key revoked in the database by the CLI is refused within a second."""
        assert client.get("/v1/ledger", headers=bearer(keys.auditor)).status_code == 200
        auditor = next(k["key_id"] for k in charter.list_keys() if k["role"] == "auditor")
        other = open_store(store_target)
        try:
            assert other.revoke_key(auditor, "2026-03-02T10:00:00.000000Z")
        finally:
            other.close()
        time.sleep(PRINCIPAL_TTL + 0.05)
        assert client.get("/v1/ledger", headers=bearer(keys.auditor)).status_code == 401
