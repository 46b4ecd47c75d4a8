"""Helpers shared by the telemetry tests: requests, headers, reading spans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

#: A W3C example trace: the agent's span `00f067aa0ba902b7` in trace `4bf92f35...`.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{AGENT_SPAN}-01"


@dataclass(frozen=True)
class Secrets:
    """An agent key for `support-bot` and a reviewer key of the `finance` group."""

    agent: str
    reviewer: str


def bearer(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **headers}


def refund(amount: float = 40, order: int = 1001, **extra: Any) -> dict[str, Any]:
    """A refund by `support-bot`: 40 is allowed alone, above 1000 finance approves it."""
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{order}", "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "customer received a damaged item"},
        **extra,
    }


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def hex_parent(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called `name`."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]
