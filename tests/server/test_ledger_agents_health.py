"""The ledger pages and verification, the agents resource, health, readiness, metrics."""

from __future__ import annotations

from typing import ClassVar

import pytest
from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter


class TestLedger:
    """GET /v1/ledger pages through entries; /v1/ledger/verify checks the chain."""

    def test_paging_covers_every_entry_once(self, client: TestClient, charter: Charter, keys: Keys):
        """Following `next_after` visits every entry in order, then stops."""
        for n in range(5):
            client.post("/v1/decisions", json=refund(order=n + 1), headers=bearer(keys.agent))
        seen: list[int] = []
        after: int | None = 0
        while after is not None:
            page = client.get(
                "/v1/ledger", params={"after": after, "limit": 3}, headers=bearer(keys.auditor)
            ).json()
            seen += [e["seq"] for e in page["entries"]]
            after = page["next_after"]
        assert seen == list(range(1, charter.store.head().seq + 1))

    def test_entries_carry_hashes(self, client: TestClient, charter: Charter, keys: Keys):
        """An entry shows its payload and the hashes that pin it in the chain."""
        page = client.get("/v1/ledger?limit=1", headers=bearer(keys.auditor)).json()
        entry = page["entries"][0]
        assert entry["seq"] == 1
        assert entry["kind"] == "policy.deployed"
        assert entry["chain_hash"] == charter.ledger_page(0, 1)[0].chain_hash

    def test_bad_paging_is_422(self, client: TestClient, keys: Keys):
        """A negative `after` or a `limit` out of range names the parameter."""
        for query, field in (("after=-1", "after"), ("limit=0", "limit"), ("limit=x", "limit")):
            response = client.get(f"/v1/ledger?{query}", headers=bearer(keys.auditor))
            assert response.status_code == 422
            assert response.json()["error"]["field"] == field

    def test_verify(self, client: TestClient, keys: Keys):
        """An untouched ledger verifies; the report names its head."""
        client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent))
        report = client.get("/v1/ledger/verify", headers=bearer(keys.auditor)).json()
        assert report["ok"] is True
        assert report["problem"] is None
        assert report["count"] == report["head"]["seq"]


class TestAgents:
    """GET/PUT /v1/agents/{id}: the registry over the bundle's agents, changes recorded."""

    PROFILE: ClassVar[dict[str, object]] = {
        "role": "support",
        "owner": "ops@example.com",
        "model_id": "gpt-5-mini",
        "model_version": "2026-09-01",
        "autonomy": 1,
    }

    def test_get_agent(self, client: TestClient, keys: Keys):
        """An agent key reads its own profile, as the bundle defines it."""
        body = client.get("/v1/agents/support-bot", headers=bearer(keys.agent)).json()
        assert body["role"] == "support"
        assert body["autonomy"] == body["autonomy_in_force"] == 2
        assert body["autonomy_override"] is None
        assert body["source"] == "bundle"

    def test_unknown_agent_is_404(self, client: TestClient, keys: Keys):
        """An agent neither the registry nor the policy knows is not found."""
        response = client.get("/v1/agents/nobody", headers=bearer(keys.admin))
        assert response.status_code == 404

    def test_put_registers_a_new_agent(self, client: TestClient, charter: Charter, keys: Keys):
        """A new agent is 201, recorded, and decided on from then on."""
        response = client.put(
            "/v1/agents/night-bot", json=self.PROFILE, headers=bearer(keys.policy_admin)
        )
        assert response.status_code == 201
        assert response.json()["source"] == "registry"
        last = charter.ledger_page(charter.store.head().seq - 1, 1)[0]
        assert last.kind == "agent.updated"
        assert last.payload_object()["by"].startswith("key:")
        decided = client.post(
            "/v1/decisions", json={**refund(), "agent": "night-bot"}, headers=bearer(keys.admin)
        ).json()
        assert decided["role"] == "support"
        assert decided["autonomy_level"] == 1

    def test_put_replaces_a_bundle_agent(self, client: TestClient, keys: Keys):
        """Updating an agent the bundle defines is 200 and the registry's entry wins."""
        response = client.put(
            "/v1/agents/support-bot", json=self.PROFILE, headers=bearer(keys.admin)
        )
        assert response.status_code == 200
        again = client.get("/v1/agents/support-bot", headers=bearer(keys.agent)).json()
        assert (again["autonomy"], again["model_version"]) == (1, "2026-09-01")
        assert again["source"] == "registry"

    @pytest.mark.parametrize(
        ("change", "field"),
        [({"autonomy": 99}, "autonomy"), ({"role": "wizard"}, "role"), ({"extra": 1}, "extra")],
    )
    def test_put_invalid_is_422(self, client: TestClient, keys: Keys, change, field):
        """Levels and roles the bundle does not define, or unknown fields, name the field."""
        body = {**self.PROFILE, **change}
        response = client.put("/v1/agents/support-bot", json=body, headers=bearer(keys.admin))
        assert response.status_code == 422
        assert response.json()["error"]["field"] == field

    def test_put_needs_the_whole_profile(self, client: TestClient, keys: Keys):
        """PUT replaces: a missing field is refused, not defaulted."""
        body = {k: v for k, v in self.PROFILE.items() if k != "owner"}
        response = client.put("/v1/agents/support-bot", json=body, headers=bearer(keys.admin))
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "owner"


class TestHealth:
    """Liveness, readiness and metrics."""

    def test_healthz(self, client: TestClient):
        """The process answers."""
        assert client.get("/healthz").json()["status"] == "ok"

    def test_readyz(self, client: TestClient):
        """Ready when the bundle is loaded and the store answers and is writable."""
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {"bundle": "ok", "store": "ok", "ledger_writer": "ok"}

    def test_readyz_503_when_store_is_closed(self, client: TestClient, charter: Charter):
        """A store that cannot answer makes the server not ready."""
        charter.store.close()
        charter.store.head = _fail  # type: ignore[method-assign]
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["store"].startswith("unreadable")

    def test_readyz_503_when_the_ledger_writer_is_gone(self, client: TestClient, charter: Charter):
        """A writer that cannot take appends makes the server not ready, and says why."""
        charter._writer.close()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "closed" in response.json()["checks"]["ledger_writer"]

    def test_metrics(self, client: TestClient, keys: Keys):
        """Decisions by verdict, latency, appends and replays are exported."""
        headers = {**bearer(keys.agent), "Idempotency-Key": "m-1"}
        client.post("/v1/decisions", json=refund(), headers=headers)
        client.post("/v1/decisions", json=refund(), headers=headers)
        text = client.get("/metrics").text
        assert 'charter_decisions_total{verdict="allow"} 1.0' in text
        assert "charter_decision_seconds_count 1.0" in text
        assert "charter_idempotent_replays_total 1.0" in text
        assert "charter_ledger_append_seconds_count" in text
        assert "charter_ledger_append_seconds_count 0.0" not in text


def _fail() -> None:
    raise RuntimeError("the store is closed")
