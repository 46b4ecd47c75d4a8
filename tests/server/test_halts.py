"""`/v1/halts`: list, halt and resume over HTTP, with who may do which, on both stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter, load_bundle
from charter.errors import PolicyInvalid
from charter.examples import EXAMPLE_POLICY
from charter.policy import KEY_ROLES
from charter.service import ROLES


def decide(client: TestClient, keys: Keys) -> dict[str, object]:
    answer = client.post("/v1/decisions", json=refund(), headers=bearer(keys.agent))
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


class TestHalting:
    def test_a_halt_denies_the_next_decision_and_is_recorded(
        self, client: TestClient, keys: Keys, charter: Charter
    ) -> None:
        assert decide(client, keys)["verdict"] == "allow"
        answer = client.post(
            "/v1/halts",
            json={"scope": "agent", "target": "support-bot", "reason": "refund loop"},
            headers=bearer(keys.reviewer),
        )
        assert answer.status_code == 201, answer.text
        assert answer.json() == {
            "halts": [{"scope": "agent", "target": "support-bot", "reason": "refund loop"}]
        }
        denied = decide(client, keys)
        assert denied["verdict"] == "deny"
        assert "refund loop" in str(denied["reasons"])
        halts = [e for e in charter.store.entries() if e.kind == "halt"]
        assert len(halts) == 1
        payload = halts[0].payload_object()
        assert payload["reason"] == "refund loop"
        reviewer_id = next(k["key_id"] for k in charter.list_keys() if k["role"] == "reviewer")
        assert payload["by"] == f"key:{reviewer_id}"

    def test_the_halts_in_force_are_listed(self, client: TestClient, keys: Keys) -> None:
        assert client.get("/v1/halts", headers=bearer(keys.auditor)).json() == {"halts": []}
        for body in (
            {"scope": "action", "target": "payments.refund", "reason": "bank outage"},
            {"scope": "all", "reason": "incident 42"},
        ):
            assert (
                client.post("/v1/halts", json=body, headers=bearer(keys.admin)).status_code == 201
            )
        listed = client.get("/v1/halts", headers=bearer(keys.reviewer)).json()["halts"]
        assert {(h["scope"], h["target"]) for h in listed} == {
            ("action", "payments.refund"),
            ("all", None),
        }

    def test_resuming_lifts_the_halt_and_is_recorded(
        self, client: TestClient, keys: Keys, charter: Charter
    ) -> None:
        body = {"scope": "agent", "target": "support-bot", "reason": "checking"}
        client.post("/v1/halts", json=body, headers=bearer(keys.admin))
        answer = client.delete(
            "/v1/halts",
            params={"scope": "agent", "target": "support-bot"},
            headers=bearer(keys.admin),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"halts": []}
        assert decide(client, keys)["verdict"] == "allow"
        assert [e.kind for e in charter.store.entries() if e.kind in ("halt", "resume")] == [
            "halt",
            "resume",
        ]

    def test_a_halt_not_in_force_cannot_be_lifted(self, client: TestClient, keys: Keys) -> None:
        answer = client.delete(
            "/v1/halts", params={"scope": "agent", "target": "nobody"}, headers=bearer(keys.admin)
        )
        assert answer.status_code == 404
        assert "no halt of agent `nobody`" in answer.json()["error"]["message"]


class TestWhoMay:
    def test_agents_may_not_halt_or_list(self, client: TestClient, keys: Keys) -> None:
        body = {"scope": "all", "reason": "me"}
        assert client.post("/v1/halts", json=body, headers=bearer(keys.agent)).status_code == 403
        assert client.get("/v1/halts", headers=bearer(keys.agent)).status_code == 403

    def test_a_reviewer_may_halt_but_not_resume(self, client: TestClient, keys: Keys) -> None:
        body = {"scope": "all", "reason": "stop everything"}
        assert client.post("/v1/halts", json=body, headers=bearer(keys.reviewer)).status_code == 201
        refused = client.delete("/v1/halts", params={"scope": "all"}, headers=bearer(keys.reviewer))
        assert refused.status_code == 403
        assert client.get("/v1/halts", headers=bearer(keys.admin)).json()["halts"] != []

    def test_no_key_no_halt(self, client: TestClient) -> None:
        assert client.post("/v1/halts", json={"scope": "all", "reason": "x"}).status_code == 401


class TestBadInput:
    def test_the_wrong_field_is_named(self, client: TestClient, keys: Keys) -> None:
        cases = [
            ({"scope": "everything", "reason": "x"}, "scope"),
            ({"scope": "agent", "reason": "x"}, "target"),
            ({"scope": "all", "target": "support-bot", "reason": "x"}, "target"),
            ({"scope": "all", "reason": "   "}, "reason"),
            ({"scope": "all"}, "reason"),
            ({"scope": "all", "reason": "x", "extra": 1}, "extra"),
        ]
        for body, field in cases:
            answer = client.post("/v1/halts", json=body, headers=bearer(keys.admin))
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["error"]["field"] == field, (body, answer.json())
        assert client.get("/v1/halts", headers=bearer(keys.admin)).json() == {"halts": []}

    def test_a_body_that_is_not_json_is_refused(self, client: TestClient, keys: Keys) -> None:
        answer = client.post(
            "/v1/halts",
            content=b"{not json",
            headers={**bearer(keys.admin), "Content-Type": "application/json"},
        )
        assert answer.status_code == 400


class TestWhatAHaltFreezes:
    def test_an_unredeemed_grant_waits_for_the_halt_to_be_lifted(
        self, client: TestClient, keys: Keys
    ) -> None:
        grant = decide(client, keys)["grant"]
        assert isinstance(grant, dict)
        redeem = {"grant_id": grant["id"], "token": grant["token"], "args": refund()["args"]}
        halt = {"scope": "action", "target": "payments.refund", "reason": "bank outage"}
        client.post("/v1/halts", json=halt, headers=bearer(keys.admin))
        refused = client.post("/v1/grants/redeem", json=redeem, headers=bearer(keys.agent))
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "halted"
        assert "bank outage" in refused.json()["error"]["message"]
        client.delete(
            "/v1/halts",
            params={"scope": "action", "target": "payments.refund"},
            headers=bearer(keys.admin),
        )
        used = client.post("/v1/grants/redeem", json=redeem, headers=bearer(keys.agent))
        assert used.status_code == 200, used.text

    def test_a_pending_approval_is_marked_and_cannot_be_approved(
        self, client: TestClient, keys: Keys, charter: Charter
    ) -> None:
        reviewer = charter.create_key("reviewer", label="fin@example.com", groups=("finance",))[1]
        opened = client.post("/v1/decisions", json=refund(2500), headers=bearer(keys.agent))
        approval_id = opened.json()["approval"]["id"]
        halt = {"scope": "agent", "target": "support-bot", "reason": "suspicious refunds"}
        client.post("/v1/halts", json=halt, headers=bearer(keys.admin))
        shown = client.get(f"/v1/approvals/{approval_id}", headers=bearer(reviewer)).json()
        assert shown["halted"] == "suspicious refunds"
        approve = client.post(f"/v1/approvals/{approval_id}/approve", headers=bearer(reviewer))
        assert approve.status_code == 409, approve.text
        assert approve.json()["error"]["code"] == "halted"
        denied = client.post(
            f"/v1/approvals/{approval_id}/deny",
            json={"reason": "not while halted"},
            headers=bearer(reviewer),
        )
        assert denied.status_code == 200, denied.text
        assert denied.json()["halted"] is None  # settled: nothing left to freeze


class TestARoleHalt:
    def test_it_stops_every_agent_of_the_role_and_no_other(
        self, client: TestClient, keys: Keys, charter: Charter
    ) -> None:
        halt = {"scope": "role", "target": "support", "reason": "support bots misbehave"}
        assert client.post("/v1/halts", json=halt, headers=bearer(keys.admin)).status_code == 201
        denied = decide(client, keys)
        assert denied["verdict"] == "deny"
        assert "support bots misbehave" in str(denied["reasons"])
        infra = charter.decide(
            {
                "agent": "infra-bot",
                "action": "infra.scale",
                "args": {"service": "svc-1", "replicas": 3},
                "context": {"rationale": "evening peak"},
            }
        )
        assert "halted" not in [r.code for r in infra.decision.reasons]

    def test_it_follows_the_agent_into_another_role(
        self, client: TestClient, keys: Keys, charter: Charter
    ) -> None:
        """Moving the agent out of the halted role lets it act again; the halt stays."""
        halt = {"scope": "role", "target": "support", "reason": "support bots misbehave"}
        client.post("/v1/halts", json=halt, headers=bearer(keys.admin))
        profile = client.get("/v1/agents/support-bot", headers=bearer(keys.admin)).json()
        moved = {
            "role": "outreach",
            "owner": profile["owner"],
            "model_id": profile["model_id"],
            "model_version": profile["model_version"],
            "autonomy": profile["autonomy"],
        }
        answer = client.put("/v1/agents/support-bot", json=moved, headers=bearer(keys.admin))
        assert answer.status_code == 200, answer.text
        again = decide(client, keys)
        assert "support bots misbehave" not in str(again["reasons"])
        assert client.get("/v1/halts", headers=bearer(keys.admin)).json()["halts"] != []


class TestPermissions:
    """Who may halt and resume is the live bundle's `permissions` section."""

    @staticmethod
    def deploy(charter: Charter, tmp_path: Path, permissions: str) -> None:
        folder = tmp_path / "policy"
        shutil.copytree(EXAMPLE_POLICY, folder)
        (folder / "permissions.yaml").write_text(permissions)
        charter.deploy(load_bundle(folder))

    def test_a_bundle_can_let_reviewers_resume_and_only_admins_halt(
        self, client: TestClient, keys: Keys, charter: Charter, tmp_path: Path
    ) -> None:
        self.deploy(
            charter, tmp_path, "permissions:\n  halt: [admin]\n  resume: [admin, reviewer]\n"
        )
        body = {"scope": "all", "reason": "incident"}
        refused = client.post("/v1/halts", json=body, headers=bearer(keys.reviewer))
        assert refused.status_code == 403
        assert "needs one of: admin" in refused.json()["error"]["message"]
        assert client.post("/v1/halts", json=body, headers=bearer(keys.admin)).status_code == 201
        resumed = client.delete("/v1/halts", params={"scope": "all"}, headers=bearer(keys.reviewer))
        assert resumed.status_code == 200, resumed.text
        assert resumed.json() == {"halts": []}

    def test_unknown_roles_are_refused_where_they_are_written(self, tmp_path: Path) -> None:
        folder = tmp_path / "policy"
        shutil.copytree(EXAMPLE_POLICY, folder)
        (folder / "permissions.yaml").write_text(
            "permissions:\n  halt: [reviewer, operator]\n  kill: [admin]\n"
        )
        with pytest.raises(PolicyInvalid) as info:
            load_bundle(folder)
        found = {(p.file, p.line, p.code) for p in info.value.problems}
        assert found == {
            ("permissions.yaml", 2, "unknown_role"),
            ("permissions.yaml", 3, "unknown_key"),
        }
        assert "`operator`, which is no key role" in str(info.value)

    def test_the_bundle_knows_every_key_role(self) -> None:
        assert set(KEY_ROLES) == set(ROLES)
