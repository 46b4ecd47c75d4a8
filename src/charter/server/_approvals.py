"""The approvals API: list, read, approve, deny, modify, claim, and batches of them.

Reviewers act through these routes (and the UI, which calls the same gateway methods).
Only reviewer and admin keys may act, and only on approvals routed to one of their
groups; an agent key never can. Every step is recorded in the ledger by the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from charter.errors import CharterError
from charter.model import MAX_ID
from charter.server._auth import authorize
from charter.server._body import DEFAULT_MAX_BODY, parse_json, read_body
from charter.server._errors import ApiError, from_charter_error
from charter.server._openapi import documented
from charter.service import ApprovalView, Charter, Principal

__all__ = ["BODY_MODELS", "RECHECK", "approval_routes", "long_poll"]

#: Seconds between reads of a long-polled decision that no callback has settled yet.
RECHECK = 1.0


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
    """The blocking work of each route: authorise, call the gateway, shape the answer."""

    def __init__(self, charter: Charter) -> None:
        self.charter = charter

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

    def step(self, auth: str | None, approval_id: str, verb: str, body: bytes) -> dict[str, Any]:
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
        asked = None

        def run(principal: Principal) -> list[ApprovalView]:
            nonlocal asked
            asked = _parsed(BatchBody, body)
            return self.charter.decide_batch(
                asked.ids, principal, approve=asked.decision == "approve", reason=asked.reason
            )

        views: list[ApprovalView] = self._act(auth, "batch_approvals", "batch", run)
        return {"approvals": [v.to_json() for v in views], "total": len(views)}


def approval_routes(charter: Charter, *, max_body: int = DEFAULT_MAX_BODY) -> APIRouter:
    """The `/v1/approvals` routes over `charter`."""
    desk = _Desk(charter)
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
        group: str | None = Query(None, min_length=1, max_length=64),
        agent: str | None = Query(None, min_length=1, max_length=MAX_ID),
        action: str | None = Query(None, min_length=1, max_length=MAX_ID),
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
