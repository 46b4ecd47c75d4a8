"""Small formatting helpers the templates use: times, risk tiers, argument summaries.

Pure functions of their inputs (`now` is passed in), so the pages render the same way in
tests as in production.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "VERDICT_WORDS",
    "arg_summary",
    "clock_time",
    "parse_time",
    "percent",
    "relative",
    "risk_tier",
    "verdict_words",
    "width_class",
]


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None when absent or malformed."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def clock_time(text: str | None) -> str:
    """`2026-03-02 10:04:05 UTC` for a ledger timestamp; the text itself when unparsable."""
    moment = parse_time(text)
    if moment is None:
        return text or ""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def relative(text: str | None, now: dt.datetime) -> str:
    """How far a time is from `now`, in words a glance takes in: `in 3h 58m`, `4m ago`."""
    moment = parse_time(text)
    if moment is None:
        return ""
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def risk_tier(risk: object, max_risk: object = None) -> str:
    """`low`, `medium` or `high`: the colour of a risk badge.

    Against the agent's autonomy limit when known (above it is why a person is asked),
    else against fixed bands.
    """
    try:
        value = int(str(risk))
    except ValueError:
        return "unknown"
    if isinstance(max_risk, int) and max_risk > 0:
        if value > max_risk:
            return "high"
        return "medium" if value > max_risk / 2 else "low"
    if value >= 45:
        return "high"
    return "medium" if value >= 20 else "low"


def width_class(value: float, whole: float) -> str:
    """A CSS class `w-NN` (steps of 5) for a bar of `value` out of `whole`.

    Styles come from the stylesheet only: the Content-Security-Policy refuses inline style
    attributes.
    """
    if whole <= 0:
        return "w-0"
    share = max(0.0, min(1.0, value / whole))
    return f"w-{round(share * 20) * 5}"


def percent(value: object) -> str:
    """A confidence such as 0.82 as `82%`; empty when not a number in 0..1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if not 0 <= value <= 1:
        return ""
    return f"{round(value * 100)}%"


def arg_summary(args: Mapping[str, Any], most: int = 3, width: int = 28) -> list[tuple[str, str]]:
    """The first few arguments as short (name, value) pairs for one line of the inbox."""
    out: list[tuple[str, str]] = []
    for key in list(args)[:most]:
        value = args[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(text) > width:
            text = text[: width - 1] + "…"
        out.append((str(key), text))
    return out


#: Verdicts as a reviewer says them.
VERDICT_WORDS = {
    "allow": "allowed",
    "require_approval": "needs approval",
    "escalate": "escalated",
    "deny": "denied",
}


def verdict_words(verdict: object) -> str:
    """`needs approval` for `require_approval`; unknown verdicts as they are."""
    return VERDICT_WORDS.get(str(verdict), str(verdict))
