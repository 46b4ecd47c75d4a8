"""The reviewer UI's routes: sign-in, inbox, card, explorer, fleet, agents, runbooks.

Server-rendered with Jinja2 (autoescape on for every template) and enhanced with htmx,
served from the package: the inbox refreshes itself every few seconds, filters apply as
they change, and the modify editor checks the arguments as the reviewer types. Every form
also works as a plain HTML form, so the pages stay usable if the script fails to load.

Every page is answered with a Content-Security-Policy that admits scripts and styles from
this origin only, and no inline script or style at all; markup an agent wrote is
escaped, and invisible characters in it are shown and flagged (`_text`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charter.__about__ import __version__
from charter.errors import CharterError, Conflict, Forbidden, NotFound, RequestInvalid
from charter.model import MAX_ID
from charter.server._auth import allowed_roles
from charter.server._body import read_body
from charter.server._errors import ApiError
from charter.server.ui import _format
from charter.server.ui._card import can_act, check_args, load_card
from charter.server.ui._charts import format_number, format_percent, format_seconds
from charter.server.ui._explorer import VERDICTS, Filters, row_of, search
from charter.server.ui._fleet import (
    HOURS,
    agent_page,
    fleet_page,
    hours_of,
    render_runbook,
    runbook_title,
    show_figure,
    where,
)
from charter.server.ui._session import COOKIE, LIFETIME, PRE_COOKIE, Session, Sessions
from charter.server.ui._text import (
    Finding,
    editable_json,
    findings_in,
    reveal,
    show_json,
    show_value,
)
from charter.service import Charter, Principal, system_clock

__all__ = ["CSP", "create_ui"]

_log = logging.getLogger("charter.server.ui")
_HERE = Path(__file__).parent
#: The UI's Content-Security-Policy: this origin's scripts and styles, nothing inline.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
#: Roles that may sign in: those that act on approvals.
_ROLES = ("reviewer", "admin")
#: The largest form a page posts (modified arguments included).
_MAX_FORM = 256 * 1024
#: Seconds between refreshes of a live inbox or card.
POLL_SECONDS = 3
_NOTE_MAX = 2000
_DONE = {
    "approved": "Approved",
    "denied": "Denied",
    "modified": "Approved with modified arguments",
    "voted": "Your approval is recorded; more reviewers are needed",
    "batch-approved": "Approved the similar requests as a batch",
    "batch-denied": "Denied the similar requests as a batch",
    "halted": "Halted: new decisions it covers are denied, here and on every server on the store",
    "resumed": "Resumed: the halt is lifted and the agents it covered may act again",
    "accepted": "Accepted: the agent has the proposed autonomy level back",
    "declined": "Declined: the agent keeps its level; the controller may propose again later",
}


class _SignIn(Exception):
    """No valid session: send the browser to the sign-in page."""


class _Headers:
    """ASGI middleware: the security headers on every UI answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        reveal=reveal,
        show_value=show_value,
        show_json=show_json,
        when=_format.clock_time,
        percent=_format.percent,
        risk_tier=_format.risk_tier,
        summary=_format.arg_summary,
        width=_format.width_class,
        verdict=_format.verdict_words,
        figure=show_figure,
        rate=format_percent,
        seconds=format_seconds,
        number=format_number,
    )
    env.globals["version"] = __version__
    env.globals["poll_seconds"] = POLL_SECONDS
    env.globals["where"] = where
    return env


class _Keys:
    """The current principal of a session's key: looked up per request, cached 1 s.

    A session names its key; the key's role, label and groups are read again so a revoked
    key or a changed group takes effect within a second, on every open session.
    """

    def __init__(self, charter: Charter, monotonic: Callable[[], float]) -> None:
        self._charter = charter
        self._monotonic = monotonic
        self._rows: dict[str, Mapping[str, Any]] = {}
        self._read_at = float("-inf")

    def principal(self, key_id: str) -> Principal | None:
        now = self._monotonic()
        if now - self._read_at >= 1.0:
            self._rows = {str(r["key_id"]): r for r in self._charter.list_keys()}
            self._read_at = now
        row = self._rows.get(key_id)
        if row is None or row.get("revoked_at") is not None:
            return None
        principal = Principal.from_row(row)
        return principal if principal.role in _ROLES else None


class ReviewerUI:
    """The UI's handlers over one gateway.

    Args:
        charter: the open gateway.
        clock: the wall clock pages measure deadlines against.
    """

    def __init__(
        self, charter: Charter, *, clock: Callable[[], dt.datetime] = system_clock
    ) -> None:
        self.charter = charter
        self.clock = clock
        self.sessions = Sessions(charter.store.secret("ui-session"))
        self.keys = _Keys(charter, time.monotonic)
        self.env = _environment()

    # -- plumbing ----------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page or fragment, with what every template may use."""
        session: Session | None = context.pop("session", None)
        body = self.env.get_template(template).render(
            request=request,
            now=self.clock(),
            relative=lambda text: _format.relative(text, self.clock()),
            csrf=self.sessions.csrf_token(session.id) if session else "",
            **context,
        )
        return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})

    async def reviewer(self, request: Request) -> tuple[Session, Principal]:
        """The signed-in reviewer, or `_SignIn`."""
        session = self.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            raise _SignIn
        principal = await run_in_threadpool(self.keys.principal, session.key_id)
        if principal is None:
            raise _SignIn
        return session, principal

    async def form(self, request: Request, bound_to: str) -> dict[str, str]:
        """A posted form, after the CSRF checks; raises 403 when they fail."""
        origin = request.headers.get("origin")
        if origin is not None and origin != _origin(request):
            raise HTTPException(403, "the form came from another site")
        try:
            body = await read_body(request, _MAX_FORM)
        except ApiError as exc:
            raise HTTPException(exc.status, exc.message) from None
        fields = {
            k: v[0]
            for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()
        }
        token = fields.get("csrf") or request.headers.get("x-csrf-token")
        if not self.sessions.check_csrf(bound_to, token):
            raise HTTPException(403, "the form's security token is missing or stale; reload")
        return fields

    # -- sign-in -----------------------------------------------------------------------

    async def signin_page(self, request: Request) -> Response:
        """The sign-in form, bound to a fresh pre-session cookie."""
        return self._signin(request, "", 200, request.query_params.get("next"))

    def _signin(self, request: Request, error: str, status: int, after: str | None) -> Response:
        nonce = self.sessions.nonce()
        response = self.render(
            request,
            "signin.html",
            status,
            error=error,
            signin_csrf=self.sessions.csrf_token("signin:" + nonce),
            next=_next(after),
        )
        _cookie(response, request, PRE_COOKIE, nonce, max_age=3600, path="/ui/signin")
        return response

    async def signin(self, request: Request) -> Response:
        """Check a key and open a session; the secret is never stored."""
        nonce = request.cookies.get(PRE_COOKIE, "")
        try:
            if not nonce:  # no pre-session cookie: the form was not loaded by this browser
                raise HTTPException(403)
            fields = await self.form(request, "signin:" + nonce)
        except HTTPException:
            expired = "The sign-in form expired. Please try again."
            return self._signin(request, expired, 403, None)
        after = fields.get("next")
        secret = fields.get("key", "").strip()
        principal = await run_in_threadpool(self.charter.authenticate, secret) if secret else None
        if principal is None:
            return self._signin(request, "That key is unknown or has been revoked.", 401, after)
        if principal.role not in _ROLES:
            return self._signin(
                request,
                f"A {principal.role} key cannot sign in here: use a reviewer or admin key.",
                403,
                after,
            )
        cookie, _ = self.sessions.issue(principal.key_id)
        response = RedirectResponse(_next(fields.get("next")), 303)
        _cookie(response, request, COOKIE, cookie, max_age=LIFETIME, path="/ui")
        response.delete_cookie(PRE_COOKIE, path="/ui/signin", httponly=True, samesite="strict")
        return response

    async def signout(self, request: Request) -> Response:
        """End the session here and drop the cookie."""
        session, _ = await self.reviewer(request)
        await self.form(request, session.id)
        self.sessions.end(session)
        response = RedirectResponse("/ui/signin", 303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    # -- the inbox ---------------------------------------------------------------------

    async def inbox(self, request: Request) -> Response:
        """Pending approvals by deadline and risk; a fragment when htmx refreshes it."""
        session, reviewer = await self.reviewer(request)
        query = request.query_params
        group = query.get("group", "mine" if reviewer.groups else "all")[:64]
        agent = query.get("agent", "").strip()[:MAX_ID]
        action = query.get("action", "").strip()[:MAX_ID]
        items = await run_in_threadpool(self._pending, reviewer, group, agent, action)
        context: dict[str, Any] = {
            "session": session,
            "reviewer": reviewer,
            "items": items,
            "group": group,
            "agent": agent,
            "action": action,
            "query": urlencode({"group": group, "agent": agent, "action": action}),
            "updated": self.clock(),
        }
        fragment = request.headers.get("hx-request") and not request.headers.get(
            "hx-history-restore-request"
        )
        if fragment:
            return self.render(request, "_queue.html", 200, **context)
        groups = sorted({g for r in self.charter.bundle.routes.values() for g in r.groups})
        return self.render(
            request,
            "inbox.html",
            200,
            groups=groups,
            agents=[a.id for a in self.charter.agents()],
            actions=sorted({a for actions in self.charter.bundle.roles.values() for a in actions}),
            done=_DONE.get(query.get("done", "")),
            done_id=query.get("id", "")[:64],
            halts=[h.to_json() for h in self.charter.halts],
            breakers=[c.to_json() for c in self.charter.circuits() if c.status != "closed"],
            **context,
        )

    async def halt(self, request: Request) -> Response:
        """Halt everything or one agent from the inbox or a card, once confirmed."""
        session, reviewer = await self.reviewer(request)
        fields = await self.form(request, session.id)
        scope = fields.get("scope", "")
        target = fields.get("target", "").strip() or None
        reason = fields.get("reason", "").strip()[:_NOTE_MAX]
        if scope not in ("all", "agent") or (scope == "agent") != (target is not None):
            raise HTTPException(422, "halt everything, or name the agent to halt")
        if not reason:
            raise HTTPException(422, "say why: the reason is recorded and agents are told it")
        if fields.get("confirm") != "yes":
            raise HTTPException(422, "tick the box to confirm the halt")
        if reviewer.role not in allowed_roles(self.charter, "create_halt"):
            raise HTTPException(403, "this key may not halt agents")
        await run_in_threadpool(
            lambda: self.charter.halt(scope, target, reason=reason, by=f"key:{reviewer.key_id}")
        )
        return _done(fields.get("next"), "halted")

    async def resume(self, request: Request) -> Response:
        """Lift a halt in force, once confirmed, for the roles the live bundle lets."""
        session, reviewer = await self.reviewer(request)
        fields = await self.form(request, session.id)
        if reviewer.role not in allowed_roles(self.charter, "delete_halt"):
            raise HTTPException(403, "this key may not lift halts")
        scope = fields.get("scope", "")
        target = fields.get("target", "").strip() or None
        if scope not in ("all", "agent", "action", "role") or (scope == "all") != (target is None):
            raise HTTPException(422, "resume everything, or name what to resume")
        if fields.get("confirm") != "yes":
            raise HTTPException(422, "tick the box to confirm: the agents may act again")
        if not any(h.scope == scope and h.target == target for h in self.charter.halts):
            shown = "everything" if target is None else f"{scope} `{target}`"
            raise HTTPException(404, f"no halt of {shown} is in force")
        await run_in_threadpool(
            lambda: self.charter.resume(scope, target, by=f"key:{reviewer.key_id}")
        )
        return _done(fields.get("next"), "resumed")

    def _pending(
        self, reviewer: Principal, group: str, agent: str, action: str
    ) -> list[dict[str, Any]]:
        groups: list[str | None]
        if group == "mine":
            groups = list(reviewer.groups) or [None]
        elif group == "all":
            groups = [None]
        else:
            groups = [group]
        seen: dict[str, dict[str, Any]] = {}
        for one in groups:
            for view in self.charter.approvals(
                group=one, agent=agent or None, action=action or None, limit=200
            ):
                seen.setdefault(view.id, view.to_json())
        # The store orders each group's list; merged lists are ordered again the same way.
        items = sorted(seen.values(), key=lambda a: (str(a["deadline"]), -int(a["risk"])))
        for item in items:
            item["mine"] = can_act(reviewer, item)
            item["flags"] = [
                f.message for f in _flags(item.get("args", {}), item.get("context", {}))
            ]
        return items

    # -- the card ----------------------------------------------------------------------

    async def card(self, request: Request) -> Response:
        """One approval with everything needed to decide it, and the forms to do so."""
        session, reviewer = await self.reviewer(request)
        return await self._card(request, session, reviewer)

    async def _card(
        self,
        request: Request,
        session: Session,
        reviewer: Principal,
        *,
        status: int = 200,
        error: str = "",
        edited: str | None = None,
        edit_errors: tuple[str, ...] = (),
    ) -> Response:
        approval_id = request.path_params["approval_id"]
        card = await run_in_threadpool(load_card, self.charter, approval_id)
        if card is None:
            raise HTTPException(404, f"there is no approval `{approval_id}`")
        approval = card.approval
        fragment = request.headers.get("hx-request") and request.query_params.get("part")
        return self.render(
            request,
            "_card_state.html" if fragment else "card.html",
            status,
            session=session,
            reviewer=reviewer,
            card=card,
            a=approval,
            can_act=can_act(reviewer, approval) and approval["state"] == "pending",
            in_group=can_act(reviewer, approval),
            error=error,
            edited=edited if edited is not None else _pretty(approval.get("args", {})),
            edit_errors=edit_errors,
            seen_state=request.query_params.get("seen", approval["state"]),
        )

    async def decide(self, request: Request) -> Response:
        """Approve, deny or modify, then back to the inbox (or the card, with the error)."""
        session, reviewer = await self.reviewer(request)
        fields = await self.form(request, session.id)
        approval_id = request.path_params["approval_id"]
        verb = request.path_params["verb"]
        note = fields.get("note", "").strip()[:_NOTE_MAX]
        edited: str | None = None
        try:
            if verb == "approve":
                view = await run_in_threadpool(
                    lambda: self.charter.approve(approval_id, reviewer, note=note)
                )
            elif verb == "deny":
                reason = fields.get("reason", "").strip()[:_NOTE_MAX]
                if not reason:
                    raise RequestInvalid("reason", "say why: the agent's owner reads the reason")
                view = await run_in_threadpool(
                    lambda: self.charter.deny(approval_id, reviewer, reason=reason)
                )
            elif verb == "modify":
                edited = fields.get("args", "")
                checked = await self._check(approval_id, edited)
                if not checked.ok or checked.args is None:
                    return await self._card(
                        request,
                        session,
                        reviewer,
                        status=422,
                        error="The modified arguments need fixing first.",
                        edited=edited,
                        edit_errors=checked.errors,
                    )
                args = checked.args
                view = await run_in_threadpool(
                    lambda: self.charter.modify(approval_id, reviewer, args, note=note)
                )
            elif verb in ("batch-approve", "batch-deny"):
                approve = verb == "batch-approve"
                reason = fields.get("reason", "").strip()[:_NOTE_MAX]
                if not approve and not reason:
                    raise RequestInvalid("reason", "say why: the agent's owner reads the reason")

                def batch() -> Any:
                    # The batch is what the reviewer saw: this request and its similar ones,
                    # all still pending, of one shape (the gateway refuses anything else).
                    ids = [v.id for v in self.charter.similar_approvals(approval_id)]
                    return self.charter.decide_batch(
                        ids, reviewer, approve=approve, reason=reason if not approve else note
                    )

                await run_in_threadpool(batch)
                done = "batch-approved" if approve else "batch-denied"
                return RedirectResponse(f"/ui/?{urlencode({'done': done})}", 303)
            else:
                raise HTTPException(404)
        except (Forbidden, Conflict, RequestInvalid) as exc:
            status = (
                403 if isinstance(exc, Forbidden) else 409 if isinstance(exc, Conflict) else 422
            )
            return await self._card(
                request, session, reviewer, status=status, error=exc.message, edited=edited
            )
        except NotFound as exc:
            raise HTTPException(404, exc.message) from None
        done = {"approve": "approved", "deny": "denied", "modify": "modified"}[verb]
        if verb == "approve" and view.state == "pending":
            done = "voted"
        return RedirectResponse(f"/ui/?{urlencode({'done': done, 'id': approval_id})}", 303)

    async def _check(self, approval_id: str, text: str) -> Any:
        def check() -> Any:
            view = self.charter.get_approval(approval_id)
            if view is None:
                raise HTTPException(404, f"there is no approval `{approval_id}`")
            return check_args(self.charter, view.to_json(), text)

        return await run_in_threadpool(check)

    async def validate(self, request: Request) -> Response:
        """The modify editor's live check: every contract violation, by field."""
        session, _ = await self.reviewer(request)
        fields = await self.form(request, session.id)
        checked = await self._check(request.path_params["approval_id"], fields.get("args", ""))
        return self.render(request, "_checked.html", checked=checked)

    # -- the fleet ---------------------------------------------------------------------

    async def fleet(self, request: Request) -> Response:
        """Every agent at a glance, problems first; alerts and proposals above."""
        session, reviewer = await self.reviewer(request)
        page = await run_in_threadpool(fleet_page, self.charter)
        return self.render(
            request,
            "fleet.html",
            nav="fleet",
            session=session,
            reviewer=reviewer,
            page=page,
            runbooks=self.charter.bundle.runbooks,
            done=_DONE.get(request.query_params.get("done", "")),
            **self._may(reviewer),
        )

    async def agent(self, request: Request) -> Response:
        """One agent: its standing, its figures over time, and what may be done about it."""
        session, reviewer = await self.reviewer(request)
        agent_id = request.path_params["agent_id"]
        hours = hours_of(request.query_params.get("hours"))
        page = await run_in_threadpool(agent_page, self.charter, agent_id, hours)
        if page is None:
            raise HTTPException(404, f"there is no agent `{agent_id}`")
        return self.render(
            request,
            "agent.html",
            nav="fleet",
            session=session,
            reviewer=reviewer,
            page=page,
            row=page.row,
            hours_choices=HOURS,
            levels=self.charter.bundle.levels,
            runbooks=self.charter.bundle.runbooks,
            here=f"/ui/agents/{quote(agent_id, safe='')}",
            done=_DONE.get(request.query_params.get("done", "")),
            **self._may(reviewer),
        )

    def _may(self, reviewer: Principal) -> dict[str, bool]:
        """What the live bundle lets this key do from the fleet pages."""
        charter = self.charter
        return {
            "may_halt": reviewer.role in allowed_roles(charter, "create_halt"),
            "may_resume": reviewer.role in allowed_roles(charter, "delete_halt"),
            "may_accept": reviewer.role in allowed_roles(charter, "accept_proposal"),
            "may_decline": reviewer.role in allowed_roles(charter, "decline_proposal"),
        }

    async def proposal(self, request: Request) -> Response:
        """Accept or decline the controller's proposal to give an agent its level back."""
        session, reviewer = await self.reviewer(request)
        fields = await self.form(request, session.id)
        agent_id = fields.get("agent", "").strip()[:MAX_ID]
        verb = request.path_params["verb"]
        if verb not in ("accept", "decline"):
            raise HTTPException(404)
        if reviewer.role not in allowed_roles(self.charter, f"{verb}_proposal"):
            raise HTTPException(403, f"this key may not {verb} autonomy proposals")
        by = f"key:{reviewer.key_id}"
        monitors = self.charter.monitors
        try:
            if verb == "accept":
                await run_in_threadpool(lambda: monitors.accept(agent_id, by=by))
            else:
                reason = fields.get("reason", "").strip()[:_NOTE_MAX]
                if not reason:
                    raise HTTPException(422, "say why the agent keeps its level: it is recorded")
                await run_in_threadpool(lambda: monitors.decline(agent_id, by=by, reason=reason))
        except NotFound as exc:
            raise HTTPException(404, exc.message) from None
        return _done(fields.get("next"), "accepted" if verb == "accept" else "declined")

    async def runbook(self, request: Request) -> Response:
        """One of the live bundle's runbooks, rendered from its Markdown."""
        session, reviewer = await self.reviewer(request)
        path = request.path_params["path"]
        text = self.charter.bundle.runbooks.get(path)
        if text is None:
            raise HTTPException(404, f"the live policy has no runbook `{path}`")
        alerts = [a for a in self.charter.monitors.alerts() if a.get("runbook") == path]
        return self.render(
            request,
            "runbook.html",
            nav="fleet",
            session=session,
            reviewer=reviewer,
            path=path,
            title=runbook_title(path, text),
            body=render_runbook(text),
            alerts=alerts,
        )

    # -- the explorer ------------------------------------------------------------------

    async def explorer(self, request: Request) -> Response:
        """Search decisions; each with its chain position and whether its entry verifies."""
        session, reviewer = await self.reviewer(request)
        filters = Filters.from_query(request.query_params)
        rows, next_before = await run_in_threadpool(search, self.charter, filters)
        return self.render(
            request,
            "explorer.html",
            nav="decisions",
            session=session,
            reviewer=reviewer,
            filters=filters,
            rows=rows,
            verdicts=VERDICTS,
            next_query=urlencode(filters.query(before=next_before)) if next_before else "",
            agents=[a.id for a in self.charter.agents()],
            actions=sorted({a for actions in self.charter.bundle.roles.values() for a in actions}),
        )

    async def decision(self, request: Request) -> Response:
        """One decision: its ledger entry, hashes, standing, and (if any) its approval."""
        session, reviewer = await self.reviewer(request)
        decision_id = request.path_params["decision_id"]

        def read() -> Any:
            view = self.charter.get_decision(decision_id)
            return None if view is None else row_of(self.charter, view)

        row = await run_in_threadpool(read)
        if row is None:
            raise HTTPException(404, f"there is no decision `{decision_id}`")
        return self.render(
            request,
            "decision.html",
            nav="decisions",
            session=session,
            reviewer=reviewer,
            row=row,
            d=row.decision,
            request_json=row.view.record.request.to_json(),
        )

    async def verify(self, request: Request) -> Response:
        """Verify the whole ledger (reads every entry): a fragment for the explorer."""
        await self.reviewer(request)
        report = await run_in_threadpool(self.charter.verify)
        return self.render(request, "_verify.html", report=report)


def _flags(args: Any, context: Any) -> list[Finding]:
    return [*findings_in(args, "args"), *findings_in(context, "context")]


def _pretty(value: Any) -> str:
    return editable_json(value)


def _done(after: str | None, done: str) -> Response:
    """Back to the page the form was on (a UI page only; the inbox by default), with news."""
    target = _next(after)
    target = target.split("?", 1)[0].split("#", 1)[0]
    return RedirectResponse(f"{target}?{urlencode({'done': done})}", 303)


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _next(value: str | None) -> str:
    """Where to go after signing in: a UI path on this site, never elsewhere."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


def _cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int, path: str
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        # Secure whenever the browser came over TLS; plain HTTP only on a loopback port.
        secure=request.url.scheme == "https",
    )


def create_ui(charter: Charter, *, clock: Callable[[], dt.datetime] = system_clock) -> ASGIApp:
    """The reviewer UI as an ASGI app, to mount at `/ui`.

    Args:
        charter: the open gateway; the UI never closes it.
        clock: the wall clock deadlines are shown against.
    """
    ui = ReviewerUI(charter, clock=clock)

    def page(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _SignIn:
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"HX-Redirect": "/ui/signin"})
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/signin?{urlencode({'next': target})}", 303)
            except CharterError as exc:
                _log.warning("reviewer UI: %s", exc.message)
                raise HTTPException(503, "Charter cannot answer right now; try again") from None

        return endpoint

    async def error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "an internal error"
        if status == 500:
            _log.error("reviewer UI error", exc_info=exc)
        return ui.render(request, "error.html", status, code=status, detail=detail)

    routes = [
        Route("/", page(ui.inbox)),
        Route("/signin", ui.signin_page, methods=["GET"]),
        Route("/signin", page(ui.signin), methods=["POST"]),
        Route("/signout", page(ui.signout), methods=["POST"]),
        Route("/halts", page(ui.halt), methods=["POST"]),
        Route("/resume", page(ui.resume), methods=["POST"]),
        Route("/fleet", page(ui.fleet)),
        Route("/agents/{agent_id:path}", page(ui.agent)),
        Route("/proposals/{verb}", page(ui.proposal), methods=["POST"]),
        Route("/runbooks/{path:path}", page(ui.runbook)),
        Route("/approvals/{approval_id}", page(ui.card)),
        Route("/approvals/{approval_id}/validate", page(ui.validate), methods=["POST"]),
        Route("/approvals/{approval_id}/{verb}", page(ui.decide), methods=["POST"]),
        Route("/decisions", page(ui.explorer)),
        Route("/decisions/{decision_id}", page(ui.decision)),
        Route("/verify", page(ui.verify)),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: error, Exception: error})
    return _Headers(app)
