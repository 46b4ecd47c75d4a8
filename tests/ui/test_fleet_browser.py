"""The fleet, agent and runbook pages in a real browser, against a real `charter serve`.

The store is seeded first through the embedded API on a fake clock that ends a minute
before now (`_fleet_data.seed_fleet`): a demoted agent with an open proposal and a
firing alert, an agent whose inputs drifted, and open breakers. Then `charter serve`
opens it on the real clock, and Chromium signs in as a reviewer or an admin.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _fleet_data import seed_fleet
from _ui import Server, start_server
from playwright.sync_api import expect

from _browser import shot, sign_in_page
from _serve import create_key
from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.testing import FakeClock

pytestmark = pytest.mark.browser


@pytest.fixture
def server(store_target: str) -> Iterator[Server]:
    """`charter serve` on a store holding a fleet in trouble (see `_fleet_data`)."""
    end = dt.datetime.now(dt.UTC)
    clock = FakeClock(end - dt.timedelta(hours=2), tick=0.001)
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as seeding:
        seed_fleet(seeding, clock, end)
    running = start_server(store_target)
    yield running
    running.stop()


@pytest.fixture
def admin_key(server: Server) -> str:
    return create_key(server.db, "--role", "admin", "--label", "ada@example.com")


def fleet_row(page: Any, agent: str) -> Any:
    return page.locator(f"[data-testid=fleet-row][data-agent='{agent}']")


class TestFleetPage:
    """A reviewer takes the fleet in at a glance, and follows a problem to its agent."""

    def test_problems_first_with_their_badges_and_runbooks(
        self, server: Server, new_page: Callable[[], Any]
    ):
        """Alerts, proposals and each agent's standing show; alerts lead to their runbook."""
        page = new_page()
        sign_in_page(page, server.keys.alice)
        expect(page.get_by_role("link", name="Fleet")).to_have_attribute("aria-current", "page")
        rows = page.get_by_test_id("fleet-row")
        expect(rows).to_have_count(4)
        # problems first: alerts (support-bot also has an open breaker and a demotion), then
        # open breakers (the trainee's is the shared refunds breaker), each by id
        order = ["support-bot", "outreach-bot", "infra-bot", "support-bot-trainee"]
        for k, agent in enumerate(order):
            expect(rows.nth(k)).to_have_attribute("data-agent", agent)
        support = fleet_row(page, "support-bot")
        expect(support.get_by_test_id("badge-demoted")).to_contain_text(
            "demoted by demote-on-drift-or-failures"
        )
        expect(support.get_by_test_id("level")).to_have_text("1")
        expect(support.get_by_test_id("badge-breaker")).to_contain_text("payments.refund open")
        expect(support.get_by_test_id("alert-count")).to_contain_text("1 critical")
        expect(support.get_by_test_id("badge-proposal")).to_contain_text("level 2 proposed")
        success = support.locator("[data-figure=success_rate]")
        expect(success).to_have_text("83%")
        expect(success).to_have_attribute("title", re.compile(r"sample: 130 outcomes"))
        expect(support.get_by_test_id("sparkline")).to_have_attribute(
            "aria-label", re.compile(r"success rate per hour")
        )
        expect(fleet_row(page, "outreach-bot").get_by_test_id("badge-drift")).to_contain_text(
            "drift"
        )
        expect(fleet_row(page, "infra-bot").get_by_test_id("badge-breaker")).to_contain_text(
            "infra.scale open"
        )
        alerts = page.get_by_test_id("alert-row")
        expect(alerts).to_have_count(2)
        expect(page.get_by_test_id("alerts")).to_contain_text("outcomes-failing")
        expect(page.get_by_test_id("alerts")).to_contain_text("inputs-drifting")
        # a reviewer sees the proposal, but promoting is a policy admin's or an admin's
        expect(page.get_by_test_id("proposal")).to_contain_text("level 1 → 2")
        expect(page.get_by_test_id("proposal-not-yours")).to_be_visible()
        assert page.get_by_test_id("accept").count() == 0
        shot(page, "fleet")
        page.locator("[data-alert=outcomes-failing]").get_by_test_id("runbook-link").click()
        expect(page).to_have_url(re.compile(r"/ui/runbooks/runbooks/failures\.md$"))
        expect(page.get_by_test_id("runbook").locator("h1")).to_have_text(
            "An agent's actions fail when they run"
        )
        expect(page.get_by_test_id("runbook-alerts")).to_contain_text("support-bot")

    def test_the_agent_page_draws_its_figures(self, server: Server, new_page: Callable[[], Any]):
        """Charts with text alternatives and data tables, figures per action and model."""
        page = new_page()
        sign_in_page(page, server.keys.alice)
        fleet_row(page, "outreach-bot").get_by_role("link", name="outreach-bot").click()
        expect(page).to_have_url(re.compile(r"/ui/agents/outreach-bot$"))
        expect(page.get_by_test_id("agent")).to_contain_text("gpt-5-mini")
        for chart in ("escalation", "latency", "success", "calibration", "drift"):
            svg = page.get_by_test_id(f"chart-{chart}")
            expect(svg).to_be_visible()
            expect(svg).to_have_attribute("role", "img")
        drift = page.get_by_test_id("chart-drift")
        expect(drift.locator("title").first).to_have_text("Input drift (PSI per watched field)")
        expect(drift.locator("desc")).to_contain_text("args.campaign")
        assert drift.locator(".threshold-bad").count() == 1  # the 0.25 line
        assert drift.locator("g.series").count() >= 2  # one line per watched field
        box = page.get_by_test_id("chart-box-drift")
        box.get_by_text("Data table").click()
        expect(box.locator("table")).to_be_visible()
        expect(box.locator("thead")).to_contain_text("args.campaign")
        expect(page.get_by_test_id("by-action")).to_contain_text("mail.send")
        expect(page.get_by_test_id("by-model")).to_contain_text("gpt-5-mini 2026-08-01")
        expect(page.get_by_test_id("alert-row")).to_contain_text("inputs-drifting")
        shot(page, "agent")
        page.get_by_role("link", name="1 h").click()
        expect(page).to_have_url(re.compile(r"\?hours=1$"))
        expect(page.get_by_test_id("chart-success")).to_be_visible()
        page.goto("/ui/agents/support-bot")
        expect(page.get_by_test_id("demotion")).to_contain_text("demote-on-drift-or-failures")
        expect(page.get_by_test_id("circuits")).to_contain_text("refunds-failing")
        expect(page.get_by_test_id("reliability")).to_be_visible()
        shot(page, "agent_demoted")


class TestActingFromThePages:
    """An admin gives a demoted agent its level back; a reviewer halts an agent."""

    def test_an_admin_accepts_the_proposal(
        self, server: Server, admin_key: str, new_page: Callable[[], Any]
    ):
        """Accepting restores the level: the badge goes and the level in force is 2 again."""
        page = new_page()
        sign_in_page(page, admin_key)
        expect(page.get_by_test_id("proposal")).to_contain_text("support-bot")
        page.get_by_test_id("accept").click()
        expect(page.get_by_test_id("flash")).to_contain_text("Accepted")
        support = fleet_row(page, "support-bot")
        expect(support.get_by_test_id("level")).to_have_text("2")
        assert support.get_by_test_id("badge-demoted").count() == 0
        assert page.get_by_test_id("proposal").count() == 0

    def test_halt_from_the_agent_page_needs_the_confirmation(
        self, server: Server, admin_key: str, new_page: Callable[[], Any]
    ):
        """Unticked, the form does not go; ticked, the agent is halted until an admin resumes."""
        page = new_page()
        sign_in_page(page, server.keys.alice, "/ui/agents/infra-bot")
        page.get_by_text("Halt infra-bot…").click()
        page.fill("#halt-reason", "scaling the wrong service in a loop")
        page.get_by_test_id("halt").click()  # the box is not ticked: the browser holds it
        expect(page.get_by_test_id("flash")).to_have_count(0)
        page.get_by_test_id("halt-confirm").check()
        page.get_by_test_id("halt").click()
        expect(page.get_by_test_id("flash")).to_contain_text("Halted")
        expect(page).to_have_url(re.compile(r"/ui/agents/infra-bot\?done=halted$"))
        expect(page.get_by_test_id("halted-banner")).to_contain_text("scaling the wrong service")
        assert page.get_by_test_id("resume").count() == 0  # a reviewer may not lift it
        page.goto("/ui/fleet")
        expect(page.get_by_test_id("fleet-row").first).to_have_attribute("data-agent", "infra-bot")
        expect(fleet_row(page, "infra-bot").get_by_test_id("badge-halted")).to_be_visible()
        admin = new_page()
        sign_in_page(admin, admin_key, "/ui/agents/infra-bot")
        admin.get_by_test_id("resume-confirm").check()
        admin.get_by_test_id("resume").click()
        expect(admin.get_by_test_id("flash")).to_contain_text("Resumed")
        expect(admin.get_by_test_id("halted-banner")).to_have_count(0)
