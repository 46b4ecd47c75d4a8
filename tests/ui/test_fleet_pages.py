"""The fleet, agent and runbook pages without a browser: what each key sees and may do.

The fleet is seeded through the embedded API on a fake clock (`_fleet_data`); pages are
read through the real app with a TestClient, signed in as a reviewer or an admin.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fleet_data import seed_fleet
from starlette.testclient import TestClient

import _signin
from _signin import csrf_of
from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.model import AgentProfile
from charter.policy import load_bundle
from charter.server import create_app
from charter.server.ui import CSP
from charter.server.ui._charts import (
    Line,
    Threshold,
    format_percent,
    format_seconds,
    line_chart,
    nice_ceiling,
    sparkline,
)
from charter.server.ui._fleet import hours_of, render_runbook
from charter.testing import DEFAULT_START, FakeClock, make_charter

BASE = "http://127.0.0.1:8470"
END = DEFAULT_START + dt.timedelta(hours=2)


def entries(charter: Charter, kind: str) -> list[dict[str, Any]]:
    return [e.payload_object() for e in charter.store.entries(kinds={kind})]


def sign_in(client: TestClient, secret: str) -> str:
    """Sign in and return the session's CSRF token, from the fleet page."""
    return _signin.sign_in(client, secret, then="/ui/fleet")


def key_id(charter: Charter, label: str) -> str:
    return str(next(k["key_id"] for k in charter.list_keys() if k.get("label") == label))


def open_seeded(policy: Path | str, where: str) -> Charter:
    clock = FakeClock(DEFAULT_START, tick=0.001)
    charter = make_charter(policy, where, clock=clock)
    seed_fleet(charter, clock, END)
    return charter


@pytest.fixture
def charter(store_target: str) -> Iterator[Charter]:
    with open_seeded(EXAMPLE_POLICY, store_target) as opened:
        yield opened


@pytest.fixture
def client(charter: Charter) -> Iterator[TestClient]:
    with TestClient(create_app(charter), base_url=BASE) as test_client:
        yield test_client


@pytest.fixture
def reviewer(charter: Charter) -> str:
    return charter.create_key("reviewer", label="alice@example.com", groups=["finance"])[1]


@pytest.fixture
def admin(charter: Charter) -> str:
    return charter.create_key("admin", label="ada@example.com")[1]


def rows_of(page: str) -> list[str]:
    return re.findall(r'data-testid="fleet-row" data-agent="([^"]+)"', page)


def row_html(page: str, agent: str) -> str:
    start = page.index(f'data-testid="fleet-row" data-agent="{agent}"')
    end = page.find('data-testid="fleet-row"', start + 1)
    return page[start : end if end != -1 else len(page)]


class TestFleetPage:
    """One row per agent, problems first, with the figures and the badges that matter."""

    def test_problems_come_first(self, client: TestClient, reviewer: str):
        """Alerts, then open breakers, then the rest; ties by id."""
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        assert rows_of(page) == ["support-bot", "outreach-bot", "infra-bot", "support-bot-trainee"]

    def test_each_row_shows_its_standing(self, client: TestClient, reviewer: str):
        """Level in force of the profile's, the demotion, breakers, drift and alerts."""
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        support = row_html(page, "support-bot")
        assert "demoted by demote-on-drift-or-failures" in support
        assert 'data-testid="level"' in support
        assert re.search(r'data-testid="level"[^>]*>1</span> <span[^>]*>of 2</span>', support)
        assert "payments.refund open" in support
        assert "1 critical" in support
        assert "level 2 proposed" in support
        assert "gpt-5-mini" in support
        assert "2026-08-01" in support
        drifting = row_html(page, "outreach-bot")
        assert re.search(r'data-testid="badge-drift"[^>]*>drift 18\.\d\d<', drifting)
        assert "infra.scale open" in row_html(page, "infra-bot")

    def test_rates_name_their_sample_and_empty_ones_show_a_dash(
        self, client: TestClient, reviewer: str
    ):
        """A rate's tooltip says what it is of; a rate of no sample is `—`, never 0%."""
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        support = row_html(page, "support-bot")
        assert re.search(
            r'title="share of outcomes that succeeded; sample: 130 outcomes" '
            r'data-figure="success_rate">83%<',
            support,
        )
        assert re.search(r'data-figure="rejection_rate">—<', support)
        trainee = row_html(page, "support-bot-trainee")
        assert re.search(r'data-testid="decisions">0<', trainee)
        assert len(re.findall(r'data-figure="[a-z_]+">—<', trainee)) == 5
        assert 'data-testid="sparkline"' in support
        assert 'aria-label="success rate per hour over the last 24 h: latest 83%' in support

    def test_alerts_firing_link_to_their_runbooks(self, client: TestClient, reviewer: str):
        """Each alert: severity, where, its value on its sample, and its runbook page."""
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        alerts = re.findall(r'data-testid="alert-row" data-alert="([^"]+)"', page)
        assert alerts == ["inputs-drifting", "outcomes-failing"]
        assert 'href="/ui/runbooks/runbooks/failures.md"' in page
        assert 'href="/ui/runbooks/runbooks/drift.md"' in page
        assert "success_rate</code> 20%" in page

    def test_a_halted_agent_comes_first_with_its_badge(
        self, charter: Charter, client: TestClient, reviewer: str
    ):
        """A halt outranks every other problem."""
        charter.halt("agent", "support-bot-trainee", reason="loop", by="test")
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        assert rows_of(page)[0] == "support-bot-trainee"
        assert 'data-testid="badge-halted"' in row_html(page, "support-bot-trainee")
        assert 'data-testid="halts-in-force"' in page

    def test_agent_text_is_escaped(self, charter: Charter, client: TestClient, reviewer: str):
        """A registered agent's owner and model cannot put markup on the page."""
        charter.put_agent(
            AgentProfile(
                "evil\u202ebot",
                "support",
                '<script>alert("owner")</script>',
                "<img src=x onerror=alert(1)>",
                "1",
                1,
            ),
            by="test",
        )
        sign_in(client, reviewer)
        page = client.get("/ui/fleet").text
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;" in page
        # shown, the override is a visible badge (only form values carry the id as it is)
        assert re.search(
            r">evil<span class=\"hidden-char\"[^>]*>\u27e8U\+202E\u27e9</span>bot<", page
        )
        assert re.search(r">[^<]*\u202e", page) is None
        agent = client.get("/ui/agents/evil%E2%80%AEbot")
        assert agent.status_code == 200
        assert "<title>Agent · Charter</title>" in agent.text
        assert re.search(r">[^<]*\u202e", agent.text) is None
        assert "&lt;img src=x" in agent.text

    def test_pages_carry_the_csp_and_no_inline_style_or_script(
        self, client: TestClient, reviewer: str
    ):
        """Charts are SVG with classes: no `style=` attribute, no inline script."""
        sign_in(client, reviewer)
        for path in (
            "/ui/fleet",
            "/ui/agents/support-bot",
            "/ui/agents/outreach-bot?hours=1",
            "/ui/runbooks/runbooks/drift.md",
        ):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-security-policy"] == CSP
            assert " style=" not in answer.text
            assert "<style" not in answer.text
            assert re.search(r"<script(?![^>]*\bsrc=)", answer.text) is None

    def test_the_nav_names_the_fleet(self, client: TestClient, reviewer: str):
        """Every page leads to the fleet; on it, the link is the current page."""
        sign_in(client, reviewer)
        assert '<a href="/ui/fleet" >Fleet</a>' in client.get("/ui/").text
        assert '<a href="/ui/fleet" aria-current="page">Fleet</a>' in client.get("/ui/fleet").text


class TestWhoSeesWhat:
    """Forms appear for the roles the live bundle allows, and only for them."""

    def test_a_reviewer_may_halt_but_not_promote_or_resume(
        self, charter: Charter, client: TestClient, reviewer: str
    ):
        """By default a reviewer halts; accepting, declining and resuming are an admin's."""
        sign_in(client, reviewer)
        fleet = client.get("/ui/fleet").text
        assert 'data-testid="proposal"' in fleet
        assert 'data-testid="proposal-not-yours"' in fleet
        assert "/ui/proposals/accept" not in fleet
        assert "/ui/proposals/decline" not in fleet
        agent = client.get("/ui/agents/support-bot").text
        assert 'data-testid="halt-panel"' in agent
        assert "/ui/proposals/accept" not in agent
        charter.halt("agent", "support-bot", reason="checking", by="test")
        halted = client.get("/ui/agents/support-bot").text
        assert 'data-testid="halted-banner"' in halted
        assert "/ui/resume" not in halted
        assert 'data-testid="halt-panel"' not in halted  # halted already

    def test_an_admin_sees_every_form(self, charter: Charter, client: TestClient, admin: str):
        """Accept, decline with a reason, and resume once halted."""
        sign_in(client, admin)
        fleet = client.get("/ui/fleet").text
        assert 'action="/ui/proposals/accept"' in fleet
        assert 'action="/ui/proposals/decline"' in fleet
        assert 'name="reason"' in fleet
        charter.halt("agent", "support-bot", reason="checking", by="test")
        agent = client.get("/ui/agents/support-bot").text
        assert 'action="/ui/resume"' in agent
        assert 'data-testid="resume-confirm"' in agent

    @pytest.mark.parametrize("role", ["auditor", "policy-admin", "agent"])
    def test_keys_that_do_not_review_see_no_fleet(
        self, charter: Charter, client: TestClient, role: str
    ):
        """The UI's sign-in takes reviewer and admin keys only; the fleet sends others there."""
        secret = charter.create_key(role, agent="support-bot" if role == "agent" else None)[1]
        form = client.get("/ui/signin")
        answer = client.post("/ui/signin", data={"key": secret, "csrf": csrf_of(form.text)})
        assert answer.status_code == 403
        gone = client.get("/ui/fleet", follow_redirects=False)
        assert gone.status_code == 303
        assert gone.headers["location"] == "/ui/signin?next=%2Fui%2Ffleet"

    def test_the_live_bundle_decides_who_promotes(self, store_target: str, tmp_path: Path):
        """With `permissions: promote: [reviewer, admin]`, a reviewer accepts from the page."""
        policy = tmp_path / "policy"
        shutil.copytree(EXAMPLE_POLICY, policy)
        (policy / "permissions.yaml").write_text(
            "permissions:\n  promote: [reviewer, admin]\n  resume: [reviewer, admin]\n"
        )
        with (
            open_seeded(load_bundle(policy), store_target) as charter,
            TestClient(create_app(charter), base_url=BASE) as client,
        ):
            secret = charter.create_key("reviewer", label="rita@example.com")[1]
            token = sign_in(client, secret)
            assert 'action="/ui/proposals/accept"' in client.get("/ui/fleet").text
            answer = client.post(
                "/ui/proposals/accept",
                data={"csrf": token, "agent": "support-bot"},
                follow_redirects=False,
            )
            assert answer.status_code == 303
            assert charter.autonomy("support-bot") == 2
            by = entries(charter, events.AUTONOMY_CHANGED)[-1]["by"]
            assert by == f"key:{key_id(charter, 'rita@example.com')}"


class TestProposals:
    """Accepting and declining from the UI record what the API would."""

    def test_accept_restores_the_level_and_is_recorded(
        self, charter: Charter, client: TestClient, admin: str
    ):
        """The agent gets its level back; the ledger names the admin's key."""
        token = sign_in(client, admin)
        answer = client.post(
            "/ui/proposals/accept",
            data={"csrf": token, "agent": "support-bot", "next": "/ui/fleet"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/fleet?done=accepted"
        assert charter.autonomy("support-bot") == 2
        changed = entries(charter, events.AUTONOMY_CHANGED)[-1]
        assert changed["by"] == f"key:{key_id(charter, 'ada@example.com')}"
        assert changed["level"] is None  # the profile's own level again
        assert charter.monitors.proposals() == []
        page = client.get("/ui/fleet?done=accepted").text
        assert 'data-testid="flash"' in page
        assert "demoted by" not in row_html(page, "support-bot")

    def test_decline_needs_a_reason_and_is_recorded(
        self, charter: Charter, client: TestClient, admin: str
    ):
        """No reason is 422 and nothing recorded; with one, `autonomy.declined` holds it."""
        token = sign_in(client, admin)
        blank = client.post(
            "/ui/proposals/decline", data={"csrf": token, "agent": "support-bot", "reason": " "}
        )
        assert blank.status_code == 422
        assert entries(charter, events.AUTONOMY_DECLINED) == []
        answer = client.post(
            "/ui/proposals/decline",
            data={
                "csrf": token,
                "agent": "support-bot",
                "reason": "not before the audit",
                "next": "/ui/agents/support-bot",
            },
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/ui/agents/support-bot?done=declined"
        (declined,) = entries(charter, events.AUTONOMY_DECLINED)
        assert declined["reason"] == "not before the audit"
        assert declined["by"] == f"key:{key_id(charter, 'ada@example.com')}"
        assert charter.autonomy("support-bot") == 1

    def test_no_open_proposal_is_404(self, client: TestClient, admin: str):
        """An agent with nothing proposed: nothing to accept."""
        token = sign_in(client, admin)
        answer = client.post("/ui/proposals/accept", data={"csrf": token, "agent": "infra-bot"})
        assert answer.status_code == 404
        assert "no proposal" in answer.text

    def test_refused_without_the_token_or_with_the_wrong_role(
        self, charter: Charter, client: TestClient, reviewer: str, admin: str
    ):
        """No CSRF token is 403 for anyone; a reviewer's token is 403 under the defaults."""
        token = sign_in(client, reviewer)
        for verb in ("accept", "decline"):
            data = {"agent": "support-bot", "reason": "x"}
            assert client.post(f"/ui/proposals/{verb}", data=data).status_code == 403
            forbidden = client.post(f"/ui/proposals/{verb}", data={**data, "csrf": token})
            assert forbidden.status_code == 403
            assert "may not" in forbidden.text
        with TestClient(create_app(charter), base_url=BASE) as other:
            sign_in(other, admin)
            stale = other.post("/ui/proposals/accept", data={"csrf": token, "agent": "support-bot"})
            assert stale.status_code == 403  # another session's token
        assert charter.autonomy("support-bot") == 1
        assert entries(charter, events.AUTONOMY_DECLINED) == []


class TestHaltAndResume:
    """Halting from the agent page returns there; resuming is for the roles allowed."""

    def test_halt_from_the_agent_page_comes_back_to_it(
        self, charter: Charter, client: TestClient, reviewer: str
    ):
        """The halt form names the page; other sites are never followed."""
        token = sign_in(client, reviewer)
        page = client.get("/ui/agents/infra-bot").text
        assert 'name="next" value="/ui/agents/infra-bot"' in page
        form = {"csrf": token, "scope": "agent", "target": "infra-bot", "reason": "loop"}
        unconfirmed = client.post("/ui/halts", data={**form, "next": "/ui/agents/infra-bot"})
        assert unconfirmed.status_code == 422
        assert charter.halts == ()
        answer = client.post(
            "/ui/halts",
            data={**form, "confirm": "yes", "next": "/ui/agents/infra-bot"},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/ui/agents/infra-bot?done=halted"
        assert [(h.scope, h.target) for h in charter.halts] == [("agent", "infra-bot")]
        elsewhere = client.post(
            "/ui/halts",
            data={
                **form,
                "target": "outreach-bot",
                "confirm": "yes",
                "next": "https://evil.example/",
            },
            follow_redirects=False,
        )
        assert elsewhere.headers["location"] == "/ui/?done=halted"

    def test_an_admin_resumes_with_the_confirmation(
        self, charter: Charter, client: TestClient, admin: str
    ):
        """Unconfirmed is 422; confirmed, the halt is lifted and the resume recorded."""
        charter.halt("agent", "infra-bot", reason="loop", by="test")
        token = sign_in(client, admin)
        form = {"csrf": token, "scope": "agent", "target": "infra-bot"}
        assert client.post("/ui/resume", data=form).status_code == 422
        assert len(charter.halts) == 1
        answer = client.post(
            "/ui/resume",
            data={**form, "confirm": "yes", "next": "/ui/agents/infra-bot"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/agents/infra-bot?done=resumed"
        assert charter.halts == ()
        (resumed,) = entries(charter, events.RESUME)
        assert resumed["by"] == f"key:{key_id(charter, 'ada@example.com')}"
        again = client.post("/ui/resume", data={**form, "confirm": "yes"})
        assert again.status_code == 404  # nothing of the kind is in force

    def test_resume_is_refused_without_the_token_or_to_a_reviewer(
        self, charter: Charter, client: TestClient, reviewer: str
    ):
        """No token: 403; a reviewer's token under the default permissions: 403."""
        charter.halt("agent", "infra-bot", reason="loop", by="test")
        token = sign_in(client, reviewer)
        form = {"scope": "agent", "target": "infra-bot", "confirm": "yes"}
        assert client.post("/ui/resume", data=form).status_code == 403
        forbidden = client.post("/ui/resume", data={**form, "csrf": token})
        assert forbidden.status_code == 403
        assert "may not lift halts" in forbidden.text
        assert len(charter.halts) == 1


class TestAgentPage:
    """Its standing, charts with text and tables, figures per action and model."""

    def test_charts_are_drawn_with_text_alternatives(self, client: TestClient, reviewer: str):
        """Five SVG charts, each named and described, each with its data table."""
        sign_in(client, reviewer)
        page = client.get("/ui/agents/outreach-bot").text
        for chart in ("escalation", "latency", "success", "calibration", "drift"):
            assert f'data-testid="chart-{chart}"' in page
            assert f'aria-labelledby="{chart}-title {chart}-desc"' in page
            assert f'<title id="{chart}-title">' in page
        assert page.count('<details class="data-table">') == 5
        drift = page[page.index('data-testid="chart-drift"') :]
        drift = drift[: drift.index("</svg>")]
        assert "args.campaign" in drift
        assert 'class="threshold threshold-bad"' in drift
        assert "0.25 drifted" in drift
        assert 'data-testid="clipped"' in page  # a PSI of 18 is drawn at the top

    def test_hours_choose_the_step(self, client: TestClient, reviewer: str):
        """24 h by default at 24-minute steps; 1 h at one-minute steps; out of range clamps."""
        sign_in(client, reviewer)
        assert "one point per 24m" in client.get("/ui/agents/support-bot").text
        assert "one point per 1m" in client.get("/ui/agents/support-bot?hours=1").text
        assert "Over the last 24 h" in client.get("/ui/agents/support-bot?hours=99").text
        assert "Over the last 24 h" in client.get("/ui/agents/support-bot?hours=x").text
        assert [hours_of(v) for v in ("0", "6", "25", None)] == [1, 6, 24, 24]

    def test_figures_per_action_and_model(self, client: TestClient, reviewer: str):
        """Per action and per model version; calibration's reliability; the circuits."""
        sign_in(client, reviewer)
        page = client.get("/ui/agents/support-bot").text
        by_action = re.findall(r'data-testid="by-action-row"><th scope="row"><code>([^<]+)', page)
        assert by_action == ["crm.note", "payments.refund"]
        assert "crm.note · gpt-5-mini 2026-08-01" in page
        assert 'data-testid="reliability"' in page
        assert re.findall(r'data-testid="circuit-row" data-breaker="([^"]+)"', page) == [
            "refunds-failing"
        ]
        assert 'data-testid="demotion"' in page
        assert "demote-on-drift-or-failures" in page
        assert 'href="/ui/runbooks/runbooks/failures.md"' in page

    def test_monitors_that_keep_little_history_still_chart(self, store_target: str, tmp_path: Path):
        """With 20 minutes of history, 24 h of charts shrink to what is kept, not an error."""
        policy = tmp_path / "policy"
        shutil.copytree(EXAMPLE_POLICY, policy)
        watch = policy / "watch.yaml"
        text = watch.read_text()
        for old, new in (
            (
                "window: 1h\n  drift: {recent: 1h, baseline: 1d}",
                "window: 10m\n  drift: {recent: 10m, baseline: 10m}",
            ),
            ("window: 4h", "window: 10m"),
            ("window: 1h", "window: 10m"),
        ):
            assert old in text
            text = text.replace(old, new)
        watch.write_text(text)
        bundle = load_bundle(policy)
        assert bundle.monitors.horizon_seconds == 1200
        with (
            make_charter(bundle, store_target) as charter,
            TestClient(create_app(charter), base_url=BASE) as client,
        ):
            sign_in(client, charter.create_key("reviewer", label="alice@example.com")[1])
            assert client.get("/ui/fleet").status_code == 200
            page = client.get("/ui/agents/support-bot?hours=24")
            assert page.status_code == 200
            assert 'data-testid="chart-success"' in page.text

    def test_an_unknown_agent_is_404(self, client: TestClient, reviewer: str):
        """The error page, not a blank chart."""
        sign_in(client, reviewer)
        answer = client.get("/ui/agents/nobody")
        assert answer.status_code == 404
        assert "there is no agent `nobody`" in answer.text


class TestRunbooks:
    """Runbooks are the live bundle's, rendered from Markdown, with raw HTML escaped."""

    def test_a_runbook_renders(self, client: TestClient, reviewer: str):
        """Headings and lists become HTML; alerts firing with it are listed above."""
        sign_in(client, reviewer)
        page = client.get("/ui/runbooks/runbooks/failures.md").text
        assert "<h1>An agent&#x27;s actions fail when they run</h1>" in page or (
            "<h1>An agent's actions fail when they run</h1>" in page
        )
        assert "<ol>" in page
        assert 'data-testid="runbook-alerts"' in page

    @pytest.mark.parametrize(
        "path", ["runbooks/nope.md", "roles.yaml", "runbooks/../roles.yaml", "../etc/passwd"]
    )
    def test_what_is_no_runbook_is_404(self, client: TestClient, reviewer: str, path: str):
        """Only the bundle's runbooks are pages; nothing is read from disk."""
        sign_in(client, reviewer)
        assert client.get(f"/ui/runbooks/{path}").status_code == 404

    def test_markup_in_a_runbook_is_shown_as_text(self, store_target: str, tmp_path: Path):
        """`<script>` and an `onerror` in a runbook are escaped; `javascript:` links dropped."""
        policy = tmp_path / "policy"
        shutil.copytree(EXAMPLE_POLICY, policy)
        (policy / "runbooks" / "hostile.md").write_text(
            "# Hostile\n\n<script>alert('x')</script>\n\n<img src=x onerror=alert(1)>\n\n"
            "[click](javascript:alert(1)) and [docs](https://example.com/)\n"
        )
        with (
            make_charter(load_bundle(policy), store_target) as charter,
            TestClient(create_app(charter), base_url=BASE) as client,
        ):
            secret = charter.create_key("reviewer", label="alice@example.com")[1]
            sign_in(client, secret)
            page = client.get("/ui/runbooks/runbooks/hostile.md").text
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert" in page
        assert "<img src=x" not in page
        assert 'href="javascript:' not in page
        assert 'href="https://example.com/"' in page

    def test_render_runbook_escapes_html(self):
        """The renderer itself: raw HTML is text."""
        html = str(render_runbook("<b>bold</b> and **strong**"))
        assert "&lt;b&gt;bold&lt;/b&gt;" in html
        assert "<strong>strong</strong>" in html


class TestCharts:
    """The SVG charts: gaps for empty samples, escaped text, round axes."""

    def test_nice_ceiling_splits_into_round_quarters(self):
        """1, 2, 4 or 8 times a power of ten."""
        assert [nice_ceiling(v) for v in (0.21, 0.5, 63, 3, 0)] == [0.4, 0.8, 80, 4, 1.0]

    def test_formats(self):
        """Rates as percentages, durations in words, None as a dash."""
        assert [format_percent(v) for v in (0.834, 0.05, None)] == ["83%", "5%", "—"]
        assert [format_seconds(v) for v in (42, 200, 7300, None)] == [
            "42s",
            "3m 20s",
            "2h 01m",
            "—",
        ]

    def test_none_is_a_gap_not_a_zero(self):
        """Two runs of values make two paths; the summary counts the steps with data."""
        times = [f"2026-03-02T10:0{k}:00.000000Z" for k in range(6)]
        chart = line_chart(
            "t", "Test", times, [Line("rate", [0.1, 0.2, None, None, 0.5, 0.4])], y_max=1.0
        )
        assert str(chart.svg).count('<path class="line"') == 2
        assert "4 of 6 steps with data" in chart.summary
        assert chart.rows[2] == ("10:02 UTC", "—")

    def test_text_is_escaped_and_thresholds_drawn(self):
        """Labels cannot break out of the SVG; a threshold is a marked line."""
        times = ["2026-03-02T10:00:00.000000Z", "2026-03-02T10:01:00.000000Z"]
        chart = line_chart(
            "d",
            "Drift <b>",
            times,
            [Line("<script>", [0.3, 0.5])],
            thresholds=(Threshold(0.25, "0.25 drifted"),),
        )
        svg = str(chart.svg)
        assert "<script>" not in svg
        assert "&lt;script&gt;" in svg
        assert "Drift &lt;b&gt;" in svg
        assert 'class="threshold threshold-bad"' in svg
        assert "style=" not in svg

    def test_an_empty_chart_says_so(self):
        """No value at all: a note in the drawing, and `no data` in the text."""
        chart = line_chart("e", "Empty", ["2026-03-02T10:00:00Z"], [Line("x", [None])])
        assert chart.empty
        assert "no data in this period" in str(chart.svg)
        assert "no data" in chart.summary

    def test_sparkline(self):
        """A small named line; the last value with data has a dot."""
        svg = str(sparkline([None, 0.5, 1.0, None], "success <rate>"))
        assert 'aria-label="success &lt;rate&gt;"' in svg
        assert svg.count("<circle") == 1
