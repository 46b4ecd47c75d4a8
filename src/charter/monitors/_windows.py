"""Time buckets and slices: what a window query sums, and the codes of what it counts.

Every figure is kept per fixed time bucket (`bucket_seconds` long, aligned on the Unix
epoch) of one slice (agent, action, model id, model version). A slice holds a `Tally`
of its counters, each bucket's under fixed codes (`CODES`, the calibration bins) and
the action's own (its data sources and checked fields); a `Tally` of its categorical
values; and a `Column` per sampled figure (latencies, each numeric drift field). A
window query sums the entries of its buckets; what is older than the book's horizon is
dropped. Time is whole microseconds since the epoch throughout.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence

from charter.monitors._calibration import BINS
from charter.monitors._columns import Column, Tally

__all__ = [
    "ALLOWED",
    "APPROVALS_ENDED",
    "APPROVALS_REJECTED",
    "APPROVAL_REQUIRED",
    "AUTONOMOUS_OUTCOMES",
    "AUTONOMOUS_SUCCESSES",
    "CALIBRATION",
    "CALIBRATION_SQUARED_ERROR",
    "CODES",
    "COMPLETENESS_CHECKED",
    "COMPLETENESS_MISSING",
    "DECISIONS",
    "DENIED",
    "ESCALATED",
    "FIRST_DYNAMIC",
    "GRANTS_REDEEMED",
    "OUTCOMES",
    "OVERDUE",
    "REVIEWER_LATENCY",
    "SECOND",
    "SUCCESSES",
    "TIME_TO_OUTCOME",
    "Slice",
    "SliceKey",
    "format_time",
    "micros",
    "percentile",
    "weighted_percentiles",
]

#: A slice: (agent, action, model id, model version); the model is None when unknown.
SliceKey = tuple[str, str, str | None, str | None]

#: The fixed counters of every tally, by code (their position here).
CODES = (
    "decisions",
    "allowed",
    "approval_required",
    "escalated",
    "denied",
    "approvals_ended",
    "approvals_rejected",
    "grants_redeemed",
    "outcomes",
    "successes",
    "overdue",
    "autonomous_outcomes",
    "autonomous_successes",
    "completeness_checked",
    "completeness_missing",
    "calibration_squared_error",
)
(
    DECISIONS,
    ALLOWED,
    APPROVAL_REQUIRED,
    ESCALATED,
    DENIED,
    APPROVALS_ENDED,
    APPROVALS_REJECTED,
    GRANTS_REDEEMED,
    OUTCOMES,
    SUCCESSES,
    OVERDUE,
    AUTONOMOUS_OUTCOMES,
    AUTONOMOUS_SUCCESSES,
    COMPLETENESS_CHECKED,
    COMPLETENESS_MISSING,
    CALIBRATION_SQUARED_ERROR,
) = range(len(CODES))
#: Calibration bin k's count, confidence sum and successes are codes
#: CALIBRATION + 3k, + 3k + 1 and + 3k + 2.
CALIBRATION = len(CODES)
#: Codes from here on are an action's own (its data sources and checked fields).
FIRST_DYNAMIC = CALIBRATION + 3 * BINS

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
#: Microseconds in a second: the book's unit of time.
SECOND = 1_000_000


def micros(moment: str | dt.datetime) -> int:
    """Microseconds since the Unix epoch of an aware `datetime` or the ledger's RFC 3339 text.

    Whole microseconds, the ledger's resolution: exact, where a float of seconds since
    the epoch is only good to a quarter of a microsecond, and a bucket edge or a
    duration must not depend on rounding.

    Raises:
        ValueError: the text is not an ISO 8601 time, or the time carries no timezone
            (Charter never guesses one).
    """
    when = dt.datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    if when.tzinfo is None:
        raise ValueError(f"`{moment}` carries no timezone; Charter never guesses one")
    return (when - _EPOCH) // _MICROSECOND


def format_time(moment: int) -> str:
    """The ledger's time form (RFC 3339 UTC, microseconds, `Z`) of epoch microseconds."""
    when = _EPOCH + dt.timedelta(microseconds=moment)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Slice:
    """Everything the book holds of one (agent, action, model id, model version).

    `tally` holds the counters (fixed codes, then the action's data sources and checked
    fields), `categories` the counts of categorical drift fields' values (by the
    action's codes), `columns` the sampled figures by name: a field's path, or
    `REVIEWER_LATENCY` and `TIME_TO_OUTCOME`.
    """

    __slots__ = ("categories", "columns", "key", "tally")

    def __init__(self, key: SliceKey) -> None:
        self.key = key
        self.tally = Tally()
        self.categories = Tally()
        self.columns: dict[str, Column] = {}

    @property
    def agent(self) -> str:
        """The slice's agent."""
        return self.key[0]

    @property
    def action(self) -> str:
        """The slice's action."""
        return self.key[1]

    def column(self, name: str) -> Column:
        """The column of `name`, made if it is new."""
        found = self.columns.get(name)
        if found is None:
            found = self.columns[name] = Column()
        return found

    def drop_before(self, first: int) -> bool:
        """Forget what is older than bucket `first`; whether anything is left."""
        self.tally.drop_before(first)
        self.categories.drop_before(first)
        for name in list(self.columns):
            column = self.columns[name]
            column.drop_before(first)
            if not column.buckets:
                del self.columns[name]
        return bool(len(self.tally) or len(self.categories) or self.columns)


#: The columns of the two latencies (field paths start with `args.` or `context.`).
REVIEWER_LATENCY = "@reviewer_latency"
TIME_TO_OUTCOME = "@time_to_outcome"


def weighted_percentiles(
    chunks: Iterable[tuple[Sequence[float], list[float] | None]], quantiles: Sequence[float]
) -> list[float | None]:
    """`percentile` of several chunks of values (weights None: 1 each), sorting once."""
    pairs: list[tuple[float, float]] = []
    for values, weights in chunks:
        if weights is None:
            pairs.extend((v, 1.0) for v in values)
        else:
            pairs.extend(zip(values, weights, strict=True))
    if not pairs:
        return [None for _ in quantiles]
    pairs.sort()
    return _ranked(pairs, quantiles)


def percentile(
    values: Sequence[float], q: float, weights: Sequence[float] | None = None
) -> float | None:
    """The nearest-rank `q` quantile (0 <= q <= 1) of `values`; None when empty.

    The smallest value `x` such that the values at most `x` carry at least `q` of the
    total weight W: with unit weights, the value of rank ceil(q * n) (and the minimum
    for q = 0). No interpolation, so the answer is always a value that was seen:
    p50 of [1, 2, 3, 4] is 2, p95 of 1..100 is 95.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, got `{q}`")
    if weights is None:
        pairs = sorted((v, 1.0) for v in values)
    else:
        if len(weights) != len(values):
            raise ValueError("`weights` must give one weight per value")
        pairs = sorted(zip(values, weights, strict=True))
    if not pairs:
        return None
    return _ranked(pairs, [q])[0]


def _ranked(pairs: Sequence[tuple[float, float]], quantiles: Sequence[float]) -> list[float | None]:
    """Nearest-rank quantiles of sorted (value, weight) pairs."""
    total = math.fsum(w for _, w in pairs)
    # Rounding in q * W (0.1 * 30 is 3.0000000000000004) must not skip a rank.
    slack = 1e-9 * total
    out: list[float | None] = []
    for q in quantiles:
        target = q * total - slack
        running = 0.0
        found = pairs[-1][0]
        for value, weight in pairs:
            running += weight
            if running >= target:
                found = value
                break
        out.append(found)
    return out
