"""The monitors API: rolling figures, series for charts, alerts firing, autonomy proposals.

- `GET /v1/monitors` — the figures of each group (model, action, agent or fleet) over a
  window: rates, latencies, calibration, drift, data quality; every rate with its sample.
- `GET /v1/monitors/series` — one agent's figures over time, for charts and sparklines.
- `GET /v1/alerts` — the alerts firing now, each with its runbook.
- `GET /v1/autonomy/proposals`, `POST …/{agent}/accept`, `POST …/{agent}/decline` — the
  controller's proposals to give demoted agents their level back, and a person's answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
from charter.service import Charter

__all__ = ["MONITOR_BODIES", "monitor_routes"]

_DESCRIPTIONS = {
    400: "The body is not strict JSON.",
    401: "No API key, or an unknown or revoked one.",
    403: "A key whose role may not do this.",
    404: "No proposal for this agent is open.",
    413: "The body is larger than the limit.",
    422: "A parameter or the body is wrong (the error names it).",
    503: "The ledger cannot be read or written now.",
}

Level = Literal["model", "action", "agent", "fleet"]


class FigureList(BaseModel):
    """The figures of each group, keyed as `charter.monitors.FIGURE_FIELDS` documents."""

    figures: list[dict[str, Any]]


class SeriesView(BaseModel):
    """One agent's figures over time, oldest point first."""

    agent: str
    action: str | None
    step_seconds: int
    points: list[dict[str, Any]]


class AlertList(BaseModel):
    """The alerts firing now."""

    alerts: list[dict[str, Any]]


class ProposalList(BaseModel):
    """The controller's open proposals."""

    proposals: list[dict[str, Any]]


class DeclineBody(BaseModel):
    """Why the proposal is declined (recorded)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


#: The bodies the monitor routes read, for the document's components.
MONITOR_BODIES: tuple[type[BaseModel], ...] = (DeclineBody,)


def monitor_routes(charter: Charter, *, max_body: int = DEFAULT_MAX_BODY) -> APIRouter:
    """The monitors routes over `charter`."""
    router = APIRouter(tags=["monitors"])

    def auth(request: Request) -> str | None:
        return request.headers.get("authorization")

    def answer(operation: str, header: str | None, work: Any) -> dict[str, Any]:
        principal = authorize(charter, header, operation)
        try:
            result: dict[str, Any] = work(principal)
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return result

    @router.get(
        "/v1/monitors",
        operation_id="list_monitors",
        summary="The monitors' figures of each agent, action, model or the fleet",
        **documented(FigureList, 422, descriptions=_DESCRIPTIONS),
    )
    async def list_monitors(
        request: Request,
        agent: str | None = Query(None, min_length=1, max_length=MAX_ID),
        action: str | None = Query(None, min_length=1, max_length=MAX_ID),
        level: Annotated[Level, Query(description="How the figures are grouped.")] = "action",
        window: int | None = Query(None, ge=60, le=31 * 86400, description="Seconds."),
    ) -> Response:
        def work(_: Any) -> dict[str, Any]:
            found = charter.monitors.figures(agent=agent, action=action, level=level, window=window)
            return {"figures": [f.to_json() for f in found]}

        return JSONResponse(await run_in_threadpool(answer, "list_monitors", auth(request), work))

    @router.get(
        "/v1/monitors/series",
        operation_id="monitor_series",
        summary="One agent's figures over time, for charts",
        **documented(SeriesView, 422, descriptions=_DESCRIPTIONS),
    )
    async def monitor_series(
        request: Request,
        agent: str = Query(min_length=1, max_length=MAX_ID),
        action: str | None = Query(None, min_length=1, max_length=MAX_ID),
        points: int = Query(60, ge=2, le=500),
        step: int | None = Query(None, ge=60, le=86400, description="Seconds per point."),
    ) -> Response:
        def work(_: Any) -> dict[str, Any]:
            series = charter.monitors.series(agent, action, points=points, step_seconds=step)
            return series.to_json()

        return JSONResponse(await run_in_threadpool(answer, "monitor_series", auth(request), work))

    @router.get(
        "/v1/alerts",
        operation_id="list_alerts",
        summary="The alerts firing now, each with its runbook",
        **documented(AlertList, descriptions=_DESCRIPTIONS),
    )
    async def list_alerts(request: Request) -> Response:
        def work(_: Any) -> dict[str, Any]:
            return {"alerts": [dict(a) for a in charter.monitors.alerts()]}

        return JSONResponse(await run_in_threadpool(answer, "list_alerts", auth(request), work))

    @router.get(
        "/v1/autonomy/proposals",
        operation_id="list_proposals",
        summary="The autonomy controller's open proposals",
        **documented(ProposalList, descriptions=_DESCRIPTIONS),
    )
    async def list_proposals(request: Request) -> Response:
        def work(_: Any) -> dict[str, Any]:
            return {"proposals": [dict(p) for p in charter.monitors.proposals()]}

        return JSONResponse(await run_in_threadpool(answer, "list_proposals", auth(request), work))

    @router.post(
        "/v1/autonomy/proposals/{agent}/accept",
        operation_id="accept_proposal",
        summary="Give a demoted agent the level the controller proposes (recorded)",
        **documented(ProposalList, 404, descriptions=_DESCRIPTIONS),
    )
    async def accept_proposal(
        request: Request, agent: Annotated[str, Path(min_length=1, max_length=MAX_ID)]
    ) -> Response:
        def work(principal: Any) -> dict[str, Any]:
            charter.monitors.accept(agent, by=f"key:{principal.key_id}")
            return {"proposals": [dict(p) for p in charter.monitors.proposals()]}

        return JSONResponse(await run_in_threadpool(answer, "accept_proposal", auth(request), work))

    @router.post(
        "/v1/autonomy/proposals/{agent}/decline",
        operation_id="decline_proposal",
        summary="Keep a demoted agent where it is; the controller may propose again later",
        **documented(ProposalList, 400, 404, 413, descriptions=_DESCRIPTIONS, body=DeclineBody),
    )
    async def decline_proposal(
        request: Request, agent: Annotated[str, Path(min_length=1, max_length=MAX_ID)]
    ) -> Response:
        body = await read_body(request, max_body)

        def work(principal: Any) -> dict[str, Any]:
            try:
                asked = DeclineBody.model_validate(parse_json(body))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or None
                message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
                raise ApiError("request_invalid", f"`{where}`: {message.lower()}", where) from None
            charter.monitors.decline(agent, by=f"key:{principal.key_id}", reason=asked.reason)
            return {"proposals": [dict(p) for p in charter.monitors.proposals()]}

        return JSONResponse(
            await run_in_threadpool(answer, "decline_proposal", auth(request), work)
        )

    return router
