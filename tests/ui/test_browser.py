"""The reviewer UI in a real browser, against a real `charter serve` and a real agent.

The agent is the SDK's `charter.Client` in another thread, blocked waiting for people to
decide; the reviewer is Chromium driven by Playwright. Every test is bounded: each browser
step by `STEP_MS`, each agent by `AGENT_WAIT`. The review flow runs on each store (the
agent's long poll is woken by what the reviewer records); the safety checks, about the
page itself, on SQLite only.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from _ui import Server
from playwright.sync_api import expect

import charter
from _browser import shot
from charter.sdk import ActionDenied, governed

pytestmark = pytest.mark.browser

AGENT = "support-bot"
ACTION = "payments.refund"
#: Seconds an agent waits for the reviewer before the test gives up on it.
AGENT_WAIT = 60.0
CONTEXT = {
    "confidence": 0.82,
    "rationale": "The parcel arrived damaged; the customer sent photos of the broken item.",
    "alternatives": ["offer a replacement", "refund half and keep the item"],
    "data_sources": [{"name": "orders-db", "age_seconds": 90}],
}


class WaitingAgent:
    """An agent whose refund is governed: the call blocks until people decide, then runs.

    `@governed(..., wait=...)` on a real `charter.Client`, in its own thread: the call
    decides, waits for the reviewers, and runs the refund with the arguments they approved
    (or raises `ActionDenied` with the reviewer's reason).
    """

    def __init__(self, server: Server, args: Mapping[str, Any]) -> None:
        self.server = server
        self.args = dict(args)
        self.ran_with: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="waiting-agent", daemon=True)

    def start(self) -> WaitingAgent:
        self._thread.start()
        return self

    def refund(self, **args: Any) -> str:
        """The action itself: what it is called with is what the reviewers approved."""
        self.ran_with = args
        return f"refunded {args['amount']} {args['currency']}"

    def _run(self) -> None:
        try:
            with charter.Client(self.server.url, self.server.keys.agent) as client:
                refund = governed(
                    ACTION, client=client, agent=AGENT, context=CONTEXT, wait=AGENT_WAIT
                )(self.refund)
                refund(**self.args)
        except BaseException as exc:  # handed to the test thread by `outcome`
            self.error = exc

    def outcome(self) -> dict[str, Any] | None:
        """Wait for the agent to finish; returns the args it ran with, or raises its error."""
        self._thread.join(AGENT_WAIT + 10)
        assert not self._thread.is_alive(), "the agent is still waiting"
        if self.error is not None:
            raise self.error
        return self.ran_with


def sign_in(page: Any, key: str) -> None:
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin"))
    page.fill("#key", key)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("queue")).to_be_visible()


def open_card(page: Any, decision_text: str) -> None:
    row = page.get_by_test_id("approval-row").filter(has_text=decision_text)
    expect(row).to_be_visible()
    row.click()
    expect(page.get_by_test_id("decide")).to_be_visible()


def decision_id_on(page: Any) -> str:
    """The decision id the open card links to."""
    link = page.locator("a[href^='/ui/decisions/']").first.get_attribute("href")
    return str(link).rsplit("/", 1)[-1]


def decision_row(page: Any, decision_id: str) -> Any:
    return page.locator(f"[data-testid=decision-row][data-decision='{decision_id}']")


class TestReviewFlow:
    """A reviewer decides from the browser while the agent waits."""

    def test_approve_unblocks_the_agent_and_the_outcome_reaches_the_explorer(
        self, server: Server, new_page: Callable[[], Any]
    ):
        """Sign in, see the pending refund live, approve it: the agent runs it and reports."""
        page = new_page()
        sign_in(page, server.keys.alice)
        expect(page.get_by_test_id("empty")).to_be_visible()
        args = {"order_id": "ord-1001", "amount": 1500, "currency": "USD", "reason": "damaged"}
        agent = WaitingAgent(server, args).start()
        # No reload: the inbox refreshes itself.
        row = page.get_by_test_id("approval-row").filter(has_text="ord-1001")
        expect(row).to_be_visible()
        shot(page, "inbox")
        open_card(page, "ord-1001")
        expect(page.get_by_test_id("rationale")).to_contain_text("parcel arrived damaged")
        expect(page.get_by_test_id("agent")).to_contain_text("gpt-5-mini")
        expect(page.get_by_test_id("reasons")).to_contain_text("large-refunds-need-finance")
        expect(page.get_by_test_id("factors")).to_contain_text("refund above 500")
        expect(page.get_by_test_id("levels")).to_be_visible()
        shot(page, "card")
        decision_id = decision_id_on(page)
        page.get_by_test_id("approve").click()
        expect(page.get_by_test_id("flash")).to_contain_text("Approved")
        assert agent.outcome() == args
        page.goto("/ui/decisions?agent=support-bot")
        row = decision_row(page, decision_id)
        expect(row.get_by_test_id("decision-state")).to_contain_text("executed")
        expect(row.get_by_test_id("verifies")).to_contain_text("verifies")
        page.get_by_test_id("verify-all").click()
        expect(page.get_by_test_id("verify-result")).to_contain_text("verify")
        shot(page, "explorer")

    def test_deny_with_reason_reaches_the_agent(self, server: Server, new_page: Callable[[], Any]):
        """A denial's reason is what the waiting agent's `ActionDenied` carries."""
        page = new_page()
        sign_in(page, server.keys.alice)
        agent = WaitingAgent(
            server, {"order_id": "ord-2002", "amount": 2400, "currency": "EUR"}
        ).start()
        open_card(page, "ord-2002")
        page.get_by_text("Deny with a reason").click()
        page.fill("#deny-reason", "the order was never shipped; ask the customer to wait")
        page.get_by_test_id("deny").click()
        expect(page.get_by_test_id("flash")).to_contain_text("Denied")
        with pytest.raises(ActionDenied) as denied:
            agent.outcome()
        assert denied.value.reason == "the order was never shipped; ask the customer to wait"
        assert denied.value.denied_by == "alice@example.com"
        assert "never shipped" in str(denied.value)
        assert agent.ran_with is None

    def test_modify_changes_what_runs(self, server: Server, new_page: Callable[[], Any]):
        """A contract-breaking edit is refused by field; a valid one is what the agent runs."""
        page = new_page()
        sign_in(page, server.keys.alice)
        agent = WaitingAgent(
            server, {"order_id": "ord-3003", "amount": 1800, "currency": "GBP"}
        ).start()
        open_card(page, "ord-3003")
        page.get_by_text("Modify the arguments").click()
        editor = page.locator("#args-editor")
        editor.fill(json.dumps({"order_id": "ord-3003", "amount": -5, "currency": "GBP"}))
        expect(page.get_by_test_id("check-errors")).to_contain_text("amount")
        modified = {"order_id": "ord-3003", "amount": 1200, "currency": "GBP"}
        editor.fill(json.dumps(modified))
        expect(page.get_by_test_id("check-ok")).to_be_visible()
        page.get_by_test_id("modify").click()
        expect(page.get_by_test_id("flash")).to_contain_text("modified")
        assert agent.outcome() == modified


# What the browser makes of the page: the stored arguments and groups it shows round-trip
# through each store in test_pages.py (hostile arguments) and tests/server (groups).
@pytest.mark.stores("sqlite")
class TestSafety:
    """What an agent writes cannot act on the reviewer's page, and groups bound who decides."""

    def test_hostile_arguments_are_inert_and_flagged(
        self, server: Server, new_page: Callable[[], Any]
    ):
        """Markup is shown as text, never run; invisible characters are shown and flagged."""
        page = new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(page, server.keys.alice)
        hostile = {
            "order_id": "ord-4004",
            "amount": 1999,
            "currency": "USD",
            "reason": '<script>alert("x")</script><img src=x onerror="alert(1)"> refund\u202e0051',
            "customer_email": "vip\u200b@example.com",
        }
        agent = WaitingAgent(server, hostile).start()
        expect(
            page.get_by_test_id("approval-row")
            .filter(has_text="ord-4004")
            .get_by_test_id("row-flag")
        ).to_be_visible()
        open_card(page, "ord-4004")
        banner = page.get_by_test_id("hostile-banner")
        expect(banner).to_contain_text("U+202E")
        expect(banner).to_contain_text("U+200B")
        expect(banner).to_contain_text("markup")
        cells = page.get_by_test_id("args")
        expect(cells).to_contain_text("\u27e8U+202E\u27e9")
        expect(cells).to_contain_text("\u27e8U+200B\u27e9")
        expect(cells).to_contain_text('<script>alert("x")</script>')
        assert cells.locator("script, img").count() == 0
        assert page.locator("body script:not([src])").count() == 0
        assert "\u202e" not in cells.inner_text()
        shot(page, "card_hostile")
        assert dialogs == []
        page.get_by_text("Deny with a reason").click()
        page.fill("#deny-reason", "hidden characters in the reason")
        page.get_by_test_id("deny").click()
        with pytest.raises(ActionDenied):
            agent.outcome()

    def test_a_reviewer_outside_the_group_cannot_act(
        self, server: Server, new_page: Callable[[], Any]
    ):
        """Bob (ops) sees the finance refund but has no buttons, and a forged post is refused."""
        agent = WaitingAgent(
            server, {"order_id": "ord-5005", "amount": 1500, "currency": "USD"}
        ).start()
        bob = new_page()
        sign_in(bob, server.keys.bob)
        expect(bob.get_by_test_id("empty")).to_be_visible()  # nothing for ops
        bob.select_option("select[name=group]", "all")
        open_card(bob, "ord-5005")
        expect(bob.get_by_test_id("not-your-group")).to_contain_text("finance")
        assert bob.get_by_test_id("approve").count() == 0
        approval_id = bob.url.rsplit("/", 1)[-1]
        headers = json.loads(bob.locator("body").get_attribute("hx-headers"))
        forged = bob.request.post(
            f"/ui/approvals/{approval_id}/approve",
            form={"csrf": headers["X-CSRF-Token"], "note": "let me"},
        )
        assert forged.status == 403
        assert "not in the route's reviewer groups" in html.unescape(forged.text())
        alice = new_page()
        sign_in(alice, server.keys.alice)
        open_card(alice, "ord-5005")
        expect(alice.get_by_test_id("state")).to_have_text("pending")
        alice.get_by_text("Deny with a reason").click()
        alice.fill("#deny-reason", "test over")
        alice.get_by_test_id("deny").click()
        with pytest.raises(ActionDenied):
            agent.outcome()
