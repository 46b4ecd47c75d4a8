"""`/v1/monitors`, `/v1/monitors/series`, `/v1/alerts` and `/v1/autonomy/proposals`."""

from __future__ import annotations

from _api import Keys, bearer
from starlette.testclient import TestClient

from _traffic import demoted, notes
from charter import Charter
from charter.testing import FakeClock


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


def test_an_agent_says_when_the_controller_set_its_level(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    """`GET /v1/agents/{id}` names the rule of a standing demotion, and forgets it once lifted."""
    path = "/v1/agents/support-bot"
    assert client.get(path, headers=bearer(keys.admin)).json()["demotion"] is None
    demoted(charter, clock)
    agent = client.get(path, headers=bearer(keys.admin)).json()
    assert (agent["autonomy"], agent["autonomy_in_force"]) == (2, 1)
    demotion = agent["demotion"]
    assert (demotion["rule"], demotion["from"], demotion["level"]) == (
        "demote-on-drift-or-failures",
        2,
        1,
    )
    assert demotion["at"].endswith("Z")
    accepted = client.post(
        "/v1/autonomy/proposals/support-bot/accept", headers=bearer(keys.policy_admin)
    )
    assert accepted.status_code == 200, accepted.text
    after = client.get(path, headers=bearer(keys.admin)).json()
    assert (after["autonomy_in_force"], after["demotion"]) == (2, None)
