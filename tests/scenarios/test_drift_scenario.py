"""The drift scenario (`charter demo --scenario drift`), told and then checked from the record.

`tell_drift` records a day of the example fleet's work and then an hour in which
`support-bot`'s refunds drift and fail, judging the monitors on the simulated clock as
the leading server does. Everything here is asserted from what the ledger holds, not
from what the scenario says of itself: the alert that fired with its runbook, the
controller's demotion naming its rule and figures within the rule's window, the refunds
that wait for a person because of it, and a replay that reproduces every decision. Then
the reviewer UI shows the same story: the card says why the agent was demoted (through
the app in process), and a real `charter serve` shows it to Chromium on the fleet page,
the agent's page and the card (screenshots `drift_fleet.png`, `drift_agent.png`,
`drift_card.png` in `tests/ui/artifacts/`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from rich.console import Console
from ruamel.yaml import YAML
from starlette.testclient import TestClient
from typer.testing import CliRunner

from _browser import Pages, chromium, shot, sign_in_page
from _ci import missing
from _serve import Serving, create_key, free_port, serve
from _signin import sign_in
from charter import Charter
from charter._demo_drift import AGENT, RULE, DriftStory, DriftTraffic, tell_drift
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.ledger import LedgerEntry, events
from charter.policy import load_bundle
from charter.server import create_app
from charter.service import replay_ledger
from charter.store import open_store, verify_store
from charter.testing import FakeClock

SEED = 7


@dataclass
class Told:
    """A scenario recorded into a store, and what the ledger holds of it."""

    store: str
    story: DriftStory
    output: str
    entries: list[LedgerEntry]

    def payloads(self, kind: str) -> list[tuple[LedgerEntry, dict[str, Any]]]:
        return [(e, e.payload_object()) for e in self.entries if e.kind == kind]


def tell(store: str, end: dt.datetime) -> tuple[DriftStory, str]:
    """Record the scenario into `store`, its day ending at `end`; returns what it printed."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, highlight=False, soft_wrap=True)
    clock = FakeClock(end - dt.timedelta(days=1, hours=1))
    with Charter(EXAMPLE_POLICY, store, clock=clock) as service:
        story = tell_drift(service, clock, SEED, end, console)
    return story, buffer.getvalue()


def last_minute() -> dt.datetime:
    """A minute before now, on the minute (as `charter demo` ends its day)."""
    return dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)


def read(store: str) -> list[LedgerEntry]:
    opened = open_store(store, read_only=True)
    try:
        return list(opened.entries())
    finally:
        opened.close()


@pytest.fixture(scope="module")
def stories() -> dict[str, Told]:
    """The scenario told once per store, for the tests that read it (it takes seconds)."""
    return {}


@pytest.fixture
def told(stories: dict[str, Told], store_kind: str, request: pytest.FixtureRequest) -> Told:
    """The scenario recorded into a fresh store, ending a minute before now.

    The store of the first test on each kind of store is kept for the module's others:
    its file (or database) outlives that test.
    """
    if store_kind not in stories:
        store = str(request.getfixturevalue("store_target"))
        story, output = tell(store, last_minute())
        stories[store_kind] = Told(store, story, output, read(store))
    return stories[store_kind]


def at(entry: LedgerEntry) -> dt.datetime:
    return dt.datetime.fromisoformat(entry.at)


def refund_decisions(told: Told) -> list[tuple[LedgerEntry, dict[str, Any]]]:
    return [
        (e, p)
        for e, p in told.payloads(events.DECISION)
        if p["request"]["agent"] == AGENT and p["request"]["action"] == "payments.refund"
    ]


class TestTheLedgerTellsTheStory:
    """What happened is read back from the ledger itself, on each store."""

    def test_the_alert_fired_with_its_runbook(self, told: Told):
        """`outcomes-failing` and `inputs-drifting` fire for the agent, naming their runbooks."""
        bundle = load_bundle(EXAMPLE_POLICY)
        fired = {p["alert"]: (e, p) for e, p in told.payloads(events.ALERT_FIRED)}
        assert {"outcomes-failing", "inputs-drifting"} <= set(fired)
        for name, runbook in (
            ("outcomes-failing", "runbooks/failures.md"),
            ("inputs-drifting", "runbooks/drift.md"),
        ):
            entry, payload = fired[name]
            assert payload["agent"] == AGENT
            assert payload["runbook"] == runbook
            assert runbook in bundle.runbooks
            assert at(entry) > told.story.drift_began  # nothing fired on the quiet day
        _, failing = fired["outcomes-failing"]
        assert failing["figure"] == "success_rate"
        assert failing["value"] < 0.8
        assert failing["sample"] >= 20
        _, drifting = fired["inputs-drifting"]
        assert drifting["figure"] == "drift_psi"
        assert drifting["value"] > 0.25
        assert drifting["sample"] >= 50

    def test_the_controller_demoted_the_agent_within_its_window(self, told: Told):
        """One demotion, 2 → 1, by the rule, with its figures, less than an hour into the drift."""
        bundle = load_bundle(EXAMPLE_POLICY)
        (rule,) = [r for r in bundle.autonomy_rules if r.id == RULE]
        demotions = [
            (e, p) for e, p in told.payloads(events.AUTONOMY_CHANGED) if p["agent"] == AGENT
        ]
        assert len(demotions) == 1
        entry, payload = demotions[0]
        assert payload["by"] == "controller"
        assert payload["rule"] == RULE
        assert (payload["from"], payload["level"]) == (2, 1)
        assert payload["window"] == rule.window_seconds == 3600
        (held,) = payload["figures"]  # the threshold that held, with its figure
        assert held["figure"] == "success_rate"
        assert held["value"] < 0.7
        assert held["sample"] >= 20
        assert f"success_rate is {held['value']:.3g} on {held['sample']}" in payload["reason"]
        after = at(entry) - told.story.drift_began
        assert dt.timedelta(0) < after <= dt.timedelta(seconds=rule.window_seconds)

    def test_refunds_wait_for_a_person_because_of_the_demotion(self, told: Told):
        """Before the demotion no refund was over the agent's autonomy; after, large ones are."""
        (demotion,) = [e for e, _ in told.payloads(events.AUTONOMY_CHANGED)]
        over = [
            (e, p)
            for e, p in refund_decisions(told)
            if any(r["code"] == "over_autonomy" for r in p["decision"]["reasons"])
        ]
        assert over, "no refund was held for being over the agent's autonomy"
        assert all(e.seq > demotion.seq for e, _ in over)
        first, payload = over[0]
        decision = payload["decision"]
        assert decision["verdict"] == "require_approval"
        assert decision["autonomy_level"] == 1
        (reason,) = [r for r in decision["reasons"] if r["code"] == "over_autonomy"]
        assert "autonomy level 1 may take alone" in reason["message"]
        assert decision["risk"] > 20  # what level 2 (45) took alone before
        assert told.story.held is not None
        assert told.story.held.seq == first.seq
        # and they are pending in the inbox now
        assert told.story.pending > 0
        opened = [p for _, p in told.payloads(events.APPROVAL_OPENED)]
        assert payload["decision_id"] in {p["decision_id"] for p in opened}

    def test_the_breaker_is_part_of_the_story(self, told: Told):
        """Refunds failing open `refunds-failing` too, and it opened during the drift."""
        opened = told.payloads(events.BREAKER_OPENED)
        assert opened
        assert {p["breaker"] for _, p in opened} == {"refunds-failing"}
        assert all(at(e) > told.story.drift_began for e, _ in opened)

    def test_the_ledger_verifies_and_replays_exactly(self, told: Told):
        """Every decision of the story is reproduced, byte for byte, by the recorded policy."""
        opened = open_store(told.store, read_only=True)
        try:
            assert verify_store(opened).ok
        finally:
            opened.close()
        report = replay_ledger(told.store)
        assert report.ok
        assert report.changed == 0
        assert report.error_count == 0
        assert report.total == len(told.payloads(events.DECISION)) == told.story.decisions

    def test_the_story_was_told_as_it_happened(self, told: Told):
        """The printed story names the alert, its runbook, the rule, the figures, the refund."""
        text = told.output
        assert "the drift begins" in text
        assert "alert outcomes-failing fired" in text
        assert "runbooks/failures.md" in text
        assert f"the controller demoted {AGENT} from level 2 to 1 by rule {RULE}" in text
        assert "success_rate is" in text
        assert "the first refund held for a person since the demotion" in text
        assert "over autonomy: risk" in text


class TestTheCardSaysWhy:
    """The approval card of a held refund says why the agent was demoted."""

    def test_the_card_names_the_rule_and_the_figures(self, told: Told):
        """Rule, levels, the controller's reason and the figure that held, on the card."""
        held = told.story.held
        assert held is not None
        assert held.approval is not None
        with (
            Charter(EXAMPLE_POLICY, told.store) as service,
            TestClient(create_app(service), base_url="http://127.0.0.1:8470") as client,
        ):
            secret = service.create_key("reviewer", label="rita@example.com", groups=["finance"])[1]
            sign_in(client, secret)
            page = client.get(f"/ui/approvals/{held.approval['id']}")
        assert page.status_code == 200
        card = page.text
        block = card[card.index('data-testid="demotion"') :]
        block = block[: block.index("</div>")]
        assert f"{AGENT} was demoted from level 2 to 1" in block
        assert RULE in block
        assert "That is why it may take only 20 risk alone." in block
        assert "the agent&#39;s inputs drifted or its actions fail: success_rate is" in block
        assert "<code>success_rate</code> was" in block
        assert "autonomy level 1 may take alone" in card  # the engine's own reason


@pytest.mark.stores("sqlite")  # the command line's store handling is tested in tests/cli
class TestTheCommand:
    """`charter demo --scenario drift` tells the story and exits 0; a used ledger is refused."""

    def test_it_tells_the_story_and_refuses_to_tell_it_twice(self, tmp_path: Path):
        """Exit 0 with the story, the audit and what to do next; again on it: exit 2."""
        db = tmp_path / "drift.db"
        runner = CliRunner()
        started = time.perf_counter()
        result = runner.invoke(app, ["demo", "--scenario", "drift", "--db", str(db), "--seed", "3"])
        took = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        text = result.output
        assert f"the controller demoted {AGENT}" in text
        assert "alert outcomes-failing fired" in text
        assert "the first refund held for a person since the demotion" in text
        assert "the story in the ledger" in text
        assert "autonomy.changed" in text
        assert "alert.fired" in text
        assert "ledger verify: ok" in text
        assert "replay under recorded versions: ok" in text
        assert f"charter monitors --db {db}" in text
        assert "Next:" in text
        assert f"/ui/agents/{AGENT}" in text
        assert "did not happen" not in text
        assert took < 60, f"the scenario took {took:.1f}s"
        again = runner.invoke(app, ["demo", "--scenario", "drift", "--db", str(db)])
        assert again.exit_code == 2
        assert "already holds entries" in again.output


def projection(entries: list[LedgerEntry], start: dt.datetime) -> list[tuple[Any, ...]]:
    """The entries less what differs between two runs: ids, and times but their offsets."""
    out: list[tuple[Any, ...]] = []
    for entry in entries:
        offset = (at(entry) - start).total_seconds()
        if entry.kind == events.DECISION:
            payload = entry.payload_object()
            decision = payload["decision"]
            reasons = tuple(r["code"] for r in decision["reasons"])
            request = payload["request"]
            out.append((offset, request["agent"], request["args"], decision["verdict"], reasons))
        else:
            out.append((offset, entry.kind))
    return out


@pytest.mark.stores("sqlite")  # the same on both: the store plays no part in the traffic
def test_a_seed_tells_the_same_story_whenever_it_runs(tmp_path: Path, store_kind: str):
    """Two days ending an hour apart, one seed: the same entries at the same offsets."""
    end = last_minute()
    told = []
    for n, ending in enumerate((end - dt.timedelta(hours=1), end)):
        store = str(tmp_path / f"drift-{n}.db")
        tell(store, ending)
        told.append(projection(read(store), ending - dt.timedelta(days=1, hours=1)))
    assert told[0] == told[1]


def test_the_traffic_is_the_seeds():
    """The same seed gives the same requests at the same times; another seed does not."""
    end = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    drift, start = end - dt.timedelta(hours=1), end - dt.timedelta(days=1, hours=1)

    def draw(seed: int) -> list[Any]:
        traffic = DriftTraffic(seed)
        arrivals = list(traffic.arrivals(start, drift, end))
        requests = [traffic.request(s, drifted=t >= drift and s == "refund") for t, s in arrivals]
        return [*arrivals, *requests]

    assert draw(SEED) == draw(SEED)
    assert draw(SEED) != draw(SEED + 1)


# -- the dashboard in a real browser, against a real `charter serve` ------------------------


@dataclass
class Served(Serving):
    """`charter serve` on a store the scenario told its story into."""

    story: DriftStory
    reviewer: str  # a finance reviewer's key: refunds are routed to finance


@pytest.fixture
def served(told: Told) -> Iterator[Served]:
    """The story recorded up to a minute ago, served on the real clock (as tests/ui do)."""
    reviewer = create_key(
        told.store, "--role", "reviewer", "--label", "alice@example.com", "--groups", "finance"
    )
    running = serve(told.store)
    yield Served(running.url, running.process, told.story, reviewer)
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A reviewer's page on the server; errors the page reports fail the test."""
    pages = Pages(browser, served.url)
    yield pages.open()
    pages.close()


def _alert(alerts: Mapping[str, Any], name: str) -> Any:
    return alerts.locator(f"[data-alert={name}]")


@pytest.mark.browser
def test_the_dashboard_tells_the_story(served: Served, page: Any):
    """Fleet page: demoted, alerts with runbooks; agent page: charts; card: why."""
    from playwright.sync_api import expect  # noqa: PLC0415 - only this test needs it

    sign_in_page(page, served.reviewer, "/ui/fleet")
    rows = page.get_by_test_id("fleet-row")
    expect(rows.first).to_have_attribute("data-agent", AGENT)  # problems first
    support = page.locator(f"[data-testid=fleet-row][data-agent='{AGENT}']")
    expect(support.get_by_test_id("badge-demoted")).to_contain_text(f"demoted by {RULE}")
    expect(support.get_by_test_id("level")).to_have_text("1")
    expect(support.get_by_test_id("alert-count")).to_contain_text("critical")
    expect(support.get_by_test_id("badge-drift")).to_contain_text("drift")
    alerts = page.get_by_test_id("alerts")
    expect(alerts).to_contain_text("outcomes-failing")
    expect(alerts).to_contain_text("inputs-drifting")
    expect(_alert(alerts, "inputs-drifting").get_by_test_id("runbook-link")).to_have_attribute(
        "href", re.compile(r"runbooks/drift\.md$")
    )
    shot(page, "drift_fleet")

    support.get_by_role("link", name=AGENT).click()
    expect(page).to_have_url(re.compile(rf"/ui/agents/{AGENT}$"))
    expect(page.get_by_test_id("demotion")).to_contain_text(RULE)
    for chart in ("success", "drift", "escalation"):
        expect(page.get_by_test_id(f"chart-{chart}")).to_be_visible()
    drift = page.get_by_test_id("chart-drift")
    expect(drift.locator("desc")).to_contain_text("args.amount")
    expect(page.get_by_test_id("circuits")).to_contain_text("refunds-failing")
    shot(page, "drift_agent")

    held = served.story.held
    assert held is not None
    assert held.approval is not None
    page.goto("/ui/")
    expect(page.get_by_test_id("queue")).to_contain_text("support-bot")
    # the inbox lists the held refund (by amount, currency, email): its link leads to the card
    row = page.get_by_test_id("approval-row").locator(
        f"a[href='/ui/approvals/{held.approval['id']}']"
    )
    expect(row).to_be_visible()
    row.click()
    expect(page.get_by_test_id("decide")).to_be_visible()
    expect(page.get_by_test_id("reasons")).to_contain_text("autonomy level 1 may take alone")
    why = page.get_by_test_id("demotion")
    expect(why).to_contain_text(f"{AGENT} was demoted from level 2 to 1")
    expect(why).to_contain_text(RULE)
    expect(page.get_by_test_id("demotion-reason")).to_contain_text("success_rate is")
    expect(page.get_by_test_id("demotion-figures")).to_contain_text("success_rate")
    shot(page, "drift_card")


# -- the shipped Prometheus configuration and alert rules, on a real Prometheus ------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _prometheus_folder(folder: Path, target: str) -> Path:
    """The shipped prometheus.yml and rules, pointed at `target`, fast, and with no `for:`.

    Only what a test cannot wait for changes: the intervals (15 s to 1 s), the targets and
    each rule's `for:` (minutes to 0 s); the expressions, labels and annotations are the
    shipped ones.
    """
    yaml = YAML()
    config = yaml.load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    rules = yaml.load((DEPLOY / "charter-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    with (folder / "prometheus.yml").open("w") as out:
        yaml.dump(config, out)
    with (folder / "charter-alerts.yml").open("w") as out:
        yaml.dump(rules, out)
    return folder / "prometheus.yml"


def _firing(base: str) -> dict[str, list[dict[str, str]]]:
    """Prometheus's firing alerts by name, each as its labels."""
    answer = httpx2.get(f"{base}/api/v1/alerts", timeout=5)
    answer.raise_for_status()
    found: dict[str, list[dict[str, str]]] = {}
    for alert in answer.json()["data"]["alerts"]:
        if alert["state"] == "firing":
            found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return found


def test_prometheus_fires_the_shipped_alerts_the_story_calls_for(served: Served, tmp_path: Path):
    """A real Prometheus scrapes the served story and its shipped rules say what happened."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        missing(
            "prometheus is not installed: `apt-get install -y --no-install-recommends prometheus`",
            "CI must run the shipped alert rules on a real Prometheus",
        )
    config = _prometheus_folder(tmp_path, served.url.removeprefix("http://"))
    port = free_port()
    process = subprocess.Popen(
        [
            *("timeout", "90", prometheus, f"--config.file={config}"),
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wanted = {"CharterAgentDemoted", "CharterAlertFiring"}
    firing: dict[str, list[dict[str, str]]] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not wanted <= firing.keys():
            assert process.poll() is None, process.communicate()[1]
            with contextlib.suppress(httpx2.HTTPError):
                firing = _firing(base)
            time.sleep(0.5)
    finally:
        process.terminate()
        stderr = process.communicate(timeout=20)[1]
    assert wanted <= firing.keys(), (firing, stderr[-3000:])
    assert [a["agent"] for a in firing["CharterAgentDemoted"]] == [AGENT]
    fired = {(a["alert"], a["agent"], a["runbook"]) for a in firing["CharterAlertFiring"]}
    assert ("outcomes-failing", AGENT, "runbooks/failures.md") in fired
    assert ("inputs-drifting", AGENT, "runbooks/drift.md") in fired
    # It scraped the server all along, and the monitor series were fresh.
    assert not {"CharterServiceDown", "CharterMonitorSeriesStale"} & firing.keys()
