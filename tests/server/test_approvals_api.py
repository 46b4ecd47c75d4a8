"""The approvals API: reviewers list, read and act; agents wait on the long poll."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _api import Keys, bearer, refund
from fastapi.testclient import TestClient

from charter import Charter
from charter.server import create_app
from charter.testing import FakeClock


@pytest.fixture
def reviewers(charter: Charter) -> dict[str, str]:
    return {
        "alice": charter.create_key("reviewer", label="alice@example.com", groups=("finance",))[1],
        "bob": charter.create_key("reviewer", label="bob@example.com", groups=("finance",))[1],
        "olga": charter.create_key("reviewer", label="olga@example.com", groups=("ops",))[1],
    }


def pending_refund(
    client: TestClient, keys: Keys, amount: float = 2500, order: int = 1
) -> dict[str, Any]:
    answer = client.post("/v1/decisions", json=refund(amount, order), headers=bearer(keys.agent))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "require_approval"
    assert body["approval"]["state"] == "pending"
    return dict(body)


class TestReading:
    def test_the_inbox_lists_pending_approvals_by_deadline(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str], clock: FakeClock
    ) -> None:
        first = pending_refund(client, keys, order=1)
        clock.advance(minutes=5)
        pending_refund(client, keys, order=2)
        answer = client.get("/v1/approvals", headers=bearer(reviewers["alice"]))
        assert answer.status_code == 200
        body = answer.json()
        assert body["total"] == 2
        assert body["approvals"][0]["decision_id"] == first["id"]
        assert body["approvals"][0]["deadline"] < body["approvals"][1]["deadline"]
        by_group = client.get("/v1/approvals?group=ops", headers=bearer(reviewers["olga"]))
        assert by_group.json()["total"] == 0

    def test_one_approval_has_what_a_reviewer_needs(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        decision = pending_refund(client, keys)
        aid = decision["approval"]["id"]
        answer = client.get(f"/v1/approvals/{aid}", headers=bearer(reviewers["alice"]))
        assert answer.status_code == 200
        body = answer.json()
        assert body["args"]["amount"] == 2500
        assert body["context"]["rationale"] == "customer received a damaged item"
        assert body["agent_profile"]["owner"] == "support-lead@example.com"
        assert {f["id"] for f in body["factors"]} == {"refund-over-100", "refund-over-500"}

    def test_an_agent_key_cannot_read_the_inbox(self, client: TestClient, keys: Keys) -> None:
        answer = client.get("/v1/approvals", headers=bearer(keys.agent))
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "forbidden"

    def test_unknown_approval_is_404(self, client: TestClient, reviewers: dict[str, str]) -> None:
        answer = client.get("/v1/approvals/apr_nope", headers=bearer(reviewers["alice"]))
        assert answer.status_code == 404


class TestActing:
    def test_approve_then_the_agent_redeems_with_the_token_it_reads(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        decision = pending_refund(client, keys)
        aid = decision["approval"]["id"]
        answer = client.post(
            f"/v1/approvals/{aid}/approve",
            json={"note": "photos attached"},
            headers=bearer(reviewers["alice"]),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "approved"
        seen = client.get(f"/v1/decisions/{decision['id']}", headers=bearer(keys.agent)).json()
        assert seen["state"] == "approved"
        grant = seen["grant"]
        redeem = client.post(
            "/v1/grants/redeem",
            json={
                "grant_id": grant["id"],
                "token": grant["token"],
                "args": seen["approval"]["args"],
            },
            headers=bearer(keys.agent),
        )
        assert redeem.status_code == 200, redeem.text
        reviewer_view = client.get(
            f"/v1/decisions/{decision['id']}", headers=bearer(reviewers["alice"])
        ).json()
        assert "token" not in reviewer_view["grant"]  # reviewers never see a grant's token

    def test_a_reviewer_outside_the_group_is_403_and_recorded(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str], charter: Charter
    ) -> None:
        aid = pending_refund(client, keys)["approval"]["id"]
        answer = client.post(f"/v1/approvals/{aid}/approve", headers=bearer(reviewers["olga"]))
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "not_in_group"
        last = list(charter.store.entries())[-1]
        assert last.kind == "access.denied"
        assert last.payload_object()["reason"] == "not_in_group"

    def test_an_agent_key_can_never_approve(self, client: TestClient, keys: Keys) -> None:
        aid = pending_refund(client, keys)["approval"]["id"]
        answer = client.post(f"/v1/approvals/{aid}/approve", headers=bearer(keys.agent))
        assert answer.status_code == 403

    def test_the_same_person_twice_is_409(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str], charter: Charter
    ) -> None:
        aid = pending_refund(client, keys)["approval"]["id"]
        client.post(
            f"/v1/approvals/{aid}/deny", json={"reason": "no"}, headers=bearer(reviewers["alice"])
        )
        again = client.post(f"/v1/approvals/{aid}/approve", headers=bearer(reviewers["bob"]))
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "not_pending"

    def test_deny_needs_a_reason(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        aid = pending_refund(client, keys)["approval"]["id"]
        answer = client.post(
            f"/v1/approvals/{aid}/deny", json={}, headers=bearer(reviewers["alice"])
        )
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "reason"

    def test_modify_with_a_broken_contract_is_422_naming_args(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        aid = pending_refund(client, keys)["approval"]["id"]
        answer = client.post(
            f"/v1/approvals/{aid}/modify",
            json={"args": {"order_id": "ord-1", "amount": "lots", "currency": "USD"}},
            headers=bearer(reviewers["alice"]),
        )
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "args"

    def test_modify_changes_what_the_grant_allows(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        decision = pending_refund(client, keys)
        aid = decision["approval"]["id"]
        new = {"order_id": "ord-1", "amount": 800, "currency": "USD"}
        answer = client.post(
            f"/v1/approvals/{aid}/modify", json={"args": new}, headers=bearer(reviewers["alice"])
        )
        assert answer.status_code == 200, answer.text
        seen = client.get(f"/v1/decisions/{decision['id']}", headers=bearer(keys.agent)).json()
        assert seen["approval"]["args"] == new
        assert seen["approval"]["modified"] is True

    def test_a_batch_is_all_or_nothing(
        self, client: TestClient, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        ids = [pending_refund(client, keys, 2000 + i, order=i)["approval"]["id"] for i in range(3)]
        similar = client.get(f"/v1/approvals/{ids[0]}/similar", headers=bearer(reviewers["alice"]))
        assert {a["id"] for a in similar.json()["approvals"]} == set(ids)
        answer = client.post(
            "/v1/approvals/batch",
            json={"ids": ids, "decision": "deny", "reason": "fraud ring"},
            headers=bearer(reviewers["alice"]),
        )
        assert answer.status_code == 200, answer.text
        assert {a["state"] for a in answer.json()["approvals"]} == {"denied"}


class TestWaiting:
    def test_the_long_poll_answers_when_a_reviewer_approves(
        self, charter: Charter, keys: Keys, reviewers: dict[str, str]
    ) -> None:
        with TestClient(create_app(charter)) as client:
            decision = pending_refund(client, keys)
            aid = decision["approval"]["id"]

            def approve() -> None:
                time.sleep(0.2)
                with TestClient(create_app(charter)) as other:
                    other.post(f"/v1/approvals/{aid}/approve", headers=bearer(reviewers["alice"]))

            worker = threading.Thread(target=approve)
            worker.start()
            started = time.monotonic()
            answer = client.get(
                f"/v1/decisions/{decision['id']}?wait=10", headers=bearer(keys.agent)
            )
            waited = time.monotonic() - started
            worker.join()
        assert answer.json()["state"] == "approved"
        assert 0.15 < waited < 5

    def test_the_long_poll_ends_at_its_wait(self, client: TestClient, keys: Keys) -> None:
        decision = pending_refund(client, keys)
        answer = client.get(f"/v1/decisions/{decision['id']}?wait=0.2", headers=bearer(keys.agent))
        assert answer.json()["state"] == "pending"

    def test_a_wait_out_of_range_is_422(self, client: TestClient, keys: Keys) -> None:
        decision = pending_refund(client, keys)
        answer = client.get(f"/v1/decisions/{decision['id']}?wait=600", headers=bearer(keys.agent))
        assert answer.status_code == 422


def test_the_pending_cap_is_429_and_recorded(
    bundle: Any, store_target: str, clock: FakeClock
) -> None:
    with Charter(bundle, store_target, clock=clock, max_pending=1) as charter:
        agent = charter.create_key("agent", agent="support-bot")[1]
        with TestClient(create_app(charter)) as client:
            first = client.post("/v1/decisions", json=refund(2500, 1), headers=bearer(agent))
            assert first.status_code == 200
            second = client.post("/v1/decisions", json=refund(2500, 2), headers=bearer(agent))
        assert second.status_code == 429
        error = second.json()["error"]
        assert error["code"] == "too_many_pending"
        refused = charter.get_decision(error["decision_id"])
        assert refused is not None
        assert refused.state == "denied"
        assert list(charter.store.entries())[-1].kind == "approval.refused"
