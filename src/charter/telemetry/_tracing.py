"""OpenTelemetry traces: the one module that imports OpenTelemetry's SDK (the `otel` extra).

`Tracing` holds a tracer provider of Charter's own. It is never made the global provider:
the server passes it where spans are made (its own routes, FastAPI's), and an embedding
application keeps whatever global provider it set up.

The hot routes' spans (decide, redeem, outcome) are recorded once they are over
(`Tracing.record`): the finished `ReadableSpan`, the object exporters receive, is built
with the ids the server chose (a decision span's is derived from the decision's id, so
approval steps taken later, anywhere, are its children: `_context.span_id_for`) and handed
to the span processors. Driving the SDK's live `Span` instead (attribute checks, locks,
start hooks) cost about 35 µs a span, a tenth of a decision's whole time on the server.
The other spans (approval steps) are the SDK's own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from charter.__about__ import __version__
from charter.telemetry._context import TraceParent
from charter.telemetry._names import ERROR_TYPE
from charter.telemetry._settings import TracingSettings

__all__ = ["DroppingExporter", "Tracing"]


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


_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def _remote(parent: TraceParent, tracestate: str | None = None) -> SpanContext:
    """The caller's span, as OpenTelemetry names a parent from another process."""
    return SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(parent.flags),
        trace_state=TraceState.from_header([tracestate]) if tracestate else None,
    )


class Tracing:
    """A tracer provider of Charter's own, and the spans the server records with it.

    Build it with `create` (or `from_settings`): `record` hands finished spans to the
    processors it was given.

    Args:
        provider: the provider.
        processors: the span processors added to it.
    """

    def __init__(self, provider: TracerProvider, processors: Sequence[SpanProcessor]) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("charter", __version__)
        self._processors = tuple(processors)
        self._sampler = provider.sampler
        self._resource = provider.resource
        self._scope = InstrumentationScope("charter", __version__)

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
            shutdown_on_exit=False,  # `shutdown` flushes; the server calls it as it stops
        )
        every = [*(BatchSpanProcessor(exporter) for exporter in exporters), *processors]
        for processor in every:
            provider.add_span_processor(processor)
        return cls(provider, every)

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing:
        """The provider `charter serve` traces with."""
        exporters = [_exporter(name) for name in settings.exporters]
        return cls.create(exporters=exporters, service_name=settings.service_name)

    def record(
        self,
        name: str,
        *,
        parent: TraceParent | None,
        tracestate: str | None,
        trace_id: str,
        span_id: str,
        start_time: int,
        attributes: dict[str, Any],
        error: bool = False,
    ) -> TraceParent:
        """Record a server span that is over now: the hot routes' way (see the module).

        The provider's sampler decides, as for any span; Charter's attributes are few and
        small, so no span limit needs applying.

        Args:
            name: the span's name.
            parent: the caller's span (its `traceparent`), or None for a new trace.
            tracestate: the caller's `tracestate`, carried along with `parent`.
            trace_id: the trace of a span without a `parent`.
            span_id: the span's own id.
            start_time: when the request arrived, in ns since the epoch.
            attributes: the span's attributes.
            error: whether the server failed it (a 5xx).

        Returns:
            The span's trace id, id and flags (sampled or not), for `traceresponse`.
        """
        remote = None if parent is None else _remote(parent, tracestate)
        trace_int = int(trace_id if parent is None else parent.trace_id, 16)
        if self._sampler is DEFAULT_ON:
            # The default (parent-based, always on) decides without being asked: a root is
            # sampled, a child as its parent is. Asking costs a context built per span.
            decision = Decision.RECORD_AND_SAMPLE
            if remote is not None and not remote.trace_flags.sampled:
                decision = Decision.DROP
            state = None if remote is None else remote.trace_state
        else:
            context = None
            if remote is not None:
                context = trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
            sampled = self._sampler.should_sample(
                context, trace_int, name, SpanKind.SERVER, attributes
            )
            decision, state = sampled.decision, sampled.trace_state
            if sampled.attributes:
                attributes = {**attributes, **sampled.attributes}
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
        ids = SpanContext(trace_int, int(span_id, 16), False, flags, state)
        if decision is not Decision.DROP:
            span = ReadableSpan(
                name,
                ids,
                remote,
                self._resource,
                attributes,
                kind=SpanKind.SERVER,
                status=_ERROR if error else _UNSET,
                start_time=start_time,
                end_time=time.time_ns(),
                instrumentation_scope=self._scope,
            )
            for processor in self._processors:
                processor.on_end(span)
        return TraceParent(f"{trace_int:032x}", span_id, int(flags))

    def start(
        self,
        name: str,
        *,
        parent: TraceParent | None,
        within_current: bool = False,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
    ) -> Span:
        """Start a server span (the SDK's own), a child of `parent` or of a new trace.

        The span is not made current: Charter's code does not look for it, and log lines
        get its ids from the request's log fields.

        Args:
            name: the span's name.
            parent: the span it is a child of, or None.
            within_current: without a `parent`, be a child of the span current in the
                calling code (FastAPI's request span) rather than start a new trace.
            attributes: the span's attributes so far.
            links: spans of other traces this one is about.
        """
        context: Context | None
        if parent is not None:
            context = trace.set_span_in_context(trace.NonRecordingSpan(_remote(parent)), Context())
        else:
            # A new trace, whatever span the calling code has current, unless asked.
            context = None if within_current else Context()
        return self.tracer.start_span(
            name, context=context, kind=SpanKind.SERVER, attributes=attributes, links=links
        )

    @staticmethod
    def current_links() -> list[Link]:
        """A link to the span current in the caller's context (FastAPI's request span)."""
        context = trace.get_current_span().get_span_context()
        return [Link(context)] if context.is_valid else []

    @staticmethod
    def link_to(other: TraceParent) -> Link:
        """A link to another trace's span, such as a decision a batch step settles."""
        return Link(_remote(other))

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
