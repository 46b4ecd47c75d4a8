"""The `breakers` section: circuit breakers on reported outcomes, checked into specs.

A breaker watches the outcomes of the actions it selects. When the share of failures
over its window reaches `failure_rate` (with at least `min_sample` outcomes), it opens:
the action needs approval or is denied (`then`) for `cool_down`, after which `half_open`
trial actions are let through, and it closes once they all succeed.
"""

from __future__ import annotations

from dataclasses import dataclass

from charter.policy._reader import Reader, Selector, selector
from charter.policy._source import Node

__all__ = ["BREAKER_EFFECTS", "BreakerSpec", "parse_breakers"]

#: What an open breaker makes of the actions it covers.
BREAKER_EFFECTS = ("require_approval", "deny")

_KEYS = (
    "actions",
    "agents",
    "cool_down",
    "failure_rate",
    "half_open",
    "id",
    "min_sample",
    "per_agent",
    "reason",
    "roles",
    "then",
    "window",
)


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    """One breaker as written: what it watches, when it trips, and what it does then."""

    id: str
    selector: Selector
    per_agent: bool
    window_seconds: int
    min_sample: int
    failure_rate: float
    cool_down_seconds: int
    half_open: int
    then: str
    reason: str
    node: Node


def parse_breakers(r: Reader, section: Node, into: list[BreakerSpec]) -> None:
    """Check a `breakers` list and append its breakers to `into`."""
    required = ("id", "actions", "window", "min_sample", "failure_rate", "cool_down", "then")
    for bid, what, node in r.identified(
        section, "`breakers`", "breaker", "breaker id", _KEYS, required
    ):
        then = node.value.get("then", "require_approval")
        if "then" in node.value and then not in BREAKER_EFFECTS:
            r.add(
                node.child("then"),
                "invalid_effect",
                f"`then` of {what} must be one of {', '.join(BREAKER_EFFECTS)}, not `{then}`",
            )
            then = "deny"  # fail closed while the problem is reported
        per_agent = node.value.get("per_agent", False)
        if not isinstance(per_agent, bool):
            r.add(node.child("per_agent"), "type", f"`per_agent` of {what} must be true or false")
            per_agent = False
        into.append(
            BreakerSpec(
                id=str(bid),
                selector=selector(r, node, what),
                per_agent=per_agent,
                window_seconds=r.duration(node, "window", what) or 0,
                min_sample=r.integer(node, "min_sample", what, minimum=1) or 1,
                failure_rate=r.fraction(node, "failure_rate", what) or 1.0,
                cool_down_seconds=r.duration(node, "cool_down", what) or 0,
                half_open=r.integer(node, "half_open", what, minimum=1) or 1,
                then=str(then),
                reason=r.text(node, "reason", what, default=f"breaker `{bid}` is open"),
                node=node,
            )
        )
