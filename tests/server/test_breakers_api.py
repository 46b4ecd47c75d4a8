"""Circuit breakers where operators look: `/v1/breakers`, `/metrics` and the inbox."""

from __future__ import annotations

import re

from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter, Verdict
from charter.testing import FakeClock


def trip(charter: Charter) -> None:
    """Ten refunds that each ran and failed: `refunds-failing` opens."""
    for order in range(10):
        request = refund(order=2000 + order)
        record = charter.decide(request)
        assert record.verdict is Verdict.ALLOW
        assert record.grant is not None
        charter.redeem(record.grant.id, record.grant.token, request["args"])
        charter.record_outcome(record.id, success=False, error="provider timeout")


def circuit(client: TestClient, keys: Keys) -> dict[str, object]:
    answer = client.get("/v1/breakers", headers=bearer(keys.auditor))
    assert answer.status_code == 200, answer.text
    (found,) = [b for b in answer.json()["breakers"] if b["breaker"] == "refunds-failing"]
    return dict(found)


def test_the_api_lists_each_circuit_with_its_figures(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    assert client.get("/v1/breakers", headers=bearer(keys.auditor)).json() == {"breakers": []}
    trip(charter)
    opened = circuit(client, keys)
    assert opened["status"] == "open"
    assert (opened["failures"], opened["sample"], opened["generation"]) == (10, 10, 1)
    assert (opened["trials_left"], opened["trials_succeeded"], opened["trials_failed"]) == (0, 0, 0)
    assert opened["then"] == "require_approval"
    assert opened["agent"] is None
    assert (opened["window_seconds"], opened["min_sample"], opened["failure_rate"]) == (
        900,
        10,
        0.5,
    )
    decided = client.post("/v1/decisions", json=refund(order=3000), headers=bearer(keys.agent))
    assert decided.json()["verdict"] == "require_approval"
    assert "breaker_open" in {r["code"] for r in decided.json()["reasons"]}
    clock.advance(minutes=10)
    half = circuit(client, keys)
    assert (half["status"], half["trials_left"]) == ("half_open", 3)


def test_who_may_read_the_breakers(client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/breakers", headers=bearer(keys.agent)).status_code == 403
    assert client.get("/v1/breakers").status_code == 401
    for role in (keys.reviewer, keys.policy_admin, keys.admin, keys.auditor):
        assert client.get("/v1/breakers", headers=bearer(role)).status_code == 200


def test_metrics_report_each_circuit(client: TestClient, charter: Charter) -> None:
    trip(charter)
    text = client.get("/metrics").text
    labels = 'action="payments.refund",agent="",breaker="refunds-failing"'
    assert f"charter_breaker_state{{{labels}}} 2.0" in text
    assert f"charter_breaker_transitions_total{{{labels}}} 1.0" in text
    assert f"charter_breaker_outcomes{{{labels}}} 10.0" in text
    assert f"charter_breaker_failures{{{labels}}} 10.0" in text


def test_the_inbox_shows_what_a_breaker_holds_back(client: TestClient, charter: Charter) -> None:
    secret = charter.create_key("reviewer", label="rita@example.com", groups=["finance"])[1]
    form = client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    client.post("/ui/signin", data={"key": secret, "csrf": csrf.group(1)}, follow_redirects=False)
    assert 'data-testid="breakers-open"' not in client.get("/ui/").text
    trip(charter)
    page = client.get("/ui/").text
    assert 'data-testid="breakers-open"' in page
    assert "refunds are failing at the payment provider" in page
    assert "each needs approval" in page
