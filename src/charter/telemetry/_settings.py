"""What to observe, decided once from flags and the environment, without importing OpenTelemetry.

`TracingSettings.resolve` reads `--otel` and the standard OpenTelemetry variables and says
whether traces are on; `start_tracing` then imports the optional `otel` extra, or says
how to install it. `Telemetry` is what the HTTP app is built with: it chooses, once,
which observing code the request path runs, so a server with everything off runs none.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from charter.errors import CharterError

if TYPE_CHECKING:  # the one module that imports OpenTelemetry, imported only when asked for
    from charter.telemetry._tracing import Tracing

__all__ = [
    "EXPORTERS",
    "MISSING_EXTRA",
    "Telemetry",
    "TracingSettings",
    "start_tracing",
]

#: The values `OTEL_TRACES_EXPORTER` may list (comma-separated). `none` still builds and
#: batches every span, then drops it: the cost of tracing without a collector.
EXPORTERS = frozenset({"otlp", "console", "none"})

#: What to say when traces are asked for and the `otel` extra is not installed.
MISSING_EXTRA = (
    "traces need OpenTelemetry's SDK, which is not installed ({missing}): install the extra"
    " with `pip install 'charter-governance[otel]'`, or serve without --otel"
)

_DEFAULT_SERVICE = "charter"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """How a serving process traces: plain values, so a supervisor can send them to workers.

    Attributes:
        service_name: `service.name` of the spans (`OTEL_SERVICE_NAME`, else `charter`).
        exporters: where spans go: `otlp` (to `OTEL_EXPORTER_OTLP_ENDPOINT`, over
            HTTP/protobuf), `console` (stdout, for a look), `none` (built and dropped).
    """

    service_name: str = _DEFAULT_SERVICE
    exporters: tuple[str, ...] = ("otlp",)

    @classmethod
    def resolve(
        cls, enabled: bool | None, environ: Mapping[str, str] | None = None
    ) -> TracingSettings | None:
        """The settings in force, or None when traces are off.

        Args:
            enabled: `--otel` (True), `--no-otel` (False), or neither (None): then traces
                are on when `OTEL_TRACES_EXPORTER` names an exporter or an OTLP endpoint is
                set, as OpenTelemetry's own auto-configuration reads them.
            environ: the environment (the process's when None).

        Raises:
            CharterError: `OTEL_TRACES_EXPORTER` names an exporter Charter does not ship
                (code `telemetry_invalid`).
        """
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" and enabled is None:
            return None
        named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
        named = [e for e in named if e]
        unknown = [e for e in named if e not in EXPORTERS]
        if unknown:
            raise CharterError(
                f"OTEL_TRACES_EXPORTER names `{unknown[0]}`; charter exports traces with"
                f" {', '.join(f'`{e}`' for e in sorted(EXPORTERS))}",
                code="telemetry_invalid",
            )
        if enabled is None:
            endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            enabled = bool(endpoint) or any(e != "none" for e in named)
        if not enabled:
            return None
        service = env.get("OTEL_SERVICE_NAME", "").strip() or _DEFAULT_SERVICE
        return cls(service_name=service, exporters=tuple(dict.fromkeys(named or ["otlp"])))

    def check_installed(self) -> None:
        """Raise, naming the extra, unless the packages these settings need are installed.

        Raises:
            CharterError: code `telemetry_unavailable`, with the command that installs them.
        """
        needed = ["opentelemetry.sdk.trace"]
        if "otlp" in self.exporters:
            needed.append("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        for module in needed:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # a parent package is missing
                found = False
            if not found:
                raise CharterError(
                    MISSING_EXTRA.format(missing=module), code="telemetry_unavailable"
                )


def start_tracing(settings: TracingSettings) -> Tracing:
    """A tracer provider of Charter's own, exporting as `settings` say.

    Raises:
        CharterError: the `otel` extra is not installed (code `telemetry_unavailable`).
    """
    settings.check_installed()
    # Imported here, not above: a server that does not trace never imports OpenTelemetry's
    # SDK (`tests/telemetry/test_tracing_off.py` holds it to that).
    from charter.telemetry._tracing import Tracing  # noqa: PLC0415

    return Tracing.from_settings(settings)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the HTTP app observes; `create_app` picks its request path from it once.

    Attributes:
        tracing: spans for every API route (None: no spans, no OpenTelemetry import).
        log_context: bind the request's ids (decision, trace, span, agent, action,
            approval) into structlog's context, so every log line emitted while the
            request is handled carries them.
        access_log: one log line per HTTP request (`charter.access`).
    """

    tracing: Tracing | None = None
    log_context: bool = False
    access_log: bool = False

    @property
    def observing(self) -> bool:
        """Whether the request path has anything to do beyond answering."""
        return self.tracing is not None or self.log_context or self.access_log
