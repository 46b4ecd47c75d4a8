"""`/metrics` for what the service watches, and the dashboard and rules in `deploy/`.

The monitor series must say what `/v1/monitors`, `/v1/alerts` and the proposals say;
the Grafana dashboard and the Prometheus rules must use only names the server exports.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _api import Keys, bearer
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML
from starlette.testclient import TestClient

from _ci import missing
from _traffic import act, demoted, mail, notes
from charter import Charter, Verdict, load_bundle
from charter.examples import EXAMPLE_POLICY
from charter.server import _monitor_metrics, create_app
from charter.server._monitor_metrics import (
    DRIFT_FIGURES,
    FIGURE_GAUGES,
    MODEL_FIGURES,
    MonitorFigures,
)
from charter.service import Principal
from charter.testing import FakeClock, make_charter

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "charter-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "charter-alerts.yml"
FINANCE = Principal("key_f", "reviewer", name="fay@example.com", groups=("finance",))
#: A sample's name and labels, as the text format gives them.
Key = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture(autouse=True)
def inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scrape recomputes the series, however long that takes on a loaded machine.

    A snapshot slower than `INLINE_SECONDS` would be refreshed in a thread, and the
    scrapes that compare it with the API would read the one before; that path has its
    own test (`test_a_slow_refresh_runs_in_a_thread_and_scrapes_answer_meanwhile`).
    """
    monkeypatch.setattr(_monitor_metrics, "INLINE_SECONDS", math.inf)


def refund(amount: float, order: int, age: int = 60) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{order}", "amount": amount, "currency": "USD"},
        "context": {
            "confidence": 0.8,
            "rationale": "the parcel never arrived",
            "data_sources": [{"name": "orders-db", "age_seconds": age}],
        },
    }


def seed(charter: Charter, clock: FakeClock) -> None:
    """A fleet that gives every series.

    Drift, alerts, a demotion and a proposal, approvals approved and denied, every
    verdict, an open breaker and a halt.
    """
    for n in range(60):  # outreach-bot's baseline, more than the recent hour ago
        act(charter, mail("spring-sale", n), success=True)
        clock.advance(seconds=10)
    clock.advance(minutes=70)
    for n in range(60):
        act(charter, mail("black-friday", n), success=True)
        clock.advance(seconds=2)
    demoted(charter, clock)  # the alerts fire, support-bot is demoted and proposed back
    for order in range(5):  # large refunds wait for finance: 3 denied, 2 approved
        record = charter.decide(refund(1500, 100 + order))
        assert record.verdict is Verdict.REQUIRE_APPROVAL
        assert record.approval is not None
        clock.advance(minutes=3)
        if order < 3:
            charter.deny(str(record.approval["id"]), FINANCE, reason="not this one")
        else:
            charter.approve(str(record.approval["id"]), FINANCE)
    stale = charter.decide(refund(40, 200, age=7200))
    assert stale.verdict is Verdict.DENY
    migration = {
        "agent": "infra-bot",
        "action": "db.migrate",
        "args": {"database": "orders", "migration": "0042"},
        "context": {"environment": "prod", "confidence": 0.9},
    }
    assert charter.decide(migration).verdict is Verdict.ESCALATE
    for order in range(10):  # 6 of 10 fail: the shared refunds breaker opens
        act(charter, refund(50, 300 + order), success=order % 5 in (1, 3))
        clock.advance(seconds=1)
    charter.halt("agent", "support-bot-trainee", reason="retraining", by="key:rita")
    clock.advance(minutes=1)
    charter.monitors.evaluate()


def scrape(client: TestClient) -> dict[Key, float]:
    """Every sample of `/metrics`, by name and labels."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def named(samples: Mapping[Key, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def key(name: str, **labels: str | None) -> Key:
    return name, frozenset((k, v or "") for k, v in labels.items())


def of_action(name: str, agent: str, action: str, **labels: str) -> Key:
    """The key of an agent-action group's series (`level="action"`)."""
    where = {"level": "action", "agent": agent, "action": action}
    return key(name, **where, model_id=None, model_version=None, **labels)


def group_labels(figures: Mapping[str, Any]) -> dict[str, str | None]:
    return {k: figures[k] for k in ("level", "agent", "action", "model_id", "model_version")}


def api(client: TestClient, keys: Keys, path: str, **params: str) -> Any:
    answer = client.get(path, params=params, headers=bearer(keys.auditor))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_figure_is_what_the_api_reports(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    seed(charter, clock)
    samples = scrape(client)
    expected: dict[Key, float] = {}
    for level in ("model", "action", "agent", "fleet"):
        for figures in api(client, keys, "/v1/monitors", level=level)["figures"]:
            labels = group_labels(figures)
            for name in FIGURE_GAUGES:
                value = figures[name]
                if value is not None and (level != "model" or name in MODEL_FIGURES):
                    expected[key(f"charter_monitor_{name}", **labels)] = value
            if level in ("action", "fleet"):
                for drift in figures["drift"]:
                    where = {**labels, "action": drift["action"], "field": drift["field"]}
                    for name in DRIFT_FIGURES:
                        if drift[name] is not None:
                            expected[key(f"charter_monitor_drift_{name}", **where)] = drift[name]
    exported = {
        k: v
        for k, v in samples.items()
        if k[0].startswith("charter_monitor_")
        and not k[0].startswith(("charter_monitor_refresh_", "charter_monitor_window"))
    }
    assert exported == pytest.approx(expected)
    # a rate of an empty sample has no series: no approval of a note ever ended
    assert samples[of_action("charter_monitor_approvals_ended", "support-bot", "crm.note")] == 0
    assert of_action("charter_monitor_rejection_rate", "support-bot", "crm.note") not in samples
    refunds = of_action("charter_monitor_rejection_rate", "support-bot", "payments.refund")
    assert samples[refunds] == pytest.approx(0.6)
    campaign = of_action(
        "charter_monitor_drift_psi", "outreach-bot", "mail.send", field="args.campaign"
    )
    assert samples[campaign] > 0.25
    assert samples[key("charter_monitor_window_seconds")] == 3600


def test_alerts_autonomy_and_halts_are_what_the_api_reports(
    client: TestClient, keys: Keys, charter: Charter, clock: FakeClock
) -> None:
    seed(charter, clock)
    samples = scrape(client)
    fields = ("alert", "severity", "agent", "action", "figure", "runbook")
    firing = {
        frozenset((k, str(a.get(k) or "")) for k in fields)
        for a in api(client, keys, "/v1/alerts")["alerts"]
    }
    assert {"outcomes-failing", "inputs-drifting"} <= {dict(f)["alert"] for f in firing}
    assert named(samples, "charter_alerts_firing") == dict.fromkeys(firing, 1.0)
    (proposal,) = api(client, keys, "/v1/autonomy/proposals")["proposals"]
    assert samples[key("charter_autonomy_proposals")] == 1
    assert named(samples, "charter_autonomy_proposed_level") == {
        frozenset({("agent", proposal["agent"])}): proposal["level"]
    }
    agents = [p.id for p in charter.agents()]
    assert named(samples, "charter_autonomy_demoted") == {
        frozenset({("agent", a)}): float(a == "support-bot") for a in agents
    }
    assert named(samples, "charter_autonomy_level") == {
        frozenset({("agent", a)}): charter.autonomy(a) for a in agents
    }
    assert samples[key("charter_autonomy_level", agent="support-bot")] == 1
    assert samples[key("charter_autonomy_assigned_level", agent="support-bot")] == 2
    assert samples[key("charter_halts_in_force")] == 1
    assert named(samples, "charter_halt_in_force") == {
        frozenset({("scope", "agent"), ("target", "support-bot-trainee")}): 1.0
    }
    charter.resume("agent", "support-bot-trainee", by="key:rita")
    after = scrape(client)
    assert after[key("charter_halts_in_force")] == 0
    assert named(after, "charter_halt_in_force") == {}


def test_an_alert_is_exported_while_it_fires(
    client: TestClient, charter: Charter, clock: FakeClock
) -> None:
    notes(charter, clock, 20, every=5)
    clock.advance(minutes=1)
    assert named(scrape(client), "charter_alerts_firing") == {}
    charter.monitors.evaluate()
    labels = {
        "alert": "outcomes-failing",
        "severity": "critical",
        "agent": "support-bot",
        "action": "",
        "figure": "success_rate",
        "runbook": "runbooks/failures.md",
    }
    assert named(scrape(client), "charter_alerts_firing") == {frozenset(labels.items()): 1.0}
    clock.advance(hours=2)  # the failing hour is over: 20 good notes clear the alert
    notes(charter, clock, 20)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    assert charter.monitors.alerts() == []
    samples = scrape(client)
    assert named(samples, "charter_alerts_firing") == {}
    assert samples[key("charter_autonomy_demoted", agent="support-bot")] == 1  # it stands


@pytest.fixture
def unwatched(tmp_path: Path, store_target: str, clock: FakeClock) -> Iterator[Charter]:
    """The example policy without its `watch.yaml`: no monitors, alerts or rules."""
    policy = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, policy)
    (policy / "watch.yaml").unlink()
    with make_charter(load_bundle(policy), store_target, clock=clock) as opened:
        yield opened


def test_a_bundle_that_watches_nothing_folds_nothing_for_a_scrape(
    unwatched: Charter, clock: FakeClock
) -> None:
    notes(unwatched, clock, 3)
    with TestClient(create_app(unwatched)) as client:
        text = client.get("/metrics").text
    assert "charter_monitor_" not in text
    assert "charter_alerts_firing" not in text
    assert 'charter_autonomy_level{agent="support-bot"} 2.0' in text
    assert unwatched._watching is None  # the monitors were never built


def test_a_slow_refresh_runs_in_a_thread_and_scrapes_answer_meanwhile(
    charter: Charter, clock: FakeClock
) -> None:
    figures = MonitorFigures(charter, inline_seconds=0, every=0)
    empty = 'model_id="",model_version=""'
    fleet = f'charter_monitor_decisions{{action="",agent="",level="fleet",{empty}}}'
    notes(charter, clock, 5)
    assert f"{fleet} 5.0" in figures.render().decode()  # the first snapshot: computed inline
    notes(charter, clock, 5)
    assert f"{fleet} 5.0" in figures.render().decode()  # the last one, a refresh started
    assert figures.wait(timeout=30)
    assert f"{fleet} 10.0" in figures.render().decode()
    assert figures.wait(timeout=30)


def test_a_cheap_refresh_is_redone_at_every_scrape(charter: Charter, clock: FakeClock) -> None:
    figures = MonitorFigures(charter, inline_seconds=60, every=3600)
    empty = 'model_id="",model_version=""'
    fleet = f'charter_monitor_decisions{{action="",agent="",level="fleet",{empty}}}'
    for count in (3, 6):
        notes(charter, clock, 3)
        assert f"{fleet} {count}.0" in figures.render().decode()
    assert figures.wait(timeout=0)  # no thread was started


def test_every_name_is_documented(client: TestClient, charter: Charter, clock: FakeClock) -> None:
    seed(charter, clock)
    docs = (ROOT / "docs" / "api.md").read_text()
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    assert families
    for family in families:
        if family.name.endswith("_created"):  # each counter's creation time, not a figure
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in docs, f"{name} is not in docs/api.md#metrics"


# -- the dashboard and the rules ---------------------------------------------------------

_NAME = re.compile(r"\bcharter_[a-z0-9_]+")


def _expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression of a dashboard: targets' `expr`, variables' queries."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from _expressions(v)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def _rules() -> list[dict[str, Any]]:
    loaded = YAML(typ="safe").load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_dashboard_and_rules_use_only_exported_names(
    client: TestClient, charter: Charter, clock: FakeClock
) -> None:
    seed(charter, clock)
    exported = {name for name, _ in scrape(client)}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        "dashboard": {n for e in _expressions(dashboard) for n in _NAME.findall(e)},
        "rules": {n for r in _rules() for n in _NAME.findall(r["expr"])},
    }
    for where, names in used.items():
        assert len(names) > 10, where
        assert names <= exported, f"{where} uses names /metrics lacks: {names - exported}"


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == "charter-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"agent", "action"} <= set(variables)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = {p["title"] for p in panels}
    for wanted in ("Decisions per second by verdict", "Reviewer latency", "Escalation rate",
                   "Approval rate", "Rejection rate", "Success rate", "Calibration",
                   "Drift PSI per field", "Breaker states", "Alerts firing", "Autonomy level",
                   "Halts in force"):  # fmt: skip
        assert wanted in titles
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].strip()


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def test_the_alert_rules_are_complete() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for wanted in ("CharterServiceDown", "CharterAlertFiring", "CharterBreakerOpen",
                   "CharterAgentDemoted", "CharterHighRejectionRate", "CharterDrift",
                   "CharterLedgerAppendSlow"):  # fmt: skip
        assert wanted in names
    anchors = _anchors((ROOT / "docs" / "operations.md").read_text())
    assert "dashboard-and-alert-rules" in anchors
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), rule["alert"]
        assert rule["alert"] == "CharterAlertFiring" or rule["labels"]["severity"] in (
            "info",
            "warning",
            "critical",
        )
        url = notes["runbook_url"].strip()
        if url.startswith("docs/operations.md#"):
            assert url.split("#", 1)[1] in anchors, url
        else:
            assert "/ui/runbooks/" in url, url


def test_promtool_accepts_the_rules() -> None:
    """Prometheus's own checker takes the rules (missing: skipped, but in CI it fails)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing(
            "promtool is not installed: `apt-get install -y --no-install-recommends prometheus`",
            "CI must check the alert rules with it",
        )
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
