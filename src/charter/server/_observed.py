"""The request path of a server that observes: spans, log context and access lines.

`create_app` builds the app with these wrappers only when its `Telemetry` asks for
something; a server that observes nothing runs `_front`'s endpoints and FastAPI as they
are, and never imports this module's OpenTelemetry half (`charter.telemetry._tracing`,
reached only through the `Tracing` it is given).

Each hot route's span is recorded once its request is answered (`Tracing.record`), with
the time the request arrived as its start. A decision's span id is derived from the
decision's id (`span_id_for`), so that the approval steps a reviewer takes later, on any
replica, are its children. The grant's and the outcome's spans are children of the
agent's `traceparent`, which the SDK sends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charter.server._body import receive_body
from charter.server._errors import ApiError, error_response
from charter.server._front import (
    Decide,
    FrontEndpoint,
    Outcome,
    Redeem,
    api_error,
    request_headers,
    send_json,
)
from charter.service import DecisionRecord
from charter.telemetry import _names as names
from charter.telemetry._context import (
    SAMPLED,
    TraceParent,
    is_trace_id,
    new_span_id,
    new_trace_id,
    span_id_for,
)
from charter.telemetry._logs import RequestLog
from charter.telemetry._settings import Telemetry

if TYPE_CHECKING:  # reached only through the `Tracing` the app is given
    from charter.telemetry._tracing import Tracing

__all__ = ["ObservedApi", "ObservedEndpoint", "decision_attributes"]

_SPAN_NAMES = {Redeem: names.SPAN_REDEEM, Outcome: names.SPAN_OUTCOME}


def decision_attributes(record: DecisionRecord) -> dict[str, Any]:
    """A decision span's attributes: the GenAI tool-call conventions, then Charter's."""
    decision = record.decision
    attributes: dict[str, Any] = {
        names.GEN_AI_OPERATION_NAME: names.EXECUTE_TOOL,
        names.GEN_AI_TOOL_NAME: decision.action,
        names.GEN_AI_AGENT_ID: decision.agent,
        names.GEN_AI_AGENT_NAME: decision.agent,
        names.DECISION_ID: record.id,
        names.VERDICT: decision.verdict.value,
        names.RISK: decision.risk,
        names.POLICY_VERSION: decision.policy_version,
        names.HTTP_METHOD: "POST",
        names.HTTP_ROUTE: Decide.route,
        names.HTTP_STATUS: 200,
    }
    approval_id = record.approval.get("id") if record.approval is not None else None
    if approval_id is not None:
        attributes[names.APPROVAL_ID] = approval_id
    if record.replayed:
        attributes[names.DECISION_REPLAYED] = True
    return attributes


class ObservedEndpoint:
    """A front endpoint (`_front`) answered the same way, observed as `telemetry` says.

    Args:
        endpoint: the endpoint whose work this does.
        telemetry: what to observe (something: else the endpoint is served bare).
    """

    def __init__(self, endpoint: FrontEndpoint, telemetry: Telemetry) -> None:
        self._endpoint = endpoint
        self._tracing = telemetry.tracing
        self._logging = telemetry.log_context or telemetry.access_log
        self._access = telemetry.access_log
        self._deciding = isinstance(endpoint, Decide)
        self._span_name = _SPAN_NAMES.get(type(endpoint), endpoint.route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request as the endpoint does, with its span and lines."""
        if not self._logging:
            await self._serve(scope, receive, send, None)
            return
        log = RequestLog("POST", self._endpoint.route, access=self._access)
        try:
            await self._serve(scope, receive, send, log)
        finally:
            log.close()

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, log: RequestLog | None
    ) -> None:
        start_ns = time.time_ns()
        started = time.perf_counter()
        endpoint, tracing = self._endpoint, self._tracing
        auth, length, key, header, state = request_headers(scope)
        parent = TraceParent.parse(header) if header is not None else None
        trace_id = None if parent is None else parent.trace_id
        span = None
        if tracing is not None:
            # The trace is chosen now, for the ledger to record; a redemption's or an
            # outcome's span id too, for its lines. A decision's is its id's (`_decided`).
            span = _Span(start_ns, parent, state, trace_id or new_trace_id())
            trace_id = span.trace_id
        if log is not None:
            log.note(trace_id=trace_id)
            if span is not None and not self._deciding:
                log.note(span_id=span.span_id)
        try:
            body = await receive_body(receive, length, endpoint.max_body)
            answer, replayed = await endpoint.answer(auth, body, key, started, trace_id)
        except ClientDisconnect:
            return  # nobody is left to answer, and nothing to record
        except Exception as exc:
            error = api_error(exc)
            if log is not None:
                log.status = error.status
                log.note(error=error.code)
            if span is not None:
                self._record_failure(span, error)
            await error_response(error)(scope, receive, send)
            return
        if self._deciding:
            flags = SAMPLED if parent is None else parent.flags
            traceresponse = self._decided(answer, span, log, flags)
        else:
            traceresponse = None
            self._done(answer, span, log)
        if log is not None:
            log.status = 200
        await send_json(send, endpoint.encode(answer), replayed, traceresponse)

    def _record_failure(self, span: _Span, error: ApiError) -> None:
        """A refused request's span, naming its code (a decision's, without its action)."""
        attributes: dict[str, Any] = {
            names.HTTP_METHOD: "POST",
            names.HTTP_ROUTE: self._endpoint.route,
            names.HTTP_STATUS: error.status,
            names.ERROR_TYPE: error.code,
        }
        name = self._span_name
        if self._deciding:
            name = names.decision_span_name(None)
            attributes[names.GEN_AI_OPERATION_NAME] = names.EXECUTE_TOOL
        assert self._tracing is not None
        span.record(self._tracing, name, attributes, error=error.status >= 500)

    def _decided(
        self, record: DecisionRecord, span: _Span | None, log: RequestLog | None, flags: int
    ) -> bytes | None:
        """A decision's ids on its lines, its span, and the `traceresponse` naming it.

        Without a `traceparent` its span is in the trace the request records (the one this
        request chose, or the body's own `trace_id` when that is a W3C one). An idempotent
        replay's span gets an id of its own: it is this request's, not the decision's.
        """
        if log is not None:
            approval = record.approval
            log.note(
                decision_id=record.id,
                agent=record.decision.agent,
                action=record.decision.action,
                approval_id=None if approval is None else approval.get("id"),
            )
        tracing = self._tracing
        if tracing is None or span is None:
            return self._endpoint.traceresponse(record, flags)
        recorded = record.request.trace_id
        if recorded is not None and is_trace_id(recorded):
            span.trace_id = recorded
        if not record.replayed:
            span.span_id = span_id_for(record.id)
        name = names.decision_span_name(record.decision.action)
        ids = span.record(tracing, name, decision_attributes(record))
        if log is not None:
            log.note(trace_id=ids.trace_id, span_id=ids.span_id)
        return ids.header().encode()

    def _done(self, answer: Any, span: _Span | None, log: RequestLog | None) -> None:
        """A redemption's or an outcome's ids on its lines, and its span."""
        decision_id = answer.get("decision_id") if isinstance(answer, dict) else None
        if log is not None:
            log.note(decision_id=decision_id)
        if self._tracing is None or span is None:
            return
        attributes: dict[str, Any] = {
            names.HTTP_METHOD: "POST",
            names.HTTP_ROUTE: self._endpoint.route,
            names.HTTP_STATUS: 200,
        }
        if decision_id is not None:
            attributes[names.DECISION_ID] = decision_id
        if "grant_id" in answer:
            attributes[names.GRANT_ID] = answer["grant_id"]
        if "success" in answer:
            attributes[names.OUTCOME_SUCCESS] = bool(answer["success"])
        span.record(self._tracing, self._span_name, attributes)


class _Span:
    """A hot route's span while its request is served: when, where in which trace, its id."""

    __slots__ = ("parent", "span_id", "start_ns", "state", "trace_id")

    def __init__(
        self, start_ns: int, parent: TraceParent | None, state: str | None, trace_id: str
    ) -> None:
        self.start_ns = start_ns
        self.parent = parent
        self.state = state
        self.trace_id = trace_id
        self.span_id = new_span_id()

    def record(
        self, tracing: Tracing, name: str, attributes: dict[str, Any], *, error: bool = False
    ) -> TraceParent:
        """Record the span, over now (`Tracing.record`); its ids and flags."""
        return tracing.record(
            name,
            parent=self.parent,
            tracestate=self.state,
            trace_id=self.trace_id,
            span_id=self.span_id,
            start_time=self.start_ns,
            attributes=attributes,
            error=error,
        )


class ObservedApi:
    """The FastAPI app, with its requests' log fields (the agent's trace) and access lines.

    Its spans are FastAPI's own (given Charter's tracer provider by `create_app`).

    Args:
        app: the FastAPI app.
        telemetry: what to observe.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self._app = app
        self._access = telemetry.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (lifespan and other scopes pass through untouched)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        log = RequestLog(scope["method"], scope["path"], access=self._access)
        header = next((v for k, v in scope["headers"] if k == b"traceparent"), None)
        parent = TraceParent.parse(header.decode("latin-1")) if header is not None else None
        if parent is not None:
            log.note(trace_id=parent.trace_id)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            log.close()
