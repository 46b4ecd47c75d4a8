"""W3C Trace Context without OpenTelemetry: read and write `traceparent` headers.

The server reads an agent's `traceparent` on every request, traced or not, so that a
decision records the agent's trace id in the ledger; the SDK writes one on the requests
that follow a decision. Neither needs OpenTelemetry for that, so this module parses and
formats the header itself (https://www.w3.org/TR/trace-context/) and never imports it.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SAMPLED",
    "TraceParent",
    "current_traceparent",
    "is_trace_id",
    "new_span_id",
    "new_trace_id",
    "span_id_for",
    "trace_id_of",
]

#: The `sampled` bit of the trace flags.
SAMPLED = 0x01

# version-traceid-parentid-flags, lowercase hex. A version other than 00 may carry more
# fields after a dash (the spec's rule for versions it does not know yet).
_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One `traceparent` header: the trace, the caller's span in it, and the flags.

    Attributes:
        trace_id: 32 lowercase hex digits, not all zero.
        span_id: the parent span, 16 lowercase hex digits, not all zero.
        flags: the trace flags; bit 0 is `sampled`.
    """

    trace_id: str
    span_id: str
    flags: int = SAMPLED

    @classmethod
    def parse(cls, header: str | None) -> TraceParent | None:
        """The header's fields, or None when it is absent or not a valid `traceparent`.

        An invalid header is ignored, as the spec asks: the request goes on in a trace of
        its own rather than being refused.
        """
        if not header:
            return None
        match = _HEADER.fullmatch(header.strip())
        if match is None:
            return None
        version, trace_id, span_id, flags, more = match.groups()
        if version == "ff" or (version == "00" and more is not None):
            return None
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        return cls(trace_id, span_id, int(flags, 16))

    @property
    def sampled(self) -> bool:
        """Whether the caller records this trace."""
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        """The header's value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def trace_id_of(header: str | None) -> str | None:
    """The trace id of a `traceparent` header, or None when there is no valid one."""
    parent = TraceParent.parse(header)
    return None if parent is None else parent.trace_id


def is_trace_id(value: object) -> bool:
    """Whether `value` is a W3C trace id (32 lowercase hex digits, not all zero)."""
    return (
        isinstance(value, str) and _TRACE_ID.fullmatch(value) is not None and value != _ZERO_TRACE
    )


# Trace and span ids need to be unique, not secret: OpenTelemetry's own generator draws
# them from `random` too, a tenth of the cost of the system's random source.
def new_trace_id() -> str:
    """A random trace id."""
    while not (bits := random.getrandbits(128)):  # pragma: no cover - 2^-128
        pass
    return f"{bits:032x}"


def new_span_id() -> str:
    """A random span id."""
    while not (bits := random.getrandbits(64)):  # pragma: no cover - 2^-64
        pass
    return f"{bits:016x}"


def span_id_for(decision_id: str) -> str:
    """The span id of a decision's span, derived from the decision's id.

    A reviewer acts minutes or days after the decision, perhaps on another replica, and
    only the decision's trace id is in the ledger. Deriving the decision span's id from
    the decision's id lets any process name that span as the parent of an approval step,
    so the step is a child of the decision, not a stranger in its trace.
    """
    digest = hashlib.blake2b(decision_id.encode(), digest_size=8, person=b"charter.decision")
    span_id = digest.hexdigest()
    return span_id if span_id != _ZERO_SPAN else "0" * 15 + "1"


def current_traceparent() -> tuple[str, str | None] | None:
    """The `traceparent` (and `tracestate`) of the caller's current OpenTelemetry span.

    None when no span is current. OpenTelemetry is never imported here: a process that
    has not imported `opentelemetry.trace` has no current span, and an agent that traces
    has imported it long before it asks Charter anything.
    """
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    header = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    state = context.trace_state.to_header() if context.trace_state else None
    return header, state or None
