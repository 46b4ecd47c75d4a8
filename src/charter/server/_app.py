"""The ASGI application: routes, the OpenAPI document, and error answers.

FastAPI builds the OpenAPI document and serves the ordinary routes. `POST /v1/decisions`,
the hot path, is a bare ASGI endpoint that `CharterApp` serves ahead of FastAPI, and so
are `POST /v1/grants/redeem` and `POST /v1/outcomes`, whose answers each wait for a commit
(`_front`); documentation-only FastAPI routes with the same paths and methods describe them
fully in the document (FastAPI's own validation would cost about half the floor the issue
sets). Every route reads its body with the same strict reader. The front routes do their
work on the event loop and await the group commit; the others run their logic in a worker
thread, because the gateway blocks until the ledger entry is durable and the group-commit
writer batches many waiting threads into one transaction.

What the app observes (spans, log context, access lines: `charter.telemetry.Telemetry`)
is chosen once, here: an app built without it serves the bare endpoints and FastAPI, and
its request path does nothing else (`_observed` holds the observing one).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from charter.__about__ import __version__
from charter.errors import CharterError
from charter.model import MAX_ID
from charter.server._approvals import BODY_MODELS, approval_routes, long_poll
from charter.server._body import DEFAULT_MAX_BODY, read_body
from charter.server._breakers import breaker_routes
from charter.server._errors import ApiError, error_response, from_charter_error, from_outage
from charter.server._front import Decide, Endpoint, Outcome, Redeem
from charter.server._halts import HALT_BODIES, halt_routes
from charter.server._handlers import Handlers
from charter.server._metrics import CONTENT_TYPE_LATEST, Metrics
from charter.server._monitors import MONITOR_BODIES, monitor_routes
from charter.server._openapi import documented
from charter.server._schemas import (
    AgentPut,
    AgentView,
    DecisionAnswer,
    DecisionRequest,
    DecisionState,
    LedgerPage,
    OutcomeAnswer,
    OutcomeReport,
    RedeemAnswer,
    RedeemRequest,
    Status,
    VerifyAnswer,
)
from charter.server.ui import mount_ui
from charter.service import Charter
from charter.telemetry import Telemetry, span_id_for
from charter.telemetry._context import is_trace_id
from charter.telemetry._logs import bind

__all__ = ["create_app"]

_log = logging.getLogger("charter.server")

_ERRORS: dict[int, str] = {
    400: "The body is not strict JSON (malformed, a duplicate key, NaN, too deep).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not do this, or an agent key named another agent.",
    404: "No such resource.",
    409: "A conflict with what is recorded.",
    413: "The body is larger than the limit.",
    422: "The body or a parameter is wrong (the error names the field).",
    429: "The agent has as many approvals pending as it may; this one was refused.",
    503: "The ledger cannot be written or read now (`store_unavailable` when the database "
    "is away, with `Retry-After`; a decision is then also a `deny`, recorded nowhere).",
}

_BODY_MODELS: tuple[type[BaseModel], ...] = (
    DecisionRequest,
    RedeemRequest,
    OutcomeReport,
    AgentPut,
    *BODY_MODELS,
    *HALT_BODIES,
    *MONITOR_BODIES,
)


#: Paths FastAPI's own spans leave out: probes and scrapes every few seconds, static files.
_UNTRACED = ("/healthz", "/readyz", "/metrics", "/ui/static/")


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(_UNTRACED)


def _fastapi_telemetry(observing: Telemetry | None) -> TelemetryConfig | None:
    """FastAPI's own telemetry: its request spans, to Charter's provider, when traced.

    Its spans (its routes: reads, long polls, approvals, the UI) then continue the
    caller's `traceparent`, and never go to a global provider; its metrics and logs stay
    off (Prometheus and structlog have those). Untraced, FastAPI's defaults are left be.
    """
    tracing = None if observing is None else observing.tracing
    if tracing is None:
        return None
    return {
        "tracer_provider": tracing.provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "exclude": _untraced,
    }


async def _decision_state(
    charter: Charter,
    handlers: Handlers,
    auth: str | None,
    decision_id: str,
    wait: float,
    *,
    observed: bool,
) -> Response:
    """`GET /v1/decisions/{id}`: the decision as it stands, or once settled (a long poll).

    The answer names the decision's trace (`traceresponse`, W3C Trace Context level 2),
    so an agent that resumes it, in another process perhaps, redeems and reports in the
    same trace.
    """
    if observed:
        bind(decision_id=decision_id)
    answer, trace_id = await run_in_threadpool(handlers.get_decision_traced, auth, decision_id)
    if wait > 0 and answer["state"] in ("pending", "escalated"):
        answer = await long_poll(charter, handlers, auth, decision_id, wait)
    headers = None
    if trace_id is not None and is_trace_id(trace_id):
        headers = {"traceresponse": f"00-{trace_id}-{span_id_for(decision_id)}-01"}
    return JSONResponse(answer, headers=headers)


def _front_routes(
    app: FastAPI, handlers: Handlers, max_body: int, observing: Telemetry | None
) -> tuple[dict[str, Endpoint], ASGIApp]:
    """The hot routes' endpoints, and what serves the rest: bare, or observed."""
    bare: dict[str, Decide | Redeem | Outcome] = {
        "/v1/decisions": Decide(handlers, max_body),
        "/v1/grants/redeem": Redeem(handlers, max_body),
        "/v1/outcomes": Outcome(handlers, max_body),
    }
    if observing is None:
        return dict(bare), app
    # Imported only for an app that observes: the bare path never loads it.
    from charter.server._observed import ObservedApi, ObservedEndpoint  # noqa: PLC0415

    front: dict[str, Endpoint] = {p: ObservedEndpoint(e, observing) for p, e in bare.items()}
    if observing.access_log or observing.log_context:
        return front, ObservedApi(app, observing)
    return front, app


def create_app(
    charter: Charter, *, max_body: int = DEFAULT_MAX_BODY, telemetry: Telemetry | None = None
) -> CharterApp:
    """Build the HTTP API over an open gateway.

    The app never closes `charter`; whoever opened it closes it after the server stops
    (and whoever started `telemetry.tracing` shuts it down).

    Args:
        charter: the gateway (policy, ledger, keys) to serve.
        max_body: the largest request body accepted, in bytes; larger is answered 413.
        telemetry: what to observe (spans, log context, access lines); nothing when None.

    Returns:
        An ASGI application (the FastAPI app behind a front for the hot route).
    """
    observing = telemetry if telemetry is not None and telemetry.observing else None
    metrics = Metrics()
    metrics.time_appends(charter.store)
    metrics.watch(charter)
    handlers = Handlers(charter, metrics)
    app = FastAPI(
        title="Charter",
        version=__version__,
        description="Policy decisions for AI agents' actions, single-use grants, outcomes "
        'and a tamper-evident ledger. Every error is `{"error": {"code", "message", '
        '"field"}}`; see docs/api.md.',
        docs_url=None,
        redoc_url=None,
        telemetry=_fastapi_telemetry(observing),
    )
    app.state.charter = charter
    app.state.metrics = metrics
    _install_error_handlers(app)

    front, served = _front_routes(app, handlers, max_body, observing)
    # `CharterApp` answers these before FastAPI sees them; they also go first in FastAPI's
    # own router (which takes the first match), for whoever serves `app.api` alone. The
    # FastAPI routes declared below only describe them in the OpenAPI document.
    for path, endpoint in front.items():
        app.router.routes.insert(
            0, Route(path, endpoint, methods=["POST"], include_in_schema=False)
        )

    @app.post(
        "/v1/decisions",
        operation_id="create_decision",
        summary="Decide an action request",
        description="Decide and durably record one request. An `allow` carries a single-use "
        "grant. Repeating a request with the same idempotency key (body or header) returns the "
        "same decision and grant; the same key with another request is 422.",
        tags=["decisions"],
        **documented(
            DecisionAnswer, 400, 409, 413, 422, descriptions=_ERRORS, body=DecisionRequest
        ),
    )
    async def create_decision_doc(
        idempotency_key: str | None = Header(  # documents the header
            None, alias="Idempotency-Key", min_length=1, max_length=MAX_ID
        ),
    ) -> Response:  # pragma: no cover - `Decide` answers it
        raise ApiError("internal", "the documentation route was reached")

    @app.get(
        "/v1/decisions/{decision_id}",
        operation_id="get_decision",
        summary="A decision and its state",
        tags=["decisions"],
        **documented(DecisionState, 404, descriptions=_ERRORS),
    )
    async def get_decision(
        request: Request,
        decision_id: str = Path(min_length=1, max_length=MAX_ID),
        wait: float = Query(
            0,
            ge=0,
            le=60,
            description="Seconds to wait for a pending or escalated decision to settle "
            "(approved, denied, expired) before answering: a long poll.",
        ),
    ) -> Response:
        return await _decision_state(
            charter, handlers, _auth(request), decision_id, wait, observed=observing is not None
        )

    @app.post(
        "/v1/grants/redeem",
        operation_id="redeem_grant",
        summary="Redeem a grant for the exact decided arguments, once",
        tags=["grants"],
        **documented(RedeemAnswer, 400, 409, 413, 422, descriptions=_ERRORS, body=RedeemRequest),
    )
    async def redeem_grant_doc() -> Response:  # pragma: no cover - `Redeem` answers it
        raise ApiError("internal", "the documentation route was reached")

    @app.post(
        "/v1/outcomes",
        operation_id="record_outcome",
        summary="Report what happened when the action ran",
        tags=["outcomes"],
        **documented(
            OutcomeAnswer, 400, 404, 409, 413, 422, descriptions=_ERRORS, body=OutcomeReport
        ),
    )
    async def record_outcome_doc() -> Response:  # pragma: no cover - `Outcome` answers it
        raise ApiError("internal", "the documentation route was reached")

    @app.get(
        "/v1/ledger",
        operation_id="list_ledger",
        summary="Ledger entries after a position",
        tags=["ledger"],
        **documented(LedgerPage, 422, descriptions=_ERRORS),
    )
    async def list_ledger(
        request: Request,
        after: int = Query(0, ge=0, le=2**53 - 1, description="Entries with seq above this."),
        limit: int = Query(100, ge=1, le=1000, description="At most this many entries."),
    ) -> Response:
        answer = await run_in_threadpool(handlers.list_ledger, _auth(request), after, limit)
        return JSONResponse(answer)

    @app.get(
        "/v1/ledger/verify",
        operation_id="verify_ledger",
        summary="Verify the ledger's hash chain and latest checkpoint",
        tags=["ledger"],
        **documented(VerifyAnswer, descriptions=_ERRORS),
    )
    async def verify_ledger(request: Request) -> Response:
        answer = await run_in_threadpool(handlers.verify_ledger, _auth(request))
        return JSONResponse(answer)

    @app.get(
        "/v1/agents/{agent_id}",
        operation_id="get_agent",
        summary="An agent as decisions see it, with its autonomy level in force",
        tags=["agents"],
        **documented(AgentView, 404, descriptions=_ERRORS),
    )
    async def get_agent(
        request: Request, agent_id: str = Path(min_length=1, max_length=MAX_ID)
    ) -> Response:
        answer = await run_in_threadpool(handlers.get_agent, _auth(request), agent_id)
        return JSONResponse(answer)

    @app.put(
        "/v1/agents/{agent_id}",
        operation_id="put_agent",
        summary="Register or replace an agent (recorded in the ledger)",
        description="200 when the agent existed (in the registry or the bundle), 201 when "
        "it is new. The role and autonomy level must be defined by the live bundle.",
        tags=["agents"],
        **documented(
            AgentView,
            400,
            413,
            422,
            descriptions=_ERRORS,
            body=AgentPut,
            more={201: {"model": AgentView, "description": "A new agent was registered."}},
        ),
    )
    async def put_agent(
        request: Request, agent_id: str = Path(min_length=1, max_length=MAX_ID)
    ) -> Response:
        body = await read_body(request, max_body)
        answer, created = await run_in_threadpool(
            handlers.put_agent, _auth(request), agent_id, body
        )
        return JSONResponse(answer, status_code=201 if created else 200)

    app.include_router(approval_routes(charter, max_body=max_body, telemetry=observing))
    app.include_router(halt_routes(charter, max_body=max_body))
    app.include_router(breaker_routes(charter))
    app.include_router(monitor_routes(charter, max_body=max_body))

    @app.get(
        "/healthz",
        operation_id="healthz",
        summary="The process is up",
        tags=["health"],
        response_model=Status,
    )
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "checks": {}})

    @app.get(
        "/readyz",
        operation_id="readyz",
        summary="The bundle is loaded and the store is writable",
        tags=["health"],
        response_model=None,
        responses={
            200: {"model": Status},
            503: {"model": Status, "description": "Not ready; `checks` says why."},
        },
    )
    async def readyz() -> Response:
        ready, checks = await run_in_threadpool(handlers.readiness)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Figures in the Prometheus text format",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in _BODY_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    mount_ui(app, charter)  # the reviewer UI at /ui/ (HTML pages, outside the API document)
    return CharterApp(app, front, served)


class CharterApp:
    """The ASGI application: the hot routes straight to their endpoints, the rest to FastAPI.

    `POST /v1/decisions`, `POST /v1/grants/redeem` and `POST /v1/outcomes` skip FastAPI's
    middleware stack and dependency solving, which cost more per request than the work
    itself; their errors are answered in the same shape and from the same table. Every
    other attribute (`state`, `openapi`, ...) is the FastAPI app's.

    Args:
        api: the FastAPI app.
        front: the hot routes' endpoints, by exact path.
        served: what serves every other request: `api`, or `api` with its access lines.
    """

    def __init__(
        self, api: FastAPI, front: dict[str, Endpoint], served: ASGIApp | None = None
    ) -> None:
        self.api = api
        self._front = front  # POST endpoints by exact path
        self._served = api if served is None else served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._front.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self._served(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


def _auth(request: Request) -> str | None:
    return request.headers.get("authorization")


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the one shape, with the status from the one table."""

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def charter_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CharterError)
        return error_response(from_charter_error(exc))

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in ("query", "path", "header") else loc)
        message = f"`{field}`: {str(first.get('msg', 'invalid')).lower()}"
        return error_response(ApiError("request_invalid", message, field or None))

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "request_invalid")
        message = {
            404: "no such route; see /openapi.json",
            405: "this route does not take that method; see /openapi.json",
        }.get(exc.status_code, str(exc.detail).lower())
        error = error_response(ApiError(code, message, status=exc.status_code))
        if exc.headers:
            error.headers.update(exc.headers)
        return error

    async def internal(_request: Request, exc: Exception) -> Response:
        outage = from_outage(exc)
        if outage is not None:
            return error_response(outage)
        _log.error("unhandled error", exc_info=exc)
        return error_response(ApiError("internal", "an internal error; it has been logged"))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: api_error,
        CharterError: charter_error,
        RequestValidationError: validation_error,
        StarletteHTTPException: http_error,
        Exception: internal,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
