"""The hot routes as bare ASGI endpoints: decide, redeem, report an outcome.

`POST /v1/decisions`, `POST /v1/grants/redeem` and `POST /v1/outcomes` skip FastAPI's
middleware stack and dependency solving, which cost more per request than the work
itself; `CharterApp` (`_app`) hands them their requests first. Their answers are written
here without Starlette's `Request` and `Response`, in the same shapes as every other
route's. This is the request path of a server that observes nothing; `_observed` wraps
these endpoints in spans, log context and access lines when the app is built to.

Every endpoint reads an agent's `traceparent`: a decision records its trace id as the
request's `trace_id` when the body names none (a header parse, traced or not), and
answers `traceresponse` so that the agent's redeem and outcome can join the same trace.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from charter.errors import CharterError
from charter.server._body import receive_body
from charter.server._errors import ApiError, error_response, from_charter_error, from_outage
from charter.server._handlers import Handlers
from charter.service import DecisionRecord
from charter.telemetry._context import SAMPLED, TraceParent, is_trace_id, span_id_for

__all__ = [
    "Decide",
    "Endpoint",
    "FrontEndpoint",
    "Outcome",
    "Redeem",
    "RequestHeaders",
    "answer_error",
    "api_error",
    "decision_answer",
    "request_headers",
    "send_json",
]

_log = logging.getLogger("charter.server")

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


def decision_answer(record: DecisionRecord) -> bytes:
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


Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


def api_error(exc: Exception) -> ApiError:
    """The error answered for `exc`, raised outside FastAPI: the one shape, the one table."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, CharterError):
        return from_charter_error(exc)
    outage = from_outage(exc)
    if outage is not None:
        return outage
    _log.error("unhandled error", exc_info=exc)  # never a stack trace to the client
    return _INTERNAL


async def answer_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an error raised outside FastAPI."""
    await error_response(api_error(exc))(scope, receive, send)


_JSON_TYPE = b"application/json"


async def send_json(
    send: Send, body: bytes, replayed: bool, traceresponse: bytes | None = None
) -> None:
    """Send a 200 JSON answer (encoded) as `JSONResponse` would, with no `Response` object.

    `traceresponse` is the W3C header naming the server's span (Trace Context level 2).
    """
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_TYPE)]
    if replayed:
        headers.insert(0, (b"idempotent-replayed", b"true"))
    if traceresponse is not None:
        headers.append((b"traceresponse", traceresponse))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: `Authorization`, `Content-Length`, `Idempotency-Key`, `traceparent`, `tracestate`.
RequestHeaders = tuple[str | None, str | None, str | None, str | None, str | None]


def request_headers(scope: Scope) -> RequestHeaders:
    """The headers a front route reads, the first of each, as Starlette's `Headers.get` does.

    One pass over the headers, compared as bytes: cheaper than building `Headers`.
    """
    auth = length = key = parent = state = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value.decode("latin-1") if auth is None else auth
        elif name == b"content-length":
            length = value.decode("latin-1") if length is None else length
        elif name == b"idempotency-key":
            key = value.decode("latin-1") if key is None else key
        elif name == b"traceparent":
            parent = value.decode("latin-1") if parent is None else parent
        elif name == b"tracestate":
            state = value.decode("latin-1") if state is None else state
    return auth, length, key, parent, state


class FrontEndpoint(abc.ABC):
    """A POST route served as a bare ASGI endpoint, ahead of FastAPI.

    It reads the headers and the body and writes the JSON answer without Starlette's
    `Request` and `Response` objects, whose bookkeeping costs more than the HTTP server
    itself at these rates. (An instance, not a function, so that a Starlette `Route` also
    calls it as the ASGI app it is.)

    Args:
        handlers: the routes' logic.
        max_body: the largest body read, in bytes.
    """

    #: The route, as spans and access lines name it.
    route: str = ""

    def __init__(self, handlers: Handlers, max_body: int) -> None:
        self.handlers = handlers
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request: 200 with its JSON, or an error in the one shape."""
        started = time.perf_counter()
        auth, length, key, header, _state = request_headers(scope)
        parent = TraceParent.parse(header) if header is not None else None
        try:
            body = await receive_body(receive, length, self.max_body)
            trace_id = None if parent is None else parent.trace_id
            answer, replayed = await self.answer(auth, body, key, started, trace_id)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            await answer_error(exc, scope, receive, send)
            return
        flags = SAMPLED if parent is None else parent.flags
        await send_json(send, self.encode(answer), replayed, self.traceresponse(answer, flags))

    @abc.abstractmethod
    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float, trace_id: str | None
    ) -> tuple[Any, bool]:
        """The route's work: its answer, and whether it is an idempotent replay.

        `trace_id` is the trace the request is part of (from `traceparent`), if any.
        """

    def encode(self, answer: Any) -> bytes:
        """The answer's JSON, encoded (`answer` is a JSON value unless a route says not)."""
        return _answer_json(answer).encode()

    def traceresponse(self, answer: Any, flags: int) -> bytes | None:
        """The `traceresponse` header of an untraced answer; None for most routes."""
        return None


class Decide(FrontEndpoint):
    """`POST /v1/decisions`, answered once the decision is durable.

    It authenticates, parses and decides on the event loop (tens of microseconds of CPU),
    then awaits the group commit without holding a worker thread, so many concurrent
    requests share one ledger transaction.
    """

    route = "/v1/decisions"

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float, trace_id: str | None
    ) -> tuple[DecisionRecord, bool]:
        """Decide the request once its entry is durable; it joins `trace_id`'s trace."""
        record = await self.handlers.decide_async(auth, body, key, started, trace_id)
        return record, record.replayed

    def encode(self, answer: Any) -> bytes:
        """The decision's JSON answer (`answer` is its `DecisionRecord`)."""
        return decision_answer(answer)

    def traceresponse(self, answer: Any, flags: int) -> bytes | None:
        """The decision's trace and the id its span has (or would have, traced).

        Only a W3C trace id can be named; a free-form `trace_id` stays in the ledger.
        """
        record: DecisionRecord = answer
        trace_id = record.request.trace_id
        if not is_trace_id(trace_id):
            return None
        return f"00-{trace_id}-{span_id_for(record.id)}-{flags:02x}".encode()


class Redeem(FrontEndpoint):
    """`POST /v1/grants/redeem` on the event loop, answered once its entry is durable."""

    route = "/v1/grants/redeem"

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float, trace_id: str | None
    ) -> tuple[Any, bool]:
        """Redeem the grant (or record its refusal)."""
        return await self.handlers.redeem_grant_async(auth, body), False


class Outcome(FrontEndpoint):
    """`POST /v1/outcomes` on the event loop, answered once its entry is durable."""

    route = "/v1/outcomes"

    async def answer(
        self, auth: str | None, body: bytes, key: str | None, started: float, trace_id: str | None
    ) -> tuple[Any, bool]:
        """Record the outcome."""
        return await self.handlers.record_outcome_async(auth, body), False
