"""From buckets to figures: a group's slices summed over a window, and their drift.

Nothing here changes the book: a query reads the buckets of the slices it is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from charter.monitors._calibration import BINS, CalibrationCounts
from charter.monitors._config import NUMERIC, ActionPlan, MonitorConfig
from charter.monitors._drift import (
    OTHER,
    bin_counts,
    category_psi,
    effective_size,
    ks_pvalue,
    ks_statistic,
    psi,
    quantile_edges,
)
from charter.monitors._figures import DriftFigure, Figures, Level
from charter.monitors._quality import QualityTotals
from charter.monitors._windows import (
    ALLOWED,
    APPROVAL_REQUIRED,
    APPROVALS_ENDED,
    APPROVALS_REJECTED,
    AUTONOMOUS_OUTCOMES,
    AUTONOMOUS_SUCCESSES,
    CALIBRATION,
    CALIBRATION_SQUARED_ERROR,
    COMPLETENESS_CHECKED,
    COMPLETENESS_MISSING,
    DECISIONS,
    DENIED,
    ESCALATED,
    FIRST_DYNAMIC,
    GRANTS_REDEEMED,
    OUTCOMES,
    OVERDUE,
    REVIEWER_LATENCY,
    SECOND,
    SUCCESSES,
    TIME_TO_OUTCOME,
    Slice,
    format_time,
    weighted_percentiles,
)

__all__ = ["Span", "group_figures", "grouped_figures", "members"]

#: How many fields of a group key each level keeps: (agent, action, model id, version).
_LEVELS: Mapping[str, int] = {"model": 4, "action": 2, "agent": 1, "fleet": 0}

#: How many of the values the baseline never had a drift figure names.
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Span:
    """The buckets a query covers: the rates' window, and drift's recent and baseline."""

    end: int
    last: int
    window: int
    recent: int
    baseline: int

    @classmethod
    def at(cls, config: MonitorConfig, now: int, window_seconds: float) -> Span:
        """The span of a query at `now` (epoch microseconds) over `window_seconds`."""
        return cls(
            end=now,
            # The last bucket that began before `now`: at a bucket's edge, the one ending there.
            last=-(-now // (config.bucket_seconds * SECOND)) - 1,
            window=config.buckets(window_seconds),
            recent=config.buckets(config.recent_seconds),
            baseline=config.buckets(config.baseline_seconds),
        )


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


Chunk = tuple[Sequence[float], list[float] | None]


class _Totals:
    """The tallies of a group's slices over a window, added up, and their latency samples."""

    def __init__(self) -> None:
        self.fixed = [0.0] * FIRST_DYNAMIC
        self.reviewer: list[Chunk] = []
        self.reviewer_seen = 0
        self.to_outcome: list[Chunk] = []
        self.to_outcome_seen = 0
        self.quality = QualityTotals()

    def add(self, piece: Slice, plan: ActionPlan | None, first: int, last: int) -> None:
        """Add the slice's buckets `first` to `last`."""
        fixed = self.fixed
        keys = plan.codes.keys if plan is not None else {}
        action = piece.action
        sums = piece.tally.sums(first, last)
        for code, amount in sums.items():
            if code < FIRST_DYNAMIC:
                fixed[code] += amount
            elif (key := keys.get(code)) is not None:
                self.quality.add(action, key, amount)
        # Completeness per action: each of its decisions is checked for all its fields.
        self.quality.completeness(
            action, sums.get(COMPLETENESS_CHECKED, 0), sums.get(COMPLETENESS_MISSING, 0)
        )
        self.reviewer_seen += _chunk(piece, REVIEWER_LATENCY, first, last, self.reviewer)
        self.to_outcome_seen += _chunk(piece, TIME_TO_OUTCOME, first, last, self.to_outcome)

    def count(self, code: int) -> int:
        return round(self.fixed[code])

    def calibration(self) -> CalibrationCounts:
        """The calibration sums of the window, as `CalibrationCounts`."""
        counts = CalibrationCounts()
        counts.squared_error = self.fixed[CALIBRATION_SQUARED_ERROR]
        for k in range(BINS):
            counts.count[k] = round(self.fixed[CALIBRATION + 3 * k])
            counts.confidence[k] = self.fixed[CALIBRATION + 3 * k + 1]
            counts.successes[k] = round(self.fixed[CALIBRATION + 3 * k + 2])
        return counts


def _chunk(piece: Slice, name: str, first: int, last: int, chunks: list[Chunk]) -> int:
    """Add the values of column `name` in buckets `first` to `last` to `chunks`; how many."""
    column = piece.columns.get(name)
    if column is None:
        return 0
    values, weights, seen = column.window(first, last)
    if seen:
        chunks.append((values, weights))
    return seen


def _order(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    """A sort key for group keys, None (an unknown model) first."""
    return tuple((part is not None, part or "") for part in key)


def members(slices: Iterable[Slice], agent: str | None, action: str | None) -> list[Slice]:
    """The slices of `agent` and `action` (each if named), sorted by key."""
    return sorted(
        (
            s
            for s in slices
            if (agent is None or s.key[0] == agent) and (action is None or s.key[1] == action)
        ),
        key=lambda s: _order(s.key),
    )


def grouped_figures(
    slices: Iterable[Slice],
    plans: Mapping[str, ActionPlan],
    config: MonitorConfig,
    span: Span,
    agent: str | None,
    action: str | None,
    level: Level,
) -> list[Figures]:
    """The figures of each group at `level` of the slices of `agent` and `action` (if named).

    Groups come sorted by key; the fleet level always gives one, empty if nothing matched.
    """
    if level not in _LEVELS:
        raise ValueError(f"`{level}` is no level: use model, action, agent or fleet")
    width = _LEVELS[level]
    groups: dict[tuple[str | None, ...], list[Slice]] = {}
    for piece in members(slices, agent, action):
        groups.setdefault(piece.key[:width], []).append(piece)
    if level == "fleet" and not groups:
        groups[()] = []
    out = []
    for group in sorted(groups, key=_order):
        padded = (*group, *(None,) * (4 - width))
        full = (padded[0], padded[1], padded[2], padded[3])
        out.append(group_figures(level, full, groups[group], plans, config, span))
    return out


def group_figures(
    level: Level,
    key: tuple[str | None, str | None, str | None, str | None],
    slices: Sequence[Slice],
    plans: Mapping[str, ActionPlan],
    config: MonitorConfig,
    span: Span,
) -> Figures:
    """The figures of the group of `slices` at `level` over `span`.

    `key` is the group's (agent, action, model id, model version), None above its level.
    """
    totals = _Totals()
    first = span.last - span.window + 1
    for piece in slices:
        totals.add(piece, plans.get(piece.action), first, span.last)
    quality = totals.quality
    c = totals.count
    decisions, outcomes, ended = c(DECISIONS), c(OUTCOMES), c(APPROVALS_ENDED)
    review = weighted_percentiles(totals.reviewer, (0.5, 0.95))
    to_outcome = weighted_percentiles(totals.to_outcome, (0.5, 0.95))
    calibration = totals.calibration()
    checked = round(sum(s[0] for s in quality.sources.values()))
    stale = round(sum(s[1] for s in quality.sources.values()))
    no_age = round(sum(s[2] for s in quality.sources.values()))
    ranged = round(sum(r[0] for r in quality.ranges.values()))
    outside = round(sum(r[1] for r in quality.ranges.values()))
    completeness = round(quality.checked), round(quality.incomplete)
    return Figures(
        level=level,
        agent=key[0],
        action=key[1],
        model_id=key[2],
        model_version=key[3],
        window_seconds=span.window * config.bucket_seconds,
        end=format_time(span.end),
        decisions=decisions,
        decisions_allowed=c(ALLOWED),
        decisions_require_approval=c(APPROVAL_REQUIRED),
        decisions_escalated=c(ESCALATED),
        decisions_denied=c(DENIED),
        autonomous_rate=_rate(c(ALLOWED), decisions),
        approval_rate=_rate(c(APPROVAL_REQUIRED), decisions),
        escalation_rate=_rate(c(ESCALATED), decisions),
        deny_rate=_rate(c(DENIED), decisions),
        approvals_ended=ended,
        approvals_rejected=c(APPROVALS_REJECTED),
        rejection_rate=_rate(c(APPROVALS_REJECTED), ended),
        grants_redeemed=c(GRANTS_REDEEMED),
        outcomes=outcomes,
        outcomes_failed=outcomes - c(SUCCESSES),
        outcomes_overdue=c(OVERDUE),
        success_rate=_rate(c(SUCCESSES), outcomes),
        autonomous_outcomes=c(AUTONOMOUS_OUTCOMES),
        autonomous_success_rate=_rate(c(AUTONOMOUS_SUCCESSES), c(AUTONOMOUS_OUTCOMES)),
        reviewer_latency_samples=totals.reviewer_seen,
        reviewer_latency_p50_seconds=review[0],
        reviewer_latency_p95_seconds=review[1],
        time_to_outcome_samples=totals.to_outcome_seen,
        time_to_outcome_p50_seconds=to_outcome[0],
        time_to_outcome_p95_seconds=to_outcome[1],
        calibration_samples=calibration.samples,
        brier_score=calibration.brier(),
        expected_calibration_error=calibration.ece(),
        reliability=tuple(calibration.table()),
        drift=tuple(_drift(slices, plans, config, span)),
        freshness_checked=checked,
        freshness_stale=stale,
        freshness_missing_age=no_age,
        freshness_stale_rate=_rate(stale, checked),
        freshness_missing_age_rate=_rate(no_age, checked),
        completeness_checked=completeness[0],
        completeness_missing=completeness[1],
        completeness_missing_rate=_rate(completeness[1], completeness[0]),
        range_checked=ranged,
        range_violations=outside,
        range_violation_rate=_rate(outside, ranged),
        worst_sources=quality.worst_sources(),
        worst_fields=quality.worst_fields(),
    )


def _drift(
    slices: Sequence[Slice], plans: Mapping[str, ActionPlan], config: MonitorConfig, span: Span
) -> Iterable[DriftFigure]:
    """Each watched field of each action of the group: recent window against baseline."""
    by_action: dict[str, list[Slice]] = {}
    for piece in slices:
        by_action.setdefault(piece.action, []).append(piece)
    recent_first = span.last - span.recent + 1
    baseline_first = recent_first - span.baseline
    cap = config.max_drift_samples
    for action in sorted(by_action):
        plan = plans.get(action)
        if plan is None:
            continue
        group = by_action[action]
        recent = _Gathered(group, plan, recent_first, span.last)
        baseline = _Gathered(group, plan, baseline_first, recent_first - 1)
        for path, kind in sorted(plan.sampled()):
            if kind == NUMERIC:
                figure = _numeric(action, path, baseline, recent, cap)
            else:
                figure = _categorical(action, path, baseline, recent)
            if figure is not None:
                yield figure


class _Gathered:
    """The samples and value counts of one action's slices over buckets `first` to `last`."""

    def __init__(self, slices: Sequence[Slice], plan: ActionPlan, first: int, last: int) -> None:
        self._slices = slices
        self._first, self._last = first, last
        #: Per categorical field, the count of each of its values.
        self.categories: dict[str, dict[str, float]] = {}
        keys = plan.categories.keys
        for piece in slices:
            for code, n in piece.categories.sums(first, last).items():
                key = keys.get(code)
                if key is not None:
                    counts = self.categories.setdefault(key[0], {})
                    counts[key[1]] = counts.get(key[1], 0) + n

    def values(self, path: str, cap: int) -> tuple[list[float], list[float] | None, int]:
        """A field's values, their weights (None: all 1) and the values seen, at most `cap`."""
        values: list[float] = []
        weights: list[float] = []
        thinned = False
        seen = 0
        for piece in self._slices:
            column = piece.columns.get(path)
            if column is None:
                continue
            kept, weighed, offered = column.window(self._first, self._last)
            if not offered:
                continue
            seen += offered
            values.extend(kept)
            if weighed is None:
                weights.extend([1.0] * len(kept))
            else:
                weights.extend(weighed)
                thinned = True
        if len(values) > cap:
            # Every k-th value, standing for k: deterministic, and spread over every bucket.
            k = math.ceil(len(values) / cap)
            values = values[::k]
            weights = [w * k for w in weights[::k]]
            thinned = True
        return values, weights if thinned else None, seen


def _numeric(
    action: str, path: str, baseline: _Gathered, recent: _Gathered, cap: int
) -> DriftFigure | None:
    base, base_w, base_n = baseline.values(path, cap)
    now, now_w, now_n = recent.values(path, cap)
    if not base and not now:
        return None
    if not base or not now:
        return DriftFigure(action, path, NUMERIC, base_n, now_n, None)
    edges = quantile_edges(base, 10, base_w)
    d = ks_statistic(base, now, base_w, now_w)
    sizes = [len(base) if base_w is None else effective_size(base_w)]
    sizes.append(len(now) if now_w is None else effective_size(now_w))
    return DriftFigure(
        action,
        path,
        NUMERIC,
        base_n,
        now_n,
        psi(bin_counts(base, edges, base_w), bin_counts(now, edges, now_w)),
        ks_statistic=d,
        ks_pvalue=None if d is None else ks_pvalue(d, sizes[0], sizes[1]),
    )


def _categorical(
    action: str, path: str, baseline: _Gathered, recent: _Gathered
) -> DriftFigure | None:
    base = baseline.categories.get(path, {})
    now = recent.categories.get(path, {})
    if not base and not now:
        return None
    base_n, now_n = round(sum(base.values())), round(sum(now.values()))
    if not base or not now:
        return DriftFigure(action, path, "categorical", base_n, now_n, None)
    new = sorted(((n, v) for v, n in now.items() if v not in base and v != OTHER), key=_busiest)
    return DriftFigure(
        action,
        path,
        "categorical",
        base_n,
        now_n,
        category_psi(base, now),
        new_values=len(new),
        new_value_share=sum(n for n, _ in new) / now_n,
        new_value_examples=tuple(v for _, v in new[:EXAMPLES]),
    )


def _busiest(item: tuple[float, str]) -> tuple[float, str]:
    return (-item[0], item[1])
