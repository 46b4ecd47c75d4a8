"""The approvals API: list, read, approve, deny, modify, claim, and batches of them.

Reviewers act through these routes (and the UI, which calls the same gateway methods).
Only reviewer and admin keys may act, and only on approvals routed to one of their
groups; an agent key never can. Every step is recorded in the ledger by the gateway.

Traced, each step is a span in its decision's trace, a child of the decision's span:
the decision's recorded trace id and its span's id (`span_id_for`) are all it takes, so a
step taken days later, on another replica, still joins the trace. The span links to the
reviewer's own request span (FastAPI's), which is in the reviewer's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from charter.errors import CharterError
from charter.model import MAX_ID
from charter.server._auth import authorize
from charter.server._body import DEFAULT_MAX_BODY, parse_json, read_body
from charter.server._errors import ApiError, from_charter_error
from charter.server._handlers import recorded_trace_id
from charter.server._openapi import documented
from charter.service import ApprovalView, Charter, Principal
from charter.telemetry import _names as names
from charter.telemetry._context import TraceParent, is_trace_id, span_id_for
from charter.telemetry._logs import bind
from charter.telemetry._settings import Telemetry

if TYPE_CHECKING:  # imported only by a traced server, through the `Tracing` it is given
    from charter.telemetry._tracing import Tracing

__all__ = ["BODY_MODELS", "RECHECK", "approval_routes", "long_poll"]

#: Seconds between reads of a long-polled decision that no callback has settled yet.
RECHECK = 1.0

#: A query parameter without NUL characters.
_NO_NUL = r"^[^\x00]*$"


_DESCRIPTIONS = {
    400: "The body is not strict JSON.",
    401: "No API key, or an unknown or revoked one.",
    403: "Not a reviewer of this route's groups, or a key that cannot review.",
    404: "No such approval.",
    409: "The approval is settled, or this person already approved it.",
    413: "The body is larger than the limit.",
    422: "The body or a parameter is wrong (the error names the field).",
    503: "The ledger cannot be written or read now.",
}


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ApprovalAnswer(BaseModel):
    """An approval with its decision, the agent's context and its runbook."""

    model_config = ConfigDict(extra="allow")
    id: str
    decision_id: str
    agent: str
    action: str
    kind: Literal["approval", "escalation"]
    state: Literal["pending", "approved", "denied", "expired"]
    route: dict[str, Any]
    required: int
    votes: list[dict[str, Any]]
    deadline: str
    risk: int
    args: dict[str, Any]
    args_hash: str
    halted: str | None = Field(
        None,
        description="The reason of the halt that freezes this pending approval: it cannot "
        "be approved (it may be denied) until the halt is lifted.",
    )


class ApprovalList(BaseModel):
    """A page of approvals and how many match in all."""

    approvals: list[ApprovalAnswer]
    total: int


class ApproveBody(_Closed):
    """An approval of the current arguments."""

    note: str = Field("", max_length=2000, description="Why, for the record.")


class DenyBody(_Closed):
    """A refusal; the reason reaches the agent."""

    reason: str = Field(min_length=1, max_length=2000)


class ModifyBody(_Closed):
    """New arguments, decided again under the live policy."""

    args: dict[str, Any]
    note: str = Field("", max_length=2000)


class BatchBody(_Closed):
    """Approve or deny several approvals of one shape at once: all or none."""

    ids: list[str] = Field(min_length=1, max_length=500)
    decision: Literal["approve", "deny"]
    reason: str = Field("", max_length=2000)


#: The bodies the approval routes read, for the document's components.
BODY_MODELS: tuple[type[BaseModel], ...] = (ApproveBody, DenyBody, ModifyBody, BatchBody)


def _parsed(model: type[_Closed], body: bytes) -> Any:
    try:
        return model.model_validate(parse_json(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError("request_invalid", first["msg"].lower(), where) from None


class _Desk:
    """The blocking work of each route: authorise, call the gateway, shape the answer.

    Args:
        charter: the gateway.
        telemetry: what to observe; None for nothing.
    """

    def __init__(self, charter: Charter, telemetry: Telemetry | None = None) -> None:
        self.charter = charter
        self._tracing: Tracing | None = None if telemetry is None else telemetry.tracing
        self._observed = telemetry is not None and telemetry.observing

    def _who(self, auth: str | None, operation: str) -> Principal:
        return authorize(self.charter, auth, operation)

    def _act(self, auth: str | None, operation: str, approval_id: str, call: Any) -> Any:
        principal = self._who(auth, operation)
        try:
            return call(principal)
        except CharterError as exc:
            if exc.code in ("not_in_group", "role_cannot_review"):
                self.charter.record_access_denied(
                    principal, exc.code, operation=operation, approval_id=approval_id
                )
            raise from_charter_error(exc) from None

    def list(
        self,
        auth: str | None,
        state: str | None,
        group: str | None,
        agent: str | None,
        action: str | None,
        limit: int,
        offset: int,
    ) -> dict[str, Any]:
        self._who(auth, "list_approvals")
        found = self.charter.approvals(
            state=state, group=group, agent=agent, action=action, limit=limit, offset=offset
        )
        total = self.charter.count_approvals(state=state, group=group, agent=agent, action=action)
        return {"approvals": [v.to_json() for v in found], "total": total}

    def get(self, auth: str | None, approval_id: str) -> dict[str, Any]:
        self._who(auth, "get_approval")
        view = self.charter.get_approval(approval_id)
        if view is None:
            raise ApiError("not_found", f"no approval `{approval_id}`", "approval_id")
        return view.to_json()

    def similar(self, auth: str | None, approval_id: str) -> dict[str, Any]:
        self._who(auth, "similar_approvals")
        try:
            found = self.charter.similar_approvals(approval_id)
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return {"approvals": [v.to_json() for v in found], "total": len(found)}

    def _decision_of(self, approval_id: str) -> tuple[str | None, str | None]:
        """The id of the approval's decision and the trace id the decision recorded."""
        with contextlib.suppress(CharterError):
            approval = self.charter.get_approval(approval_id)
            decision_id = None if approval is None else approval.approval.get("decision_id")
            if decision_id is not None:
                view = self.charter.get_decision(str(decision_id))
                trace_id = None if view is None else recorded_trace_id(self.charter, view)
                return str(decision_id), trace_id
        return None, None

    def _traced(
        self,
        name: str,
        attributes: dict[str, Any],
        work: Callable[[], dict[str, Any]],
        *,
        parent: TraceParent | None,
        links: Callable[[dict[str, Any]], Sequence[TraceParent]] | None = None,
    ) -> dict[str, Any]:
        """`work()` in a span named `name`, which names the error code if it fails.

        With a `parent` the span is its child and links to the request's own span; without
        one it is a child of the request's own span. `links` names, from the answer, the
        spans of other traces the step was about.
        """
        tracing = self._tracing
        assert tracing is not None
        span = tracing.start(
            name,
            parent=parent,
            within_current=parent is None,
            attributes=attributes,
            links=tracing.current_links() if parent is not None else (),
        )
        ids = tracing.ids(span)
        if ids is not None:
            bind(trace_id=ids.trace_id, span_id=ids.span_id)
        try:
            answer = work()
            span.set_attribute(names.HTTP_STATUS, 200)
            if "state" in answer:
                span.set_attribute(names.APPROVAL_STATE, str(answer["state"]))
            for other in links(answer) if links is not None else ():
                span.add_link(tracing.link_to(other).context)
        except ApiError as exc:
            span.set_attribute(names.HTTP_STATUS, exc.status)
            tracing.failed(span, exc.code, exc.status)
            raise
        except Exception as exc:
            tracing.failed(span, type(exc).__name__)
            raise
        finally:
            span.end()
        return answer

    def step(self, auth: str | None, approval_id: str, verb: str, body: bytes) -> dict[str, Any]:
        """Take one step (`approve`, `deny`, `modify`, `claim`) on an approval."""
        if not self._observed:
            return self._step(auth, approval_id, verb, body)
        self._who(auth, f"{verb}_approval")  # nothing is looked up for a stranger
        decision_id, trace_id = self._decision_of(approval_id)
        bind(approval_id=approval_id, decision_id=decision_id, trace_id=trace_id)
        if self._tracing is None:
            return self._step(auth, approval_id, verb, body)
        parent = None
        if decision_id is not None and trace_id is not None and is_trace_id(trace_id):
            parent = TraceParent(trace_id, span_id_for(decision_id))
        attributes: dict[str, Any] = {
            names.APPROVAL_ID: approval_id,
            names.APPROVAL_STEP: verb,
            names.HTTP_METHOD: "POST",
            names.HTTP_ROUTE: f"/v1/approvals/{{approval_id}}/{verb}",
        }
        if decision_id is not None:
            attributes[names.DECISION_ID] = decision_id
        return self._traced(
            names.SPAN_APPROVAL.format(step=verb),
            attributes,
            lambda: self._step(auth, approval_id, verb, body),
            parent=parent,
        )

    def _step(self, auth: str | None, approval_id: str, verb: str, body: bytes) -> dict[str, Any]:
        charter = self.charter

        def run(principal: Principal) -> ApprovalView:
            if verb == "approve":
                asked = _parsed(ApproveBody, body) if body.strip() else ApproveBody(note="")
                return charter.approve(approval_id, principal, note=asked.note)
            if verb == "deny":
                denied = _parsed(DenyBody, body)
                return charter.deny(approval_id, principal, reason=denied.reason)
            if verb == "modify":
                modified = _parsed(ModifyBody, body)
                return charter.modify(approval_id, principal, modified.args, note=modified.note)
            return charter.claim(approval_id, principal)

        view: ApprovalView = self._act(auth, f"{verb}_approval", approval_id, run)
        return view.to_json()

    def batch(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """Approve or deny several approvals at once; traced, linked to each decision."""
        if self._tracing is None:
            return self._batch(auth, body)
        attributes = {names.HTTP_METHOD: "POST", names.HTTP_ROUTE: "/v1/approvals/batch"}
        return self._traced(
            names.SPAN_APPROVAL_BATCH,
            attributes,
            lambda: self._batch(auth, body),
            parent=None,
            links=self._decisions_of,
        )

    def _decisions_of(self, answer: dict[str, Any]) -> Sequence[TraceParent]:
        """The spans of the decisions a batch settled (each is in a trace of its own)."""
        found: list[TraceParent] = []
        for view in answer["approvals"][:_MAX_LINKS]:
            decision_id = view.get("decision_id")
            decided = self.charter.get_decision(str(decision_id)) if decision_id else None
            trace_id = None if decided is None else recorded_trace_id(self.charter, decided)
            if decision_id and trace_id is not None and is_trace_id(trace_id):
                found.append(TraceParent(trace_id, span_id_for(str(decision_id))))
        return found

    def _batch(self, auth: str | None, body: bytes) -> dict[str, Any]:
        asked = None

        def run(principal: Principal) -> list[ApprovalView]:
            nonlocal asked
            asked = _parsed(BatchBody, body)
            return self.charter.decide_batch(
                asked.ids, principal, approve=asked.decision == "approve", reason=asked.reason
            )

        views: list[ApprovalView] = self._act(auth, "batch_approvals", "batch", run)
        return {"approvals": [v.to_json() for v in views], "total": len(views)}


#: The most decisions one batch's span links to (OpenTelemetry's default span limit).
_MAX_LINKS = 128


def approval_routes(
    charter: Charter, *, max_body: int = DEFAULT_MAX_BODY, telemetry: Telemetry | None = None
) -> APIRouter:
    """The `/v1/approvals` routes over `charter`, observed as `telemetry` says."""
    desk = _Desk(charter, telemetry)
    router = APIRouter(tags=["approvals"])

    def auth(request: Request) -> str | None:
        return request.headers.get("authorization")

    @router.get(
        "/v1/approvals",
        operation_id="list_approvals",
        summary="Approvals by deadline, then highest risk",
        **documented(ApprovalList, 422, descriptions=_DESCRIPTIONS),
    )
    async def list_approvals(
        request: Request,
        state: Literal["pending", "approved", "denied", "expired", "all"] = Query("pending"),
        # no NUL: no database's text can hold one, so a filter with it matches nothing
        group: str | None = Query(None, min_length=1, max_length=64, pattern=_NO_NUL),
        agent: str | None = Query(None, min_length=1, max_length=MAX_ID, pattern=_NO_NUL),
        action: str | None = Query(None, min_length=1, max_length=MAX_ID, pattern=_NO_NUL),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=1_000_000),
    ) -> Response:
        answer = await run_in_threadpool(
            desk.list,
            auth(request),
            None if state == "all" else state,
            group,
            agent,
            action,
            limit,
            offset,
        )
        return JSONResponse(answer)

    @router.post(
        "/v1/approvals/batch",
        operation_id="batch_approvals",
        summary="Approve or deny similar approvals at once (all or none)",
        **documented(
            ApprovalList, 400, 404, 409, 413, 422, descriptions=_DESCRIPTIONS, body=BatchBody
        ),
    )
    async def batch_approvals(request: Request) -> Response:
        body = await read_body(request, max_body)
        return JSONResponse(await run_in_threadpool(desk.batch, auth(request), body))

    @router.get(
        "/v1/approvals/{approval_id}",
        operation_id="get_approval",
        summary="An approval with what a reviewer needs to decide it",
        **documented(ApprovalAnswer, 404, descriptions=_DESCRIPTIONS),
    )
    async def get_approval(
        request: Request, approval_id: str = Path(min_length=1, max_length=100)
    ) -> Response:
        return JSONResponse(await run_in_threadpool(desk.get, auth(request), approval_id))

    @router.get(
        "/v1/approvals/{approval_id}/similar",
        operation_id="similar_approvals",
        summary="Pending approvals of the same agent, action and argument shape",
        **documented(ApprovalList, 404, descriptions=_DESCRIPTIONS),
    )
    async def similar_approvals(
        request: Request, approval_id: str = Path(min_length=1, max_length=100)
    ) -> Response:
        return JSONResponse(await run_in_threadpool(desk.similar, auth(request), approval_id))

    docs: dict[str, tuple[str, type[BaseModel] | None]] = {
        "approve": ("Approve the current arguments (the quorum issues the grant)", ApproveBody),
        "deny": ("Deny, with a reason the agent receives", DenyBody),
        "modify": ("Change the arguments; decided again under the live policy", ModifyBody),
        "claim": ("Take the approval on, so others see someone is on it", None),
    }
    for verb, (summary, model) in docs.items():
        _add_step(router, desk, verb, summary, model, max_body, auth)
    return router


def _add_step(
    router: APIRouter,
    desk: _Desk,
    verb: str,
    summary: str,
    model: type[BaseModel] | None,
    max_body: int,
    auth: Any,
) -> None:
    async def step(
        request: Request, approval_id: str = Path(min_length=1, max_length=100)
    ) -> Response:
        body = await read_body(request, max_body)
        answer = await run_in_threadpool(desk.step, auth(request), approval_id, verb, body)
        return JSONResponse(answer)

    router.add_api_route(
        f"/v1/approvals/{{approval_id}}/{verb}",
        step,
        methods=["POST"],
        operation_id=f"{verb}_approval",
        summary=summary,
        **documented(
            ApprovalAnswer, 400, 404, 409, 413, 422, descriptions=_DESCRIPTIONS, body=model
        ),
    )


async def long_poll(
    charter: Charter, handlers: Any, auth: str | None, decision_id: str, wait: float
) -> dict[str, Any]:
    """Answer the decision once its approval settles, or as it stands after `wait` s.

    The gateway calls back (in its own thread) when the approval settles; the event loop
    is woken through `call_soon_threadsafe`, so a waiting agent costs no thread. An
    approval settled by another process on the same ledger calls back too, once this
    process's follower has read the step; the decision is also read again every
    `RECHECK` seconds, in case the follower is behind (its store away, say).
    """
    loop = asyncio.get_running_loop()
    settled = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(settled.set)

    cancel = charter.watch(decision_id, wake)
    try:
        # Read again after registering: it may have settled in between.
        answer = await run_in_threadpool(handlers.get_decision, auth, decision_id)
        deadline = loop.time() + wait
        while answer["state"] in ("pending", "escalated") and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), min(RECHECK, deadline - loop.time()))
            answer = await run_in_threadpool(handlers.get_decision, auth, decision_id)
    finally:
        cancel()
    return dict(answer)
