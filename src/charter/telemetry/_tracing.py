"""OpenTelemetry traces: the one module that imports OpenTelemetry's SDK (the `otel` extra).

`Tracing` holds a tracer provider of Charter's own. It is never made the global provider:
the server passes it where spans are made (its own routes, FastAPI's), and an embedding
application keeps whatever global provider it set up. Its id generator lets the server
name the ids of a decision's span (`span_id_for`), so that approval steps taken later,
anywhere, are children of that span (see `_context.span_id_for`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from charter.__about__ import __version__
from charter.telemetry._context import TraceParent
from charter.telemetry._names import ERROR_TYPE
from charter.telemetry._settings import TracingSettings

__all__ = ["DroppingExporter", "Tracing"]

# The ids the next span started on this context gets, when the caller names them.
_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "charter_trace_id", default=None
)
_SPAN_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "charter_span_id", default=None
)


class _NamedIds(RandomIdGenerator):
    """Random ids, except those a caller names for the span it is starting."""

    def generate_span_id(self) -> int:
        return _SPAN_ID.get() or super().generate_span_id()

    def generate_trace_id(self) -> int:
        return _TRACE_ID.get() or super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        # A named trace id may be an agent's own, of unknown randomness.
        return False


class DroppingExporter(SpanExporter):
    """An exporter that drops every span: `OTEL_TRACES_EXPORTER=none` under `--otel`.

    Spans are still built, sampled and batched, so the cost of tracing can be measured
    (`bench/bench_tracing.py`) and trace ids still reach the ledger and the logs, with
    nowhere to send the spans.
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop `spans`."""
        return SpanExportResult.SUCCESS


def _resource(service_name: str) -> Resource:
    """`OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`, with Charter's name and version."""
    detected = Resource.create({})
    named = detected.attributes.get(SERVICE_NAME)
    ours: dict[str, Any] = {SERVICE_VERSION: __version__}
    if not named or str(named).startswith("unknown_service"):
        ours[SERVICE_NAME] = service_name
    return detected.merge(Resource(ours))


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "none":
        return DroppingExporter()
    # Imported here: `console` and `none` need only the SDK. The exporter reads the
    # standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout) itself.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


class Tracing:
    """A tracer provider of Charter's own and the spans the server starts with it.

    Args:
        provider: a provider built by `create` (its id generator must be Charter's).
    """

    def __init__(self, provider: TracerProvider) -> None:
        if not isinstance(provider.id_generator, _NamedIds):
            raise ValueError("build the provider with `Tracing.create`")
        self.provider = provider
        self.tracer = provider.get_tracer("charter", __version__)

    @classmethod
    def create(
        cls,
        *,
        exporters: Sequence[SpanExporter] = (),
        processors: Sequence[SpanProcessor] = (),
        service_name: str = "charter",
        sampler: Sampler | None = None,
    ) -> Tracing:
        """A provider whose spans go to `exporters` (each behind a batch) and `processors`.

        Args:
            exporters: each gets a `BatchSpanProcessor`: spans are exported in a thread of
                their own, never on the request path.
            processors: span processors as they are (a test's `SimpleSpanProcessor`).
            service_name: `service.name` unless `OTEL_SERVICE_NAME` or
                `OTEL_RESOURCE_ATTRIBUTES` name one.
            sampler: the sampler (None: `OTEL_TRACES_SAMPLER`, else parent-based, always on).
        """
        provider = TracerProvider(
            sampler=sampler,
            resource=_resource(service_name),
            id_generator=_NamedIds(),
            shutdown_on_exit=False,  # `shutdown` flushes; the server calls it as it stops
        )
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        for processor in processors:
            provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing:
        """The provider `charter serve` traces with."""
        exporters = [_exporter(name) for name in settings.exporters]
        return cls.create(exporters=exporters, service_name=settings.service_name)

    def start(
        self,
        name: str,
        *,
        parent: TraceParent | None,
        within_current: bool = False,
        tracestate: str | None = None,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> Span:
        """Start a server span, a child of `parent` or the root of a new trace.

        The span is not made current: Charter's code does not look for it, and log lines
        get its ids from the log context the server binds.

        Args:
            name: the span's name.
            parent: the caller's span (its `traceparent`), or None for a new trace.
            within_current: without a `parent`, be a child of the span current in the
                calling code (FastAPI's request span) rather than start a new trace.
            tracestate: the caller's `tracestate`, carried along with `parent`.
            attributes: the span's attributes so far.
            links: spans of other traces this one is about.
            start_time: when it started, in ns since the epoch (None: now).
            trace_id: the trace id of a new trace (ignored with a `parent`).
            span_id: the span's own id (None: a random one).
        """
        context: Context | None
        if parent is None:
            # A new trace, whatever span the calling code has current, unless asked.
            context = None if within_current else Context()
        else:
            state = TraceState.from_header([tracestate]) if tracestate else None
            remote = SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(parent.flags),
                trace_state=state,
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
        with _named(trace_id if parent is None else None, span_id):
            return self.tracer.start_span(
                name,
                context=context,
                kind=SpanKind.SERVER,
                attributes=attributes,
                links=links,
                start_time=start_time,
            )

    @staticmethod
    def current_links() -> list[Link]:
        """A link to the span current in the caller's context (FastAPI's request span)."""
        context = trace.get_current_span().get_span_context()
        return [Link(context)] if context.is_valid else []

    @staticmethod
    def link_to(parent: TraceParent) -> Link:
        """A link to another trace's span, such as a decision a batch step settles."""
        return Link(
            SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(parent.flags),
            )
        )

    @staticmethod
    def ids(span: Span) -> TraceParent | None:
        """A span's trace id, span id and flags, as a `traceparent`; None if it has none."""
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return TraceParent(
            f"{context.trace_id:032x}", f"{context.span_id:016x}", int(context.trace_flags)
        )

    @staticmethod
    def failed(span: Span, code: str, status: int | None = None) -> None:
        """Mark `span` as failed with an error code (`error.type`).

        A 4xx is the caller's mistake, not the server's: the span then keeps an unset
        status, as the HTTP server conventions ask, and only names the code.
        """
        span.set_attribute(ERROR_TYPE, code)
        if status is None or status >= 500:
            span.set_status(StatusCode.ERROR)

    def shutdown(self) -> None:
        """Export what is batched and stop exporting."""
        self.provider.shutdown()


@contextmanager
def _named(trace_id: str | None, span_id: str | None) -> Iterator[None]:
    """Name the ids of the span started inside the block (on this context only)."""
    if trace_id is None and span_id is None:
        yield
        return
    traced = _TRACE_ID.set(int(trace_id, 16) if trace_id else None)
    spanned = _SPAN_ID.set(int(span_id, 16) if span_id else None)
    try:
        yield
    finally:
        _SPAN_ID.reset(spanned)
        _TRACE_ID.reset(traced)
