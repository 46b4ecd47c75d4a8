"""The figures a monitor book reports, and the stable names they are published under.

The JSON field names below become the API's figures and the metrics endpoint's names
(`charter_monitor_<name>`), so they follow one scheme: snake_case; counts are whole
numbers named for what they count; rates are shares from 0 to 1 named `*_rate`;
durations are seconds named `*_seconds`; a figure of an empty sample is None, never 0.
`FIGURE_FIELDS` names, for every figure, the count that is its sample size, so an alert
rule can demand a minimum sample before it fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from charter.monitors._calibration import ReliabilityBin
from charter.monitors._quality import FieldQuality, SourceQuality

__all__ = [
    "FIGURE_FIELDS",
    "DriftFigure",
    "FigureField",
    "Figures",
    "Level",
    "Series",
    "SeriesPoint",
]

#: The grouping a figure covers: one model of an agent's action, the action (every
#: model), the agent (every action), or the whole fleet.
Level = Literal["model", "action", "agent", "fleet"]


@dataclass(frozen=True, slots=True)
class FigureField:
    """What one published figure means and which count is its sample size (None: itself)."""

    help: str
    sample: str | None = None


#: Every field of `Figures.to_json`, in order, with its meaning and its sample size.
FIGURE_FIELDS: Mapping[str, FigureField] = {
    "level": FigureField("the grouping: model, action, agent or fleet"),
    "agent": FigureField("the agent, or null for the fleet"),
    "action": FigureField("the action, or null above the action level"),
    "model_id": FigureField("the agent's model id (model level only)"),
    "model_version": FigureField("the agent's model version (model level only)"),
    "window_seconds": FigureField("the window the rates cover, in whole buckets"),
    "end": FigureField("the end of the window (RFC 3339 UTC)"),
    "decisions": FigureField("decisions made in the window (reviewers' re-decisions excluded)"),
    "decisions_allowed": FigureField("decisions that let the agent act alone"),
    "decisions_require_approval": FigureField("decisions that waited for approval"),
    "decisions_escalated": FigureField("decisions handed to a person"),
    "decisions_denied": FigureField("decisions refused"),
    "autonomous_rate": FigureField("share of decisions allowed", "decisions"),
    "approval_rate": FigureField("share of decisions that required approval", "decisions"),
    "escalation_rate": FigureField("share of decisions escalated", "decisions"),
    "deny_rate": FigureField("share of decisions denied", "decisions"),
    "approvals_ended": FigureField(
        "approvals that ended: approved (quorum met, by votes or a modification), denied, expired"
    ),
    "approvals_rejected": FigureField("approvals that ended denied or expired"),
    "rejection_rate": FigureField("share of ended approvals rejected", "approvals_ended"),
    "grants_redeemed": FigureField("grants redeemed (actions started)"),
    "outcomes": FigureField("outcomes reported, overdue ones included as failures"),
    "outcomes_failed": FigureField("outcomes that failed, overdue ones included"),
    "outcomes_overdue": FigureField("outcomes that never came by their due time"),
    "success_rate": FigureField("share of outcomes that succeeded", "outcomes"),
    "autonomous_outcomes": FigureField("outcomes of decisions allowed with no person"),
    "autonomous_success_rate": FigureField(
        "share of autonomous outcomes that succeeded", "autonomous_outcomes"
    ),
    "reviewer_latency_samples": FigureField("ended approvals with a known opening"),
    "reviewer_latency_p50_seconds": FigureField(
        "median time from an approval's opening to its end", "reviewer_latency_samples"
    ),
    "reviewer_latency_p95_seconds": FigureField(
        "95th percentile of reviewer latency", "reviewer_latency_samples"
    ),
    "time_to_outcome_samples": FigureField("outcomes reported (not overdue)"),
    "time_to_outcome_p50_seconds": FigureField(
        "median time from decision to outcome", "time_to_outcome_samples"
    ),
    "time_to_outcome_p95_seconds": FigureField(
        "95th percentile of time to outcome", "time_to_outcome_samples"
    ),
    "calibration_samples": FigureField("outcomes of decisions that stated a confidence"),
    "brier_score": FigureField(
        "mean squared error of confidence as a forecast of success", "calibration_samples"
    ),
    "expected_calibration_error": FigureField(
        "weighted mean gap of confidence and success over 10 bins", "calibration_samples"
    ),
    "reliability": FigureField("per confidence bin: count, mean confidence, success rate"),
    "drift": FigureField("per watched field: PSI, KS and new values, recent against baseline"),
    "freshness_checked": FigureField("data sources checked against their age limit"),
    "freshness_stale": FigureField("data sources older than their limit"),
    "freshness_missing_age": FigureField("data sources checked that gave no age"),
    "freshness_stale_rate": FigureField("share of checked sources stale", "freshness_checked"),
    "freshness_missing_age_rate": FigureField(
        "share of checked sources with no age", "freshness_checked"
    ),
    "completeness_checked": FigureField("decisions of actions with required fields"),
    "completeness_missing": FigureField("those that lacked at least one required field"),
    "completeness_missing_rate": FigureField(
        "share of checked decisions lacking a required field", "completeness_checked"
    ),
    "range_checked": FigureField("field values checked against a declared range"),
    "range_violations": FigureField("values outside their range, or no number"),
    "range_violation_rate": FigureField("share of checked values out of range", "range_checked"),
    "worst_sources": FigureField("the data sources failing most checks, worst first"),
    "worst_fields": FigureField("the fields failing most checks (missing, range), worst first"),
}


@dataclass(frozen=True, slots=True)
class DriftFigure:
    """The drift of one watched field of one action: its recent window against its baseline.

    Numeric fields give `psi` (over the baseline's deciles), `ks_statistic` and
    `ks_pvalue`; categorical ones give `psi` over the values' shares and the values the
    baseline never had. Sample sizes count the values observed (thinned or not);
    figures of an empty side are None.
    """

    action: str
    field: str
    kind: str
    baseline_samples: int
    recent_samples: int
    psi: float | None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    new_values: int | None = None
    new_value_share: float | None = None
    new_value_examples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The drift as plain JSON: every key always present."""
        return {
            "action": self.action,
            "field": self.field,
            "kind": self.kind,
            "baseline_samples": self.baseline_samples,
            "recent_samples": self.recent_samples,
            "psi": self.psi,
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "new_values": self.new_values,
            "new_value_share": self.new_value_share,
            "new_value_examples": list(self.new_value_examples),
        }


@dataclass(frozen=True, slots=True)
class Figures:
    """The monitors' figures of one group (see `Level`) over one window.

    Field by field, `FIGURE_FIELDS` says what each means and which count is its sample.
    Rates and percentiles are None when their sample is empty.
    """

    level: Level
    agent: str | None
    action: str | None
    model_id: str | None
    model_version: str | None
    window_seconds: int
    end: str
    decisions: int = 0
    decisions_allowed: int = 0
    decisions_require_approval: int = 0
    decisions_escalated: int = 0
    decisions_denied: int = 0
    autonomous_rate: float | None = None
    approval_rate: float | None = None
    escalation_rate: float | None = None
    deny_rate: float | None = None
    approvals_ended: int = 0
    approvals_rejected: int = 0
    rejection_rate: float | None = None
    grants_redeemed: int = 0
    outcomes: int = 0
    outcomes_failed: int = 0
    outcomes_overdue: int = 0
    success_rate: float | None = None
    autonomous_outcomes: int = 0
    autonomous_success_rate: float | None = None
    reviewer_latency_samples: int = 0
    reviewer_latency_p50_seconds: float | None = None
    reviewer_latency_p95_seconds: float | None = None
    time_to_outcome_samples: int = 0
    time_to_outcome_p50_seconds: float | None = None
    time_to_outcome_p95_seconds: float | None = None
    calibration_samples: int = 0
    brier_score: float | None = None
    expected_calibration_error: float | None = None
    reliability: tuple[ReliabilityBin, ...] = ()
    drift: tuple[DriftFigure, ...] = ()
    freshness_checked: int = 0
    freshness_stale: int = 0
    freshness_missing_age: int = 0
    freshness_stale_rate: float | None = None
    freshness_missing_age_rate: float | None = None
    completeness_checked: int = 0
    completeness_missing: int = 0
    completeness_missing_rate: float | None = None
    range_checked: int = 0
    range_violations: int = 0
    range_violation_rate: float | None = None
    worst_sources: tuple[SourceQuality, ...] = ()
    worst_fields: tuple[FieldQuality, ...] = ()

    def max_psi(self) -> dict[str, float]:
        """The largest PSI of each watched field path across the group's actions."""
        out: dict[str, float] = {}
        for drift in self.drift:
            if drift.psi is not None and drift.psi > out.get(drift.field, -1.0):
                out[drift.field] = drift.psi
        return out

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON, keyed and ordered as `FIGURE_FIELDS`."""
        out: dict[str, Any] = {}
        for name in FIGURE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = [item.to_json() for item in value]
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a series: the figures of one step, ending at `end`.

    Its rates cover the step; `max_psi` is each field's largest drift PSI at `end`
    (recent against baseline, as `Figures.drift` would have said then).
    """

    end: str
    decisions: int
    escalation_rate: float | None
    reviewer_latency_samples: int
    reviewer_latency_p50_seconds: float | None
    outcomes: int
    success_rate: float | None
    calibration_samples: int
    expected_calibration_error: float | None
    max_psi: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, figures: Figures) -> SeriesPoint:
        """The point that `figures` (of one step) give."""
        return cls(
            end=figures.end,
            decisions=figures.decisions,
            escalation_rate=figures.escalation_rate,
            reviewer_latency_samples=figures.reviewer_latency_samples,
            reviewer_latency_p50_seconds=figures.reviewer_latency_p50_seconds,
            outcomes=figures.outcomes,
            success_rate=figures.success_rate,
            calibration_samples=figures.calibration_samples,
            expected_calibration_error=figures.expected_calibration_error,
            max_psi=figures.max_psi(),
        )

    def to_json(self) -> dict[str, Any]:
        """The point as plain JSON (`max_psi` keyed by field path, sorted)."""
        return {
            "end": self.end,
            "decisions": self.decisions,
            "escalation_rate": self.escalation_rate,
            "reviewer_latency_samples": self.reviewer_latency_samples,
            "reviewer_latency_p50_seconds": self.reviewer_latency_p50_seconds,
            "outcomes": self.outcomes,
            "success_rate": self.success_rate,
            "calibration_samples": self.calibration_samples,
            "expected_calibration_error": self.expected_calibration_error,
            "max_psi": {k: self.max_psi[k] for k in sorted(self.max_psi)},
        }


@dataclass(frozen=True, slots=True)
class Series:
    """Figures over time for one agent (or one of its actions), oldest point first."""

    agent: str
    action: str | None
    step_seconds: int
    points: tuple[SeriesPoint, ...]

    def to_json(self) -> dict[str, Any]:
        """The series as plain JSON."""
        return {
            "agent": self.agent,
            "action": self.action,
            "step_seconds": self.step_seconds,
            "points": [p.to_json() for p in self.points],
        }
