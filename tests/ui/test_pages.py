"""The reviewer UI without a browser: sessions, CSRF, headers, escaping, the explorer's checks."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from _signin import csrf_of, sign_in
from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.ledger import LedgerEntry
from charter.server import create_app
from charter.server.ui import CSP
from charter.server.ui._explorer import Filters, check_entry
from charter.server.ui._session import COOKIE, Sessions
from charter.server.ui._text import reveal, show_value
from charter.testing import FakeClock, make_charter

BASE = "http://127.0.0.1:8470"
REFUND = {"order_id": "ord-1001", "amount": 1500, "currency": "USD"}


@pytest.fixture
def charter(store_target: str) -> Iterator[Charter]:
    with make_charter(EXAMPLE_POLICY, store_target, clock=FakeClock(tick=0.001)) as opened:
        yield opened


@pytest.fixture
def client(charter: Charter) -> Iterator[TestClient]:
    with TestClient(create_app(charter), base_url=BASE) as test_client:
        yield test_client


def finance_key(charter: Charter, label: str = "alice@example.com") -> str:
    return charter.create_key("reviewer", label=label, groups=["finance"])[1]


def pending_refund(charter: Charter, **args: object) -> str:
    record = charter.decide(
        {"agent": "support-bot", "action": "payments.refund", "args": {**REFUND, **args}}
    )
    (view,) = [v for v in charter.approvals() if v.approval["decision_id"] == record.id]
    return view.id


class TestReveal:
    """Agent text is escaped, and what a reader cannot see is shown and named."""

    def test_markup_is_escaped_and_flagged(self):
        """`<script>` comes out as text, with a markup finding."""
        shown = reveal('<script>alert("x")</script>', "args.reason")
        assert "<script>" not in str(shown.html)
        assert "&lt;script&gt;" in str(shown.html)
        assert [f.kind for f in shown.findings] == ["markup"]

    @pytest.mark.parametrize(
        ("char", "kind"),
        [
            ("\u202e", "bidi"),
            ("\u2066", "bidi"),
            ("\u200b", "zero-width"),
            ("\ufeff", "zero-width"),
            ("\U000e0041", "tag"),
            ("\x07", "invisible"),
        ],
    )
    def test_invisible_characters_are_made_visible(self, char: str, kind: str):
        """Each hidden character becomes a visible `⟨U+XXXX⟩` and is named in a finding."""
        shown = reveal(f"12{char}34", "args.amount")
        code = f"U+{ord(char):04X}"
        assert char not in str(shown.html)
        assert f"\u27e8{code}\u27e9" in str(shown.html)
        assert shown.findings[0].kind == kind
        assert code in shown.findings[0].message

    def test_plain_text_is_untouched(self):
        """Ordinary text, newlines and non-Latin letters carry no finding."""
        shown = reveal("Grüße, 東京\nline two", "args.reason")
        assert shown.findings == []
        assert str(shown.html) == "Grüße, 東京\nline two"

    def test_long_values_fold(self):
        """A value past the fold keeps a short escaped preview and its full length."""
        shown = reveal("<b>" + "x" * 500, "args.reason")
        assert shown.folded is not None
        assert shown.length == 503
        assert "&lt;b&gt;" in str(shown.folded)

    def test_nested_values_name_their_path(self):
        """A finding deep in an object names the path, key names included."""
        shown = show_value({"items": [{"note": "a\u200bb"}], "k\u202e": 1}, "args")
        where = sorted(f.where for f in shown.findings)
        assert where == ["args.items[0].note", "the key args.k\u202e"]


class TestSessions:
    """Session cookies are signed, expire, and end; CSRF tokens are bound to a session."""

    def test_round_trip(self):
        """A cookie reads back as the session it was issued for."""
        sessions = Sessions(b"k" * 32, clock=lambda: 1000.0)
        cookie, session = sessions.issue("key_1")
        assert sessions.read(cookie) == session

    def test_forged_and_other_secret_cookies_are_refused(self):
        """Any change to the cookie, or another store's secret, reads as no session."""
        sessions = Sessions(b"k" * 32, clock=lambda: 1000.0)
        cookie, _ = sessions.issue("key_1")
        version, body, signature = cookie.split(".")
        assert sessions.read(f"{version}.{body}x.{signature}") is None
        assert sessions.read(f"{version}.{body}.{signature[:-2]}AA") is None
        assert Sessions(b"j" * 32, clock=lambda: 1000.0).read(cookie) is None
        assert sessions.read("garbage") is None
        assert sessions.read(None) is None

    def test_expiry_and_sign_out(self):
        """A session stops working at its expiry, or when ended."""
        now = [1000.0]
        sessions = Sessions(b"k" * 32, lifetime=60, clock=lambda: now[0])
        cookie, session = sessions.issue("key_1")
        other, _ = sessions.issue("key_1")
        sessions.end(session)
        assert sessions.read(cookie) is None
        assert sessions.read(other) is not None
        now[0] += 61
        assert sessions.read(other) is None

    def test_csrf_tokens_are_per_session(self):
        """A token checks only for the session it was made for."""
        sessions = Sessions(b"k" * 32)
        token = sessions.csrf_token("session-a")
        assert sessions.check_csrf("session-a", token)
        assert not sessions.check_csrf("session-b", token)
        assert not sessions.check_csrf("session-a", None)


class TestSignIn:
    """Only reviewer and admin keys sign in; the cookie is locked down and holds no secret."""

    def test_pages_need_a_session(self, client: TestClient):
        """Every page sends a stranger to sign in, remembering where they were going."""
        answer = client.get("/ui/decisions?agent=x", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/signin?next=%2Fui%2Fdecisions%3Fagent%3Dx"
        fragment = client.get("/ui/", headers={"HX-Request": "true"}, follow_redirects=False)
        assert fragment.status_code == 401
        assert fragment.headers["HX-Redirect"] == "/ui/signin"

    def test_root_leads_to_the_ui(self, client: TestClient):
        """`/` and `/ui` redirect to the inbox."""
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"

    def test_cookie_flags_and_no_secret(self, charter: Charter, client: TestClient):
        """The session cookie is HttpOnly, SameSite=Strict, scoped to /ui, and secret-free."""
        secret = finance_key(charter)
        form = client.get("/ui/signin")
        answer = client.post(
            "/ui/signin", data={"key": secret, "csrf": csrf_of(form.text)}, follow_redirects=False
        )
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        assert secret not in cookie
        assert secret[4:20] not in cookie

    @pytest.mark.parametrize("role", ["agent", "auditor", "policy-admin"])
    def test_other_roles_cannot_sign_in(self, charter: Charter, client: TestClient, role: str):
        """Keys that do not review are refused with a reason."""
        secret = charter.create_key(role, agent="support-bot" if role == "agent" else None)[1]
        form = client.get("/ui/signin")
        answer = client.post("/ui/signin", data={"key": secret, "csrf": csrf_of(form.text)})
        assert answer.status_code == 403
        assert "use a reviewer or admin key" in answer.text

    def test_unknown_key_and_missing_token_are_refused(self, client: TestClient):
        """A wrong key is 401; a sign-in post without the form's token is 403."""
        form = client.get("/ui/signin")
        wrong = client.post("/ui/signin", data={"key": "chk_nope", "csrf": csrf_of(form.text)})
        assert wrong.status_code == 401
        forged = client.post("/ui/signin", data={"key": "chk_nope"})
        assert forged.status_code == 403

    def test_next_never_leaves_the_ui(self, charter: Charter, client: TestClient):
        """After sign-in only UI paths are followed; other sites are ignored."""
        secret = finance_key(charter)
        for target, expected in [
            ("/ui/decisions", "/ui/decisions"),
            ("https://evil.example/", "/ui/"),
            ("//evil.example/ui/", "/ui/"),
            ("/v1/ledger", "/ui/"),
        ]:
            form = client.get("/ui/signin")
            answer = client.post(
                "/ui/signin",
                data={"key": secret, "csrf": csrf_of(form.text), "next": target},
                follow_redirects=False,
            )
            assert answer.headers["location"] == expected

    def test_revoking_the_key_ends_its_sessions(self, charter: Charter, client: TestClient):
        """A revoked key's open session stops working (within the 1 s lookup cache)."""
        secret = finance_key(charter)
        sign_in(client, secret)
        key_id = next(k["key_id"] for k in charter.list_keys() if k["role"] == "reviewer")
        charter.revoke_key(key_id)
        time.sleep(1.05)  # the UI re-reads keys at most once a second
        assert client.get("/ui/", follow_redirects=False).status_code == 303

    def test_sign_out(self, charter: Charter, client: TestClient):
        """Signing out needs the token, drops the cookie and ends the session."""
        token = sign_in(client, finance_key(charter))
        cookie = client.cookies.get(COOKIE)
        assert client.post("/ui/signout", data={}).status_code == 403
        answer = client.post("/ui/signout", data={"csrf": token}, follow_redirects=False)
        assert answer.status_code == 303
        client.cookies.set(COOKIE, cookie or "", path="/ui")
        assert client.get("/ui/", follow_redirects=False).status_code == 303


class TestPages:
    """Headers, CSRF on every form, and what the pages show."""

    def test_security_headers(self, charter: Charter, client: TestClient):
        """UI pages carry the CSP (scripts from this origin only) and refuse framing."""
        sign_in(client, finance_key(charter))
        for path in ("/ui/signin", "/ui/", "/ui/decisions", "/ui/nope"):
            answer = client.get(path)
            assert answer.headers["content-security-policy"] == CSP
            assert "script-src 'self'" in CSP
            assert "unsafe-inline" not in CSP
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert client.get("/ui/nope").status_code == 404

    def test_htmx_and_css_are_served_from_the_package(self, client: TestClient):
        """The scripts and styles come from this server, not a CDN."""
        page = client.get("/ui/signin").text
        assert 'src="/ui/static/vendor/htmx.min.js' in page
        assert "http" not in re.sub(r"https?://(www\.)?w3\.org[^\"']*", "", page.split("<body")[0])
        assert client.get("/ui/static/ui.css").status_code == 200
        htmx = client.get("/ui/static/vendor/htmx.min.js")
        assert htmx.status_code == 200
        assert "htmx" in htmx.text[:200]

    def test_decisions_need_the_token(self, charter: Charter, client: TestClient):
        """An approve, deny or modify without the session's token changes nothing."""
        sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        for verb in ("approve", "deny", "modify"):
            answer = client.post(f"/ui/approvals/{approval_id}/{verb}", data={"reason": "x"})
            assert answer.status_code == 403
        cross = client.post(
            f"/ui/approvals/{approval_id}/approve",
            data={"csrf": "x"},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert charter.get_approval(approval_id).state == "pending"  # type: ignore[union-attr]

    def test_a_halted_approval_is_marked_and_stays_pending(
        self, charter: Charter, client: TestClient
    ):
        """Under a halt the card says so, and approving it from the card changes nothing."""
        token = sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        charter.halt("agent", "support-bot", reason="refunds to one card", by="ops")
        card = client.get(f"/ui/approvals/{approval_id}")
        assert 'data-testid="halted-banner"' in card.text
        assert "refunds to one card" in card.text
        client.post(
            f"/ui/approvals/{approval_id}/approve",
            data={"csrf": token, "note": "fine"},
            follow_redirects=False,
        )
        assert charter.get_approval(approval_id).state == "pending"  # type: ignore[union-attr]
        charter.resume("agent", "support-bot", by="ops")
        assert 'data-testid="halted-banner"' not in client.get(f"/ui/approvals/{approval_id}").text

    def test_approve_from_the_card(self, charter: Charter, client: TestClient):
        """The card's approve form settles the approval and returns to the inbox."""
        token = sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        assert approval_id in client.get("/ui/").text
        card = client.get(f"/ui/approvals/{approval_id}")
        assert card.status_code == 200
        assert 'data-testid="approve"' in card.text
        answer = client.post(
            f"/ui/approvals/{approval_id}/approve",
            data={"csrf": token, "note": "fine"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert charter.get_approval(approval_id).state == "approved"  # type: ignore[union-attr]
        assert approval_id not in client.get("/ui/").text

    def test_similar_requests_are_decided_as_a_batch(self, charter: Charter, client: TestClient):
        """The card offers the similar pending requests; one denial settles them all."""
        token = sign_in(client, finance_key(charter))
        ids = [pending_refund(charter, order_id=f"ord-{n}", amount=2000 + n) for n in range(3)]
        card = client.get(f"/ui/approvals/{ids[0]}")
        assert "Decide all 3 similar requests" in card.text
        refused = client.post(
            f"/ui/approvals/{ids[0]}/batch-deny", data={"csrf": token, "reason": " "}
        )
        assert refused.status_code == 422
        answer = client.post(
            f"/ui/approvals/{ids[0]}/batch-deny",
            data={"csrf": token, "reason": "a fraud pattern"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert {charter.get_approval(i).state for i in ids} == {"denied"}  # type: ignore[union-attr]
        assert (
            "Denied the similar requests as a batch" in client.get(answer.headers["location"]).text
        )

    def test_deny_needs_a_reason(self, charter: Charter, client: TestClient):
        """An empty reason is refused on the card, and the approval stays pending."""
        token = sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        answer = client.post(
            f"/ui/approvals/{approval_id}/deny", data={"csrf": token, "reason": "  "}
        )
        assert answer.status_code == 422
        assert "say why" in answer.text
        assert charter.get_approval(approval_id).state == "pending"  # type: ignore[union-attr]

    def test_validate_lists_every_violation(self, charter: Charter, client: TestClient):
        """The editor's check names each broken field, and says when all is well."""
        token = sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        url = f"/ui/approvals/{approval_id}/validate"
        bad = client.post(
            url,
            data={"csrf": token, "args": '{"order_id": "x", "amount": -1, "currency": "USD"}'},
        )
        assert "`amount`" in bad.text
        assert "`order_id`" in bad.text
        broken = client.post(url, data={"csrf": token, "args": '{"amount": 1, "amount": 2}'})
        assert "appears twice" in broken.text
        good = client.post(
            url,
            data={
                "csrf": token,
                "args": '{"order_id": "ord-1001", "amount": 900, "currency": "USD"}',
            },
        )
        assert 'data-testid="check-ok"' in good.text

    def test_modify_rejects_contract_violations_on_the_card(
        self, charter: Charter, client: TestClient
    ):
        """A modify that breaks the contract is shown back with its errors; nothing changes."""
        token = sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter)
        answer = client.post(
            f"/ui/approvals/{approval_id}/modify",
            data={"csrf": token, "args": '{"order_id": "ord-1", "amount": "lots"}'},
        )
        assert answer.status_code == 422
        assert "lots" in answer.text
        assert charter.get_approval(approval_id).state == "pending"  # type: ignore[union-attr]

    def test_hostile_arguments_render_inert(self, charter: Charter, client: TestClient):
        """Markup in the arguments is escaped on the inbox and the card, and flagged."""
        sign_in(client, finance_key(charter))
        approval_id = pending_refund(charter, reason="<script>alert(1)</script>\u202e")
        for page in (client.get("/ui/").text, client.get(f"/ui/approvals/{approval_id}").text):
            assert "<script>alert(1)" not in page
            assert "\u202e" not in page
        card = client.get(f"/ui/approvals/{approval_id}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
        assert "\u27e8U+202E\u27e9" in card
        assert 'data-testid="hostile-banner"' in card

    def test_unknown_approval_is_a_page_not_a_crash(self, charter: Charter, client: TestClient):
        """A card for no approval is a 404 page."""
        sign_in(client, finance_key(charter))
        assert client.get("/ui/approvals/apr_nope").status_code == 404
        assert client.get("/ui/decisions/nope").status_code == 404


class TestExplorer:
    """Search filters, and each entry's check against its content and its predecessor."""

    def test_filters_from_the_query(self):
        """Unknown verdicts, malformed times and page markers are dropped."""
        filters = Filters.from_query(
            {"verdict": "maybe", "since": "yesterday", "until": "2026-03-02T10:00", "before": "x"}
        )
        assert filters == Filters(until="2026-03-02T10:00")
        assert filters.query(before=5) == {"until": "2026-03-02T10:00", "before": "5"}

    def test_entries_verify_and_tampering_shows(self, charter: Charter):
        """An untouched entry verifies; an edited payload or a broken link does not."""
        charter.decide({"agent": "support-bot", "action": "payments.refund", "args": REFUND})
        entries = charter.ledger_page()
        first, second = entries[0], entries[1]
        assert check_entry(first, None).ok
        assert check_entry(second, first).ok
        edited = dataclasses.replace(second, payload=second.payload.replace("1", "2", 1))
        assert not check_entry(edited, first).ok
        relinked = LedgerEntry(
            second.seq, second.kind, second.at, second.payload, second.leaf_hash, "0" * 64
        )
        assert "chain hash" in (check_entry(relinked, first).problem or "")
        assert not check_entry(second, None).ok

    def test_explorer_searches(self, charter: Charter, client: TestClient):
        """Searching by verdict lists only those decisions, each with its position."""
        sign_in(client, finance_key(charter))
        pending_refund(charter)
        charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {**REFUND, "amount": 10},
                "context": {"rationale": "a small goodwill refund"},
            }
        )
        page = client.get("/ui/decisions?verdict=allow").text
        assert page.count('data-testid="decision-row"') == 1
        assert "✓ verifies" in page
        assert client.get("/ui/decisions").text.count('data-testid="decision-row"') == 2
        verified = client.get("/ui/verify").text
        assert 'data-testid="verify-result"' in verified


class TestCardSections:
    """The card's history and runbook sections."""

    def test_recent_decisions_show_their_outcomes(self, charter: Charter, client: TestClient):
        """Earlier decisions of the same agent and action are listed with how they went."""
        sign_in(client, finance_key(charter))
        earlier = charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {**REFUND, "amount": 20},
                "context": {"rationale": "a small goodwill refund"},
            }
        )
        charter.record_outcome(earlier.id, success=True)
        approval_id = pending_refund(charter)
        card = client.get(f"/ui/approvals/{approval_id}").text
        recent = card.split('data-testid="recent"')[1].split("</table>")[0]
        assert f"/ui/decisions/{earlier.id}" in recent
        assert "✓ succeeded" in recent

    def test_escalations_show_their_runbook(self, charter: Charter, client: TestClient):
        """An escalation's card carries the runbook the rule names."""
        sign_in(client, charter.create_key("reviewer", label="sre@example.com", groups=["sre"])[1])
        record = charter.decide(
            {
                "agent": "infra-bot",
                "action": "db.migrate",
                "args": {"database": "orders", "migration": "0042_add_index"},
                "context": {"environment": "prod", "rationale": "the index speeds up refunds"},
            }
        )
        (view,) = [v for v in charter.approvals() if v.approval["decision_id"] == record.id]
        card = client.get(f"/ui/approvals/{view.id}").text
        assert "escalation" in card
        assert 'data-testid="runbook"' in card
        assert "runbooks/prod-migration.md" in card


class TestHaltFromTheInbox:
    def test_a_confirmed_halt_is_in_force_and_shown(self, charter: Charter, client: TestClient):
        token = sign_in(client, finance_key(charter))
        inbox = client.get("/ui/")
        assert 'data-testid="halt-panel"' in inbox.text
        assert 'data-testid="halts-in-force"' not in inbox.text
        fields = {"csrf": token, "scope": "agent", "target": "support-bot", "reason": "loop"}
        unconfirmed = client.post("/ui/halts", data=fields, follow_redirects=False)
        assert unconfirmed.status_code == 422
        assert charter.halts == ()
        answer = client.post("/ui/halts", data={**fields, "confirm": "yes"}, follow_redirects=False)
        assert answer.status_code == 303
        assert [(h.scope, h.target, h.reason) for h in charter.halts] == [
            ("agent", "support-bot", "loop")
        ]
        shown = client.get("/ui/?done=halted").text
        assert 'data-testid="halts-in-force"' in shown
        assert "loop" in shown
        halts = [e.payload_object() for e in charter.store.entries() if e.kind == "halt"]
        assert halts[0]["by"].startswith("key:")

    def test_a_halt_needs_the_token_and_a_reason(self, charter: Charter, client: TestClient):
        token = sign_in(client, finance_key(charter))
        no_token = {"scope": "all", "reason": "x", "confirm": "yes"}
        assert client.post("/ui/halts", data=no_token, follow_redirects=False).status_code == 403
        no_reason = {"csrf": token, "scope": "all", "reason": " ", "confirm": "yes"}
        assert client.post("/ui/halts", data=no_reason, follow_redirects=False).status_code == 422
        assert charter.halts == ()
