"""The breakers API: every circuit breaker's circuits, where each stands (`/v1/breakers`).

A breaker of the live bundle has a circuit per action it watches (and, with `per_agent`,
per agent). Closed circuits are listed with the live figures of their window; open and
half-open ones with the opening's figures, when trials start, and how many are left.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from charter.server._auth import authorize
from charter.server._openapi import documented
from charter.service import Charter

__all__ = ["breaker_routes"]

_DESCRIPTIONS = {
    401: "No API key, or an unknown or revoked one.",
    403: "A key whose role may not do this.",
    503: "The ledger cannot be read now.",
}


class CircuitView(BaseModel):
    """One circuit of a breaker."""

    breaker: str
    action: str
    agent: str | None = Field(description="The agent of a per-agent circuit; null if shared.")
    status: Literal["closed", "open", "half_open"]
    then: Literal["require_approval", "deny"]
    reason: str
    generation: int = Field(description="How many transitions the circuit has had.")
    since: str | None = Field(description="When it opened; null while closed.")
    until: str | None = Field(description="When its trials start; null while closed.")
    trials_left: int | None
    trials_succeeded: int | None = Field(description="Trials that succeeded; null if closed.")
    trials_failed: int | None = Field(description="Trials that failed; null while closed.")
    sample: int = Field(
        description="Outcomes in the window while closed; the sample that tripped it if not."
    )
    failures: int = Field(description="The failures among `sample`.")
    window_seconds: int
    min_sample: int
    failure_rate: float


class CircuitList(BaseModel):
    """Every circuit with figures, by breaker, action and agent."""

    breakers: list[CircuitView]


def breaker_routes(charter: Charter) -> APIRouter:
    """The `/v1/breakers` route over `charter`."""
    router = APIRouter(tags=["breakers"])

    def listed(auth: str | None) -> dict[str, Any]:
        authorize(charter, auth, "list_breakers")
        return {"breakers": [c.to_json() for c in charter.circuits()]}

    @router.get(
        "/v1/breakers",
        operation_id="list_breakers",
        summary="Every circuit breaker's circuits and where each stands",
        **documented(CircuitList, descriptions=_DESCRIPTIONS),
    )
    async def list_breakers(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(listed, request.headers.get("authorization")))

    return router
