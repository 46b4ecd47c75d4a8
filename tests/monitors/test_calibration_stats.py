"""Calibration (Brier, ECE, reliability tables) and nearest-rank percentiles."""

from __future__ import annotations

import math

import pytest
from _monitor_events import at, decision, fold, outcome, overdue
from hypothesis import given
from hypothesis import strategies as st

from charter.monitors import (
    CalibrationCounts,
    MonitorBook,
    MonitorConfig,
    ReliabilityBin,
    brier_score,
    expected_calibration_error,
    percentile,
    reliability_table,
)

predictions = st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=80)

# Two predictions at 0.15 that failed; four at 0.85, three of which succeeded.
TABLE = ([0.15, 0.15, 0.85, 0.85, 0.85, 0.85], [False, False, True, True, True, False])


class TestBrier:
    def test_hand_computed(self) -> None:
        """(0.1^2 + 0.2^2 + 0.6^2) / 3 = 0.1367; always 0.5 scores 0.25."""
        assert brier_score([0.9, 0.2, 0.6], [True, False, False]) == pytest.approx(0.41 / 3)
        assert brier_score([0.5] * 4, [True, False, True, True]) == 0.25

    def test_perfect_and_perfectly_wrong(self) -> None:
        """Certain and right scores 0; certain and wrong scores 1."""
        assert brier_score([1.0, 0.0, 1.0], [True, False, True]) == 0
        assert brier_score([0.0, 1.0], [True, False]) == 1

    def test_no_predictions_no_score(self) -> None:
        """An empty sample gives None; unequal lengths are refused."""
        assert brier_score([], []) is None
        with pytest.raises(ValueError, match="same length"):
            brier_score([0.5], [])

    @given(st.lists(st.booleans(), min_size=1))
    def test_perfect_predictions_score_zero(self, outcomes: list[bool]) -> None:
        """Saying 1 for each success and 0 for each failure is a Brier score of 0."""
        assert brier_score([1.0 if y else 0.0 for y in outcomes], outcomes) == 0

    @given(predictions)
    def test_the_score_is_between_0_and_1(self, pairs: list[tuple[float, bool]]) -> None:
        """A mean of squares of numbers in [-1, 1]."""
        score = brier_score([p for p, _ in pairs], [y for _, y in pairs])
        assert score is not None
        assert 0 <= score <= 1


class TestExpectedCalibrationError:
    def test_a_small_table(self) -> None:
        """2/6 * |0.15 - 0| + 4/6 * |0.85 - 0.75| = 0.05 + 0.0667 = 0.1167."""
        assert expected_calibration_error(*TABLE) == pytest.approx(0.05 + 4 / 6 * 0.1)

    def test_a_calibrated_agent_scores_zero(self) -> None:
        """Stated 0.25 with one success in four, and 0.75 with three: no gap in any bin."""
        confidences = [0.25] * 4 + [0.75] * 4
        outcomes = [True, False, False, False, True, True, True, False]
        assert expected_calibration_error(confidences, outcomes) == pytest.approx(0)

    def test_the_bins_are_equal_width_with_one_in_the_last(self) -> None:
        """0.0 falls in [0, 0.1), 0.1 in [0.1, 0.2), 1.0 in [0.9, 1]."""
        rows = reliability_table([0.0, 0.1, 1.0], [True, True, True])
        assert [r.count for r in rows] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
        assert (rows[0].lower, rows[0].upper, rows[9].upper) == (0.0, 0.1, 1.0)
        assert expected_calibration_error([], []) is None

    @given(predictions)
    def test_the_error_is_between_0_and_1(self, pairs: list[tuple[float, bool]]) -> None:
        """A weighted mean of gaps between two shares."""
        error = expected_calibration_error([p for p, _ in pairs], [y for _, y in pairs])
        assert error is not None
        assert -1e-12 <= error <= 1 + 1e-12


class TestReliabilityTable:
    def test_rows_of_the_small_table(self) -> None:
        """Each bin's count, mean confidence and observed success rate; None when empty."""
        rows = reliability_table(*TABLE)
        assert len(rows) == 10
        one, eight = rows[1], rows[8]
        assert (one.lower, one.upper, one.count, one.success_rate) == (0.1, 0.2, 2, 0.0)
        assert one.mean_confidence == pytest.approx(0.15)
        assert (eight.lower, eight.upper, eight.count, eight.success_rate) == (0.8, 0.9, 4, 0.75)
        assert eight.mean_confidence == pytest.approx(0.85)
        assert rows[0] == ReliabilityBin(0.0, 0.1, 0, None, None)
        assert rows[8].to_json() == {
            "lower": 0.8,
            "upper": 0.9,
            "count": 4,
            "mean_confidence": rows[8].mean_confidence,
            "success_rate": 0.75,
        }


class TestCalibrationCounts:
    @given(predictions, st.integers(0, 80))
    def test_merged_buckets_equal_one_pass(self, pairs: list[tuple[float, bool]], cut: int) -> None:
        """Sums kept per bucket and added give the figures of the predictions taken at once."""
        first, second, whole = CalibrationCounts(), CalibrationCounts(), CalibrationCounts()
        for i, (p, y) in enumerate(pairs):
            (first if i < cut else second).add(p, y)
            whole.add(p, y)
        first.merge(second)
        confidences, outcomes = [p for p, _ in pairs], [y for _, y in pairs]
        assert first.samples == len(pairs)
        assert first.brier() == pytest.approx(brier_score(confidences, outcomes))
        assert first.ece() == pytest.approx(expected_calibration_error(confidences, outcomes))
        for a, b in zip(first.table(), whole.table(), strict=True):
            assert (a.count, a.success_rate) == (b.count, b.success_rate)
            assert a.mean_confidence == (
                None if b.mean_confidence is None else pytest.approx(b.mean_confidence)
            )


class TestPercentile:
    def test_the_nearest_rank_textbook_example(self) -> None:
        """15, 20, 35, 40, 50: the 5th percentile is 15, 30th 20, 40th 20, 50th 35, 100th 50."""
        values = [50, 15, 35, 20, 40]
        assert [percentile(values, q) for q in (0.05, 0.3, 0.4, 0.5, 1.0)] == [15, 20, 20, 35, 50]
        assert percentile(values, 0) == 15

    def test_p50_and_p95(self) -> None:
        """p50 of [1, 2, 3, 4] is 2 (no interpolation); p95 of 1..100 is 95."""
        assert percentile([1, 2, 3, 4], 0.5) == 2
        assert percentile(list(range(1, 101)), 0.95) == 95

    def test_weights(self) -> None:
        """A value of weight 3 is three values."""
        assert percentile([1, 2], 0.5, weights=[3, 1]) == percentile([1, 1, 1, 2], 0.5)
        assert percentile([1, 2], 0.9, weights=[3, 1]) == 2

    def test_edges(self) -> None:
        """No values give None; a quantile outside [0, 1] or unequal weights are refused."""
        assert percentile([], 0.5) is None
        with pytest.raises(ValueError, match="between 0 and 1"):
            percentile([1], 95)
        with pytest.raises(ValueError, match="one weight per value"):
            percentile([1, 2], 0.5, weights=[1])

    @given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=50), st.floats(0, 1))
    def test_the_rank_is_ceil_q_n(self, values: list[int], q: float) -> None:
        """The value of rank ceil(q * n) of the sorted values (the smallest for q = 0)."""
        ordered = sorted(values)
        rank = max(1, math.ceil(q * len(values) - 1e-9 * len(values)))
        assert percentile(values, q) == ordered[rank - 1]


class TestBookCalibration:
    def test_stated_confidence_against_outcomes(self) -> None:
        """The book's figures are those of the predictions whose outcome came in the window."""
        confidences, outcomes = TABLE
        stream = []
        for i, (p, y) in enumerate(zip(confidences, outcomes, strict=True)):
            stream.append(decision(f"d{i}", i, context={"confidence": p}))
            stream.append(
                overdue(f"d{i}", 100 + i)
                if not y and i == 5
                else outcome(f"d{i}", 50 + i, success=y)
            )
        stream += [decision("x1", 10, context={}), outcome("x1", 60)]  # no confidence stated
        stream += [decision("x2", 11, context={"confidence": True}), outcome("x2", 61)]
        config = MonitorConfig(bucket_seconds=60, window_seconds=600)
        (f,) = fold(MonitorBook(config), stream).figures(at(300))
        assert f.calibration_samples == 6
        assert f.brier_score == pytest.approx(brier_score(confidences, outcomes))
        assert f.expected_calibration_error == pytest.approx(0.05 + 4 / 6 * 0.1)
        assert [r.count for r in f.reliability] == [r.count for r in reliability_table(*TABLE)]
        assert f.outcomes == 8
