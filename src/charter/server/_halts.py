"""The halts API: list the halts in force, halt, and resume (`/v1/halts`).

A halt stops every new decision it covers (everything, one agent, one action, or every
agent of one role) with a
`deny` naming it, on every process that shares the store, until it is lifted. Halting is
for reviewers and admins (whoever sees a runaway agent stops it); lifting a halt is for
admins only, since it lets agents act alone again. Each halt and resume is a ledger
event naming the key that asked and why.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from charter.errors import CharterError
from charter.model import MAX_ID
from charter.server._auth import authorize
from charter.server._body import DEFAULT_MAX_BODY, parse_json, read_body
from charter.server._errors import ApiError, from_charter_error
from charter.server._openapi import documented
from charter.service import Charter

__all__ = ["HALT_BODIES", "halt_routes"]

_DESCRIPTIONS = {
    400: "The body is not strict JSON.",
    401: "No API key, or an unknown or revoked one.",
    403: "A key whose role may not do this.",
    404: "No such halt is in force.",
    413: "The body is larger than the limit.",
    422: "The body or a parameter is wrong (the error names the field).",
    503: "The ledger cannot be written or read now.",
}

Scope = Literal["all", "agent", "action", "role"]


class HaltView(BaseModel):
    """A halt in force."""

    scope: Scope
    target: str | None = Field(description="The agent, action or role halted; null for `all`.")
    reason: str


class HaltList(BaseModel):
    """Every halt in force."""

    halts: list[HaltView]


class HaltBody(BaseModel):
    """A halt to put in force: `all`, or the `agent`, `action` or `role` named by `target`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    scope: Scope
    target: str | None = Field(None, min_length=1, max_length=MAX_ID)
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


#: The bodies the halt routes read, for the document's components.
HALT_BODIES: tuple[type[BaseModel], ...] = (HaltBody,)


def _covered(scope: str, target: str | None) -> None:
    """Refuse a scope and target that do not go together."""
    if scope == "all" and target is not None:
        raise ApiError("request_invalid", "a halt of `all` names no `target`", "target")
    if scope != "all" and target is None:
        raise ApiError("request_invalid", f"a halt of one `{scope}` names it in `target`", "target")


class _Halts:
    """The blocking work of each route: authorise, call the gateway, shape the answer."""

    def __init__(self, charter: Charter) -> None:
        self.charter = charter

    def list(self, auth: str | None) -> dict[str, Any]:
        authorize(self.charter, auth, "list_halts")
        return {"halts": [h.to_json() for h in self.charter.halts]}

    def halt(self, auth: str | None, body: bytes) -> dict[str, Any]:
        principal = authorize(self.charter, auth, "create_halt")
        try:
            asked = HaltBody.model_validate(parse_json(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise ApiError("request_invalid", f"`{where}`: {message.lower()}", where) from None
        _covered(asked.scope, asked.target)
        try:
            self.charter.halt(
                asked.scope, asked.target, reason=asked.reason, by=f"key:{principal.key_id}"
            )
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return self.list(auth)

    def resume(self, auth: str | None, scope: str, target: str | None) -> dict[str, Any]:
        principal = authorize(self.charter, auth, "delete_halt")
        _covered(scope, target)
        if not any(h.scope == scope and h.target == target for h in self.charter.halts):
            shown = "everything" if target is None else f"{scope} `{target}`"
            raise ApiError("not_found", f"no halt of {shown} is in force", "target")
        try:
            self.charter.resume(scope, target, by=f"key:{principal.key_id}")
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return self.list(auth)


def halt_routes(charter: Charter, *, max_body: int = DEFAULT_MAX_BODY) -> APIRouter:
    """The `/v1/halts` routes over `charter`."""
    halts = _Halts(charter)
    router = APIRouter(tags=["halts"])

    def auth(request: Request) -> str | None:
        return request.headers.get("authorization")

    @router.get(
        "/v1/halts",
        operation_id="list_halts",
        summary="The halts in force",
        **documented(HaltList, descriptions=_DESCRIPTIONS),
    )
    async def list_halts(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(halts.list, auth(request)))

    @router.post(
        "/v1/halts",
        operation_id="create_halt",
        summary="Halt everything, one agent, one action or one role (recorded in the ledger)",
        description="In force for new decisions at once here, and within a second on every "
        "process sharing the store. Answers every halt then in force.",
        **documented(
            HaltList,
            400,
            413,
            422,
            descriptions=_DESCRIPTIONS,
            body=HaltBody,
            more={201: {"model": HaltList, "description": "The halt is in force."}},
        ),
    )
    async def create_halt(request: Request) -> Response:
        body = await read_body(request, max_body)
        answer = await run_in_threadpool(halts.halt, auth(request), body)
        return JSONResponse(answer, status_code=201)

    @router.delete(
        "/v1/halts",
        operation_id="delete_halt",
        summary="Lift a halt (recorded in the ledger)",
        description="Answers every halt still in force.",
        **documented(HaltList, 404, 422, descriptions=_DESCRIPTIONS),
    )
    async def delete_halt(
        request: Request,
        scope: Annotated[Scope, Query(description="`all`, `agent`, `action` or `role`.")],
        target: str | None = Query(None, min_length=1, max_length=MAX_ID),
    ) -> Response:
        return JSONResponse(await run_in_threadpool(halts.resume, auth(request), scope, target))

    return router
