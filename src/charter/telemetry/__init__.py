"""Telemetry for whoever is on call: OpenTelemetry traces (the `otel` extra) and JSON logs.

```python
from charter.server import create_app
from charter.telemetry import Telemetry, TracingSettings, configure_logging, start_tracing

configure_logging("json")                                   # every log line one JSON object
tracing = start_tracing(TracingSettings())                  # OTLP to OTEL_EXPORTER_OTLP_ENDPOINT
app = create_app(charter, telemetry=Telemetry(tracing=tracing, log_context=True))
```

`charter serve --otel --log-format json` does the same. Nothing here imports
OpenTelemetry's SDK until traces are started; span names, attributes and log fields are
described in docs/telemetry.md.
"""

from charter.telemetry._context import TraceParent, current_traceparent, span_id_for
from charter.telemetry._logs import (
    CONTEXT_FIELDS,
    LOG_FORMATS,
    LogFormat,
    configure_logging,
    resolve_log_format,
)
from charter.telemetry._settings import MISSING_EXTRA, Telemetry, TracingSettings, start_tracing

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "MISSING_EXTRA",
    "LogFormat",
    "Telemetry",
    "TraceParent",
    "TracingSettings",
    "configure_logging",
    "current_traceparent",
    "resolve_log_format",
    "span_id_for",
    "start_tracing",
]
