"""Monitors: rolling figures over the ledger's events, per agent, action and model.

A `MonitorBook` folds each ledger event once (`apply`) into fixed time buckets per
slice (agent, action, model id, model version), so every figure can be read per model
(an upgrade shows as a step), per action, per agent and for the fleet, over any
window the book still holds, without rescanning anything:

- decisions and their verdict rates (autonomous, approval, escalation, deny);
- approvals: rejection rate, reviewer latency p50 / p95;
- outcomes: success rate, autonomous success rate, failures, overdue, time to outcome;
- calibration of the agents' stated confidence: Brier score, ECE, reliability table;
- drift of watched inputs: PSI and two-sample KS for numbers, PSI and new values
  for categories, recent window against baseline;
- data quality: freshness of data sources, completeness, declared ranges.

Pure, like the rest of the core: no I/O, no clock (every query is given `now`), no
randomness (samples are thinned deterministically). Stdlib only, on purpose: the book
is updated per event on the service's hot path, where an array library's per-call
overhead on scalars costs more than the arithmetic itself; the core imports no heavy
dependency; and the statistics needed (PSI, two-sample KS with its asymptotic
Kolmogorov p-value, Brier score, ECE, nearest-rank percentiles) are a few lines each.
"""

from charter.monitors._book import OUTCOME_OVERDUE, MonitorBook
from charter.monitors._calibration import (
    CalibrationCounts,
    ReliabilityBin,
    brier_score,
    expected_calibration_error,
    reliability_table,
)
from charter.monitors._config import MonitorConfig
from charter.monitors._drift import (
    EPSILON,
    bin_counts,
    category_psi,
    effective_size,
    ks_pvalue,
    ks_statistic,
    psi,
    quantile_edges,
)
from charter.monitors._figures import (
    FIGURE_FIELDS,
    DriftFigure,
    FigureField,
    Figures,
    Level,
    Series,
    SeriesPoint,
)
from charter.monitors._quality import FieldQuality, SourceQuality
from charter.monitors._rules import (
    ALERT_FIRED,
    ALERT_RESOLVED,
    DRIFT_PSI,
    RULE_FIGURES,
    SEVERITIES,
    AlertBook,
    AlertRule,
    AutonomyRule,
    Reading,
    Threshold,
    figure_value,
    selects,
)
from charter.monitors._windows import percentile

__all__ = [
    "ALERT_FIRED",
    "ALERT_RESOLVED",
    "DRIFT_PSI",
    "EPSILON",
    "FIGURE_FIELDS",
    "OUTCOME_OVERDUE",
    "RULE_FIGURES",
    "SEVERITIES",
    "AlertBook",
    "AlertRule",
    "AutonomyRule",
    "CalibrationCounts",
    "DriftFigure",
    "FieldQuality",
    "FigureField",
    "Figures",
    "Level",
    "MonitorBook",
    "MonitorConfig",
    "Reading",
    "ReliabilityBin",
    "Series",
    "SeriesPoint",
    "SourceQuality",
    "Threshold",
    "bin_counts",
    "brier_score",
    "category_psi",
    "effective_size",
    "expected_calibration_error",
    "figure_value",
    "ks_pvalue",
    "ks_statistic",
    "percentile",
    "psi",
    "quantile_edges",
    "reliability_table",
    "selects",
]
