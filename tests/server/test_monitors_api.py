"""`/v1/monitors`, `/v1/monitors/series`, `/v1/alerts` and `/v1/autonomy/proposals`."""

from __future__ import annotations

from _api import Keys, bearer
from starlette.testclient import TestClient

from charter import Charter, Verdict
from charter.testing import FakeClock

NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


def notes(charter: Charter, clock: FakeClock, count: int, *, every: int = 1) -> None:
    """`count` notes that ran; one in `every` succeeded."""
    for i in range(count):
        record = charter.decide(NOTE)
        assert record.verdict is Verdict.ALLOW
        assert record.grant is not None
        charter.redeem(record.grant.id, record.grant.token, NOTE["args"])
        charter.record_outcome(record.id, success=i % every == 0)
        clock.advance(seconds=1)


def demoted(charter: Charter, clock: FakeClock) -> None:
    """Failures that demote support-bot, then 100 clean notes: a proposal is open."""
    notes(charter, clock, 20, every=5)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    clock.advance(minutes=1)
    notes(charter, clock, 100)
    clock.advance(minutes=1)
    charter.monitors.evaluate()


def test_figures_by_level_with_their_samples(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    notes(charter, clock, 10, every=2)
    clock.advance(minutes=1)
    answer = client.get(
        "/v1/monitors",
        params={"agent": "support-bot", "level": "agent"},
        headers=bearer(keys.auditor),
    )
    assert answer.status_code == 200, answer.text
    (figures,) = answer.json()["figures"]
    assert (figures["level"], figures["agent"], figures["action"]) == ("agent", "support-bot", None)
    assert (figures["decisions"], figures["outcomes"], figures["success_rate"]) == (10, 10, 0.5)
    assert figures["calibration_samples"] == 10
    by_action = client.get("/v1/monitors", headers=bearer(keys.reviewer)).json()["figures"]
    assert [(f["agent"], f["action"]) for f in by_action] == [("support-bot", "crm.note")]
    wrong = client.get("/v1/monitors", params={"level": "team"}, headers=bearer(keys.reviewer))
    assert wrong.status_code == 422
    assert client.get("/v1/monitors", headers=bearer(keys.agent)).status_code == 403


def test_a_series_for_charts(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    notes(charter, clock, 5)
    clock.advance(minutes=2)
    answer = client.get(
        "/v1/monitors/series",
        params={"agent": "support-bot", "points": 10, "step": 60},
        headers=bearer(keys.reviewer),
    )
    assert answer.status_code == 200, answer.text
    series = answer.json()
    assert (series["agent"], series["step_seconds"], len(series["points"])) == (
        "support-bot",
        60,
        10,
    )
    assert sum(p["decisions"] for p in series["points"]) == 5
    assert client.get("/v1/monitors/series", headers=bearer(keys.reviewer)).status_code == 422


def test_alerts_and_a_proposal_accepted(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    demoted(charter, clock)
    alerts = client.get("/v1/alerts", headers=bearer(keys.reviewer)).json()["alerts"]
    assert [a["alert"] for a in alerts] == ["outcomes-failing"]
    assert alerts[0]["runbook"] == "runbooks/failures.md"
    (proposal,) = client.get("/v1/autonomy/proposals", headers=bearer(keys.auditor)).json()[
        "proposals"
    ]
    assert (proposal["agent"], proposal["level"]) == ("support-bot", 2)
    path = "/v1/autonomy/proposals/support-bot/accept"
    assert client.post(path, headers=bearer(keys.reviewer)).status_code == 403
    accepted = client.post(path, headers=bearer(keys.policy_admin))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"proposals": []}
    assert charter.autonomy("support-bot") == 2
    again = client.post(path, headers=bearer(keys.admin))
    assert again.status_code == 404
    assert "no proposal for agent `support-bot`" in again.json()["error"]["message"]


def test_a_proposal_declined_with_a_reason(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    demoted(charter, clock)
    path = "/v1/autonomy/proposals/support-bot/decline"
    missing = client.post(path, json={}, headers=bearer(keys.admin))
    assert missing.status_code == 422
    assert "reason" in missing.json()["error"]["message"]
    declined = client.post(path, json={"reason": "after the audit"}, headers=bearer(keys.admin))
    assert declined.status_code == 200, declined.text
    assert charter.autonomy("support-bot") == 1
    (entry,) = charter.store.entries(kinds={"autonomy.declined"})
    assert entry.payload_object()["reason"] == "after the audit"
