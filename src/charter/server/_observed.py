"""The request path of a server that observes: spans, log context and access lines.

`create_app` builds the app with these wrappers only when its `Telemetry` asks for
something; a server that observes nothing runs `_front`'s endpoints and FastAPI as they
are, and never imports this module's OpenTelemetry half (`charter.telemetry._tracing`,
reached only through the `Tracing` it is given).

A decision's span is started once the decision is made, with the time the request
arrived: its id is then derived from the decision's id (`span_id_for`), so that the
approval steps a reviewer takes later, on any replica, are its children. The grant's and
the outcome's spans are children of the agent's `traceparent`, which the SDK sends.
"""

from __future__ import annotations

import time
from typing import Any

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
from charter.telemetry._context import SAMPLED, TraceParent, is_trace_id, new_trace_id, span_id_for
from charter.telemetry._logs import AccessLine, bind
from charter.telemetry._settings import Telemetry

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
        self._log_context = telemetry.log_context
        self._access = telemetry.access_log
        self._deciding = isinstance(endpoint, Decide)
        self._span_name = _SPAN_NAMES.get(type(endpoint), endpoint.route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request as the endpoint does, with its span and lines."""
        access = AccessLine("POST", self._endpoint.route) if self._access else None
        try:
            await self._serve(scope, receive, send, access)
        finally:
            if access is not None:
                access.write()

    def _note(self, access: AccessLine | None, **fields: Any) -> None:
        """Bind fields for the request's log lines, or only note them for its access line."""
        if self._log_context:
            bind(**fields)
        elif access is not None:
            access.noted.update({k: v for k, v in fields.items() if v is not None})

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, access: AccessLine | None
    ) -> None:
        start_ns = time.time_ns()
        started = time.perf_counter()
        endpoint = self._endpoint
        auth, length, key, header, state = request_headers(scope)
        parent = TraceParent.parse(header) if header is not None else None
        trace_id, span = self._begin(parent, state, start_ns, access)
        try:
            body = await receive_body(receive, length, endpoint.max_body)
            answer, replayed = await endpoint.answer(auth, body, key, started, trace_id)
        except ClientDisconnect:
            if span is not None:
                span.set_attribute(names.ERROR_TYPE, "client_disconnected")
                span.end()
            return  # nobody is left to answer
        except Exception as exc:
            error = api_error(exc)
            span = self._failed(error, span, parent, state, trace_id, start_ns, access)
            try:
                await error_response(error)(scope, receive, send)
            finally:
                if span is not None:
                    span.end()
            return
        if self._deciding:
            span, traceresponse = self._decided(answer, parent, state, trace_id, start_ns, access)
        else:
            traceresponse = None
            self._done(answer, span, access)
        if access is not None:
            access.status = 200
        try:
            await send_json(send, endpoint.encode(answer), replayed, traceresponse)
        finally:
            if span is not None:
                span.end()

    def _begin(
        self,
        parent: TraceParent | None,
        state: str | None,
        start_ns: int,
        access: AccessLine | None,
    ) -> tuple[str | None, Any]:
        """The trace the request is in, and its span when it starts now (not a decision's)."""
        tracing = self._tracing
        trace_id = None if parent is None else parent.trace_id
        span = None
        if tracing is not None:
            if self._deciding:
                # The decision's span starts once its id is known (`_decision_span`); the
                # trace it will be in is chosen now, for the ledger to record.
                trace_id = trace_id or new_trace_id()
            else:
                span = tracing.start(
                    self._span_name,
                    parent=parent,
                    tracestate=state,
                    start_time=start_ns,
                    attributes={names.HTTP_METHOD: "POST", names.HTTP_ROUTE: self._endpoint.route},
                )
                ids = tracing.ids(span)
                if ids is not None:
                    trace_id = ids.trace_id
                    self._note(access, span_id=ids.span_id)
        self._note(access, trace_id=trace_id)
        return trace_id, span

    def _failed(
        self,
        error: ApiError,
        span: Any,
        parent: TraceParent | None,
        state: str | None,
        trace_id: str | None,
        start_ns: int,
        access: AccessLine | None,
    ) -> Any:
        """Note a refused request on its access line and its span (started, if need be)."""
        if access is not None:
            access.status = error.status
            access.noted["error"] = error.code
        tracing = self._tracing
        if tracing is None:
            return span
        if span is None:  # a decision refused before it was made
            span = tracing.start(
                names.decision_span_name(None),
                parent=parent,
                tracestate=state,
                start_time=start_ns,
                trace_id=trace_id,
                attributes={
                    names.GEN_AI_OPERATION_NAME: names.EXECUTE_TOOL,
                    names.HTTP_METHOD: "POST",
                    names.HTTP_ROUTE: self._endpoint.route,
                },
            )
        span.set_attribute(names.HTTP_STATUS, error.status)
        tracing.failed(span, error.code, error.status)
        return span

    def _decided(
        self,
        record: DecisionRecord,
        parent: TraceParent | None,
        state: str | None,
        trace_id: str | None,
        start_ns: int,
        access: AccessLine | None,
    ) -> tuple[Any, bytes | None]:
        """A decision's ids on its lines, its span, and the `traceresponse` naming it."""
        approval = record.approval
        self._note(
            access,
            decision_id=record.id,
            agent=record.decision.agent,
            action=record.decision.action,
            approval_id=None if approval is None else approval.get("id"),
        )
        if self._tracing is None:
            flags = SAMPLED if parent is None else parent.flags
            return None, self._endpoint.traceresponse(record, flags)
        span = self._decision_span(record, parent, state, trace_id, start_ns)
        ids = self._tracing.ids(span)
        if ids is None:
            return span, None
        self._note(access, trace_id=ids.trace_id, span_id=ids.span_id)
        return span, ids.header().encode()

    def _done(self, answer: Any, span: Any, access: AccessLine | None) -> None:
        """A redemption's or an outcome's ids on its lines and its span."""
        decision_id = answer.get("decision_id") if isinstance(answer, dict) else None
        self._note(access, decision_id=decision_id)
        if span is None:
            return
        span.set_attribute(names.HTTP_STATUS, 200)
        if decision_id is not None:
            span.set_attribute(names.DECISION_ID, decision_id)
        if "grant_id" in answer:
            span.set_attribute(names.GRANT_ID, answer["grant_id"])
        if "success" in answer:
            span.set_attribute(names.OUTCOME_SUCCESS, bool(answer["success"]))

    def _decision_span(
        self,
        record: DecisionRecord,
        parent: TraceParent | None,
        state: str | None,
        trace_id: str | None,
        start_ns: int,
    ) -> Any:
        """The decision's span, begun when the request arrived, named after the decision.

        Without a `traceparent` it is in the trace the request records (the one this
        request chose, or the body's own `trace_id` when that is a W3C one). An idempotent
        replay's span gets an id of its own: it is this request's, not the decision's.
        """
        assert self._tracing is not None
        recorded = record.request.trace_id
        return self._tracing.start(
            names.decision_span_name(record.decision.action),
            parent=parent,
            tracestate=state,
            start_time=start_ns,
            trace_id=recorded if is_trace_id(recorded) else trace_id,
            span_id=None if record.replayed else span_id_for(record.id),
            attributes=decision_attributes(record),
        )


class ObservedApi:
    """The FastAPI app, with an access line per request and the agent's trace id bound.

    Its spans are FastAPI's own (given Charter's tracer provider by `create_app`).

    Args:
        app: the FastAPI app.
        telemetry: what to observe.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self._app = app
        self._log_context = telemetry.log_context
        self._access = telemetry.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (lifespan and other scopes pass through untouched)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        access = AccessLine(scope["method"], scope["path"]) if self._access else None
        header = next((v for k, v in scope["headers"] if k == b"traceparent"), None)
        parent = TraceParent.parse(header.decode("latin-1")) if header is not None else None
        if parent is not None:
            if self._log_context:
                bind(trace_id=parent.trace_id)
            elif access is not None:
                access.noted["trace_id"] = parent.trace_id
        if access is None:
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                access.status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            access.write()
