"""Calibration: how well an agent's stated confidence predicts that its action succeeds.

An agent says `context.confidence` = p when it proposes an action; the outcome says
whether it succeeded (y = 1) or failed or never reported in time (y = 0). A
calibrated agent's actions stated at 0.8 succeed 80% of the time. The Brier score
measures the squared error of p as a forecast of y; the expected calibration error
(ECE) measures the gap between stated and observed success over equal-width bins of p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BINS",
    "CalibrationCounts",
    "ReliabilityBin",
    "brier_score",
    "expected_calibration_error",
    "reliability_table",
]

#: The number of equal-width confidence bins of the ECE and the reliability table.
BINS = 10


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One row of a reliability table: the predictions whose confidence fell in a bin.

    The bin is [`lower`, `upper`), the last one closed at 1. `mean_confidence` and
    `success_rate` are None when the bin is empty.
    """

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    success_rate: float | None

    def to_json(self) -> dict[str, Any]:
        """The row as plain JSON."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_confidence": self.mean_confidence,
            "success_rate": self.success_rate,
        }


def _bin(confidence: float, bins: int) -> int:
    """The bin of a confidence: [k/bins, (k+1)/bins), with 1.0 in the last bin."""
    return min(int(confidence * bins), bins - 1)


def _check(confidences: Sequence[float], outcomes: Sequence[bool]) -> None:
    if len(confidences) != len(outcomes):
        raise ValueError("`confidences` and `outcomes` must be of the same length")


def brier_score(confidences: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    """The Brier score: (1/N) * sum over i of (p_i - y_i)^2; None for no predictions.

    0 is perfect, 0.25 is what always saying 0.5 scores, 1 is always certain and wrong.
    """
    _check(confidences, outcomes)
    if not confidences:
        return None
    errors = ((p - (1.0 if y else 0.0)) ** 2 for p, y in zip(confidences, outcomes, strict=True))
    return math.fsum(errors) / len(confidences)


def reliability_table(
    confidences: Sequence[float], outcomes: Sequence[bool], bins: int = BINS
) -> list[ReliabilityBin]:
    """Per equal-width bin of confidence: its count, mean confidence and success rate."""
    _check(confidences, outcomes)
    counts = CalibrationCounts(bins)
    for p, y in zip(confidences, outcomes, strict=True):
        counts.add(p, y)
    return counts.table()


def expected_calibration_error(
    confidences: Sequence[float], outcomes: Sequence[bool], bins: int = BINS
) -> float | None:
    """The ECE: sum over bins b of (n_b / N) * |mean confidence_b - success rate_b|.

    Bins are `bins` equal-width intervals of [0, 1] ([0, 0.1), ..., [0.9, 1] for ten);
    empty bins add nothing. None for no predictions.
    """
    _check(confidences, outcomes)
    counts = CalibrationCounts(bins)
    for p, y in zip(confidences, outcomes, strict=True):
        counts.add(p, y)
    return counts.ece()


class CalibrationCounts:
    """The sums the calibration figures need, kept per bucket and merged by addition.

    The Brier score, the ECE and the reliability table are exact functions of these
    sums, so a window's figures equal those of its predictions taken one by one.
    """

    __slots__ = ("bins", "confidence", "count", "squared_error", "successes")

    def __init__(self, bins: int = BINS) -> None:
        self.squared_error = 0.0
        self.bins = bins
        self.count = [0] * bins
        self.confidence = [0.0] * bins
        self.successes = [0] * bins

    def add(self, confidence: float, success: bool) -> None:
        """Count one prediction and its outcome."""
        k = _bin(confidence, self.bins)
        self.count[k] += 1
        self.confidence[k] += confidence
        if success:
            self.successes[k] += 1
            self.squared_error += (1.0 - confidence) ** 2
        else:
            self.squared_error += confidence**2

    def merge(self, other: CalibrationCounts) -> None:
        """Add another bucket's sums to these."""
        self.squared_error += other.squared_error
        for k in range(self.bins):
            self.count[k] += other.count[k]
            self.confidence[k] += other.confidence[k]
            self.successes[k] += other.successes[k]

    @property
    def samples(self) -> int:
        """How many predictions were counted."""
        return sum(self.count)

    def brier(self) -> float | None:
        """`brier_score` of the predictions counted."""
        n = self.samples
        return self.squared_error / n if n else None

    def ece(self) -> float | None:
        """`expected_calibration_error` of the predictions counted."""
        n = self.samples
        if not n:
            return None
        gaps = (
            abs(self.confidence[k] - self.successes[k])  # = n_b * |mean conf - rate|
            for k in range(self.bins)
            if self.count[k]
        )
        return math.fsum(gaps) / n

    def table(self) -> list[ReliabilityBin]:
        """The reliability table of the predictions counted, one row per bin."""
        rows = []
        for k in range(self.bins):
            n = self.count[k]
            rows.append(
                ReliabilityBin(
                    lower=k / self.bins,
                    upper=(k + 1) / self.bins,
                    count=n,
                    mean_confidence=self.confidence[k] / n if n else None,
                    success_rate=self.successes[k] / n if n else None,
                )
            )
        return rows
