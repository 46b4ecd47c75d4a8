"""The ASGI application: routes, the OpenAPI document, and error answers.

FastAPI builds the OpenAPI document and serves the ordinary routes. `POST /v1/decisions`,
the hot path, is a bare ASGI endpoint that `CharterApp` serves ahead of FastAPI, and so
are `POST /v1/grants/redeem` and `POST /v1/outcomes`, whose answers each wait for a commit;
documentation-only FastAPI routes with the same paths and methods describe them fully in
the document (FastAPI's own validation would cost about half the floor the issue sets).
Every route reads its body with the same strict reader. The front routes do their work on
the event loop and await the group commit; the others run their logic in a worker thread,
because the gateway blocks until the ledger entry is durable and the group-commit writer
batches many waiting threads into one transaction.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from charter.__about__ import __version__
from charter.errors import CharterError
from charter.model import MAX_ID
from charter.server._approvals import BODY_MODELS, approval_routes, long_poll
from charter.server._body import DEFAULT_MAX_BODY, read_body, receive_body
from charter.server._errors import ApiError, error_response, from_charter_error, from_outage
from charter.server._halts import HALT_BODIES, halt_routes
from charter.server._handlers import Handlers
from charter.server._metrics import CONTENT_TYPE_LATEST, Metrics
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
from charter.service import Charter, DecisionRecord

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
)


def create_app(charter: Charter, *, max_body: int = DEFAULT_MAX_BODY) -> CharterApp:
    """Build the HTTP API over an open gateway.

    The app never closes `charter`; whoever opened it closes it after the server stops.

    Args:
        charter: the gateway (policy, ledger, keys) to serve.
        max_body: the largest request body accepted, in bytes; larger is answered 413.

    Returns:
        An ASGI application (the FastAPI app behind a front for the hot route).
    """
    metrics = Metrics()
    metrics.time_appends(charter.store)
    handlers = Handlers(charter, metrics)
    app = FastAPI(
        title="Charter",
        version=__version__,
        description="Policy decisions for AI agents' actions, single-use grants, outcomes "
        'and a tamper-evident ledger. Every error is `{"error": {"code", "message", '
        '"field"}}`; see docs/api.md.',
        docs_url=None,
        redoc_url=None,
    )
    app.state.charter = charter
    app.state.metrics = metrics
    _install_error_handlers(app)

    front: dict[str, _Endpoint] = {
        "/v1/decisions": _Decide(handlers, max_body),
        "/v1/grants/redeem": _Redeem(handlers, max_body),
        "/v1/outcomes": _Outcome(handlers, max_body),
    }
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
    ) -> Response:  # pragma: no cover - `_Decide` answers it
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
        answer = await run_in_threadpool(handlers.get_decision, _auth(request), decision_id)
        if wait > 0 and answer["state"] in ("pending", "escalated"):
            answer = await long_poll(charter, handlers, _auth(request), decision_id, wait)
        return JSONResponse(answer)

    @app.post(
        "/v1/grants/redeem",
        operation_id="redeem_grant",
        summary="Redeem a grant for the exact decided arguments, once",
        tags=["grants"],
        **documented(RedeemAnswer, 400, 409, 413, 422, descriptions=_ERRORS, body=RedeemRequest),
    )
    async def redeem_grant_doc() -> Response:  # pragma: no cover - `_Redeem` answers it
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
    async def record_outcome_doc() -> Response:  # pragma: no cover - `_Outcome` answers it
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

    app.include_router(approval_routes(charter, max_body=max_body))
    app.include_router(halt_routes(charter, max_body=max_body))

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
    return CharterApp(app, front)


_INTERNAL = ApiError("internal", "an internal error; it has been logged")


def _json_encoder() -> Callable[[Any], str]:
    """What `JSONResponse` writes (compact, UTF-8, no NaN), from an encoder built once.

    `JSONEncoder.encode` builds its C encoder again on every call, which costs as much
    as encoding a decision's answer; the answers hold no cycles, so none is checked for.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always ships the C accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    # Positional: markers, default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan.
    encode = make(
        None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",",
        False, False, False,
    )  # fmt: skip
    return lambda value: "".join(encode(value, 0))


_answer_json = _json_encoder()
_json_string = json.encoder.encode_basestring  # what the encoder writes for a `str`


def _json_of(value: Any) -> str:
    """`_answer_json(value)`, with the common scalars written without the encoder."""
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _answer_json(value)


def _decision_answer(record: DecisionRecord) -> bytes:
    """`_answer_json(record.to_json())`, encoded, written out field by field.

    Every decision is answered so: building the three dicts of `to_json` only to have the
    encoder take them apart again costs twice as much as writing the text. The fields and
    their order are `DecisionRecord.to_json`'s; `tests/server/test_decision_answer.py`
    holds the two to the same bytes.
    """
    decision = record.decision
    factors = decision.factors
    route = decision.route
    grant = record.grant
    approval = record.approval
    return "".join(
        (
            '{"id":',
            _json_of(record.id),
            ',"seq":',
            _json_of(record.seq),
            ',"at":',
            _json_of(record.at),
            ',"verdict":',
            _json_of(decision.verdict.value),
            ',"risk":',
            _json_of(decision.risk),
            ',"factors":',
            _answer_json([f.to_json() for f in factors]) if factors else "[]",
            ',"reasons":',
            _answer_json([r.to_json() for r in decision.reasons]),
            ',"policy_version":',
            _json_of(decision.policy_version),
            ',"agent":',
            _json_of(decision.agent),
            ',"action":',
            _json_of(decision.action),
            ',"role":',
            _json_of(decision.role),
            ',"autonomy_level":',
            _json_of(decision.autonomy_level),
            ',"autonomy_max_risk":',
            _json_of(decision.autonomy_max_risk),
            ',"ceiling":',
            _json_of(decision.ceiling),
            ',"route":',
            "null" if route is None else _answer_json(route.to_json()),
            ',"runbook":',
            _json_of(decision.runbook),
            ',"grant":',
            "null"
            if grant is None
            else (
                f'{{"id":{_json_of(grant.id)},"token":{_json_of(grant.token)},'
                f'"expires_at":{_json_of(grant.expires_at)},'
                f'"args_hash":{_json_of(grant.args_hash)}}}'
            ),
            ',"approval":',
            "null" if approval is None else _answer_json(dict(approval)),
            ',"idempotent_replay":',
            _json_of(record.replayed),
            "}",
        )
    ).encode()


_Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


class CharterApp:
    """The ASGI application: the hot routes straight to their endpoints, the rest to FastAPI.

    `POST /v1/decisions`, `POST /v1/grants/redeem` and `POST /v1/outcomes` skip FastAPI's
    middleware stack and dependency solving, which cost more per request than the work
    itself; their errors are answered in the same shape and from the same table. Every
    other attribute (`state`, `openapi`, ...) is the FastAPI app's.
    """

    def __init__(self, api: FastAPI, front: dict[str, _Endpoint]) -> None:
        self.api = api
        self._front = front  # POST endpoints by exact path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._front.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.api(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


async def _answer_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an error raised outside FastAPI in the one shape, from the one table."""
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, CharterError):
        error = from_charter_error(exc)
    elif (outage := from_outage(exc)) is not None:
        error = outage
    else:  # never a stack trace to the client
        _log.error("unhandled error", exc_info=exc)
        error = _INTERNAL
    await error_response(error)(scope, receive, send)


async def _send_json(send: Send, body: bytes, replayed: bool) -> None:
    """Send a 200 JSON answer (encoded) as `JSONResponse` would, with no `Response` object."""
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_TYPE)]
    if replayed:
        headers.insert(0, (b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_JSON_TYPE = b"application/json"


def _request_headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """The `Authorization`, `Content-Length` and `Idempotency-Key` headers.

    The first of each, as Starlette's `Headers.get` reads them.
    """
    auth = length = key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value.decode("latin-1") if auth is None else auth
        elif name == b"content-length":
            length = value.decode("latin-1") if length is None else length
        elif name == b"idempotency-key":
            key = value.decode("latin-1") if key is None else key
    return auth, length, key


class _FrontEndpoint(abc.ABC):
    """A POST route served as a bare ASGI endpoint, ahead of FastAPI.

    It reads the headers and the body and writes the JSON answer without Starlette's
    `Request` and `Response` objects, whose bookkeeping costs more than the HTTP server
    itself at these rates. (An instance, not a function, so that a Starlette `Route` also
    calls it as the ASGI app it is.)
    """

    def __init__(self, handlers: Handlers, max_body: int) -> None:
        self._handlers = handlers
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request: 200 with its JSON, or an error in the one shape."""
        started = time.perf_counter()
        auth, length, key = _request_headers(scope)
        try:
            body = await receive_body(receive, length, self._max_body)
            answer, replayed = await self.answer(auth, body, key, started)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            await _answer_error(exc, scope, receive, send)
            return
        await _send_json(send, self.encode(answer), replayed)

    @abc.abstractmethod
    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float
    ) -> tuple[Any, bool]:
        """The route's work: its answer, and whether it is an idempotent replay."""

    def encode(self, answer: Any) -> bytes:
        """The answer's JSON, encoded (`answer` is a JSON value unless a route says not)."""
        return _answer_json(answer).encode()


class _Decide(_FrontEndpoint):
    """`POST /v1/decisions`, answered once the decision is durable.

    It authenticates, parses and decides on the event loop (tens of microseconds of CPU),
    then awaits the group commit without holding a worker thread, so many concurrent
    requests share one ledger transaction.
    """

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float
    ) -> tuple[DecisionRecord, bool]:
        """Decide the request once its entry is durable."""
        record = await self._handlers.decide_async(auth, body, key, started)
        return record, record.replayed

    def encode(self, answer: Any) -> bytes:
        """The decision's JSON answer (`answer` is its `DecisionRecord`)."""
        return _decision_answer(answer)


class _Redeem(_FrontEndpoint):
    """`POST /v1/grants/redeem` on the event loop, answered once its entry is durable."""

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float
    ) -> tuple[Any, bool]:
        """Redeem the grant (or record its refusal)."""
        return await self._handlers.redeem_grant_async(auth, body), False


class _Outcome(_FrontEndpoint):
    """`POST /v1/outcomes` on the event loop, answered once its entry is durable."""

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float
    ) -> tuple[Any, bool]:
        """Record the outcome."""
        return await self._handlers.record_outcome_async(auth, body), False


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
