"""Drift: PSI, two-sample KS and its p-value, categorical shift, and drift in the book."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from _monitor_events import at, decision, fold
from hypothesis import given
from hypothesis import strategies as st

from charter.monitors import (
    EPSILON,
    DriftFigure,
    MonitorBook,
    MonitorConfig,
    bin_counts,
    category_psi,
    effective_size,
    ks_pvalue,
    ks_statistic,
    psi,
    quantile_edges,
)

counts = st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=12)
samples = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60)


class TestPsi:
    def test_a_textbook_shift(self) -> None:
        """Quarters against 10/20/30/40%: sum of (r - b) ln(r / b) = 0.2282."""
        expected = (
            (0.1 - 0.25) * math.log(0.1 / 0.25)
            + (0.2 - 0.25) * math.log(0.2 / 0.25)
            + (0.3 - 0.25) * math.log(0.3 / 0.25)
            + (0.4 - 0.25) * math.log(0.4 / 0.25)
        )
        assert psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(expected)
        assert psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(0.228217, abs=1e-6)

    def test_an_empty_bin_takes_the_epsilon_share(self) -> None:
        """A bin the baseline never filled counts at 1e-4: 0.0999 ln 1000 + 0.1 ln 1.25 = 0.7124."""
        assert EPSILON == 1e-4
        assert psi([50, 50, 0], [50, 40, 10]) == pytest.approx(0.712399, abs=1e-6)

    def test_counts_are_normalised(self) -> None:
        """Counts and shares of the same histograms give the same index."""
        assert psi([1, 3], [2, 2]) == pytest.approx(psi([0.25, 0.75], [0.5, 0.5]))

    def test_no_index_of_an_empty_histogram(self) -> None:
        """An empty side gives None; histograms of different bins are refused."""
        assert psi([0, 0], [1, 2]) is None
        with pytest.raises(ValueError, match="same bins"):
            psi([1, 2], [1, 2, 3])

    @given(counts)
    def test_identical_histograms_do_not_drift(self, histogram: list[float]) -> None:
        """PSI of a histogram against itself is 0 (or None when it is empty)."""
        value = psi(histogram, histogram)
        assert value is None or value == pytest.approx(0, abs=1e-12)

    @given(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1000)), min_size=1, max_size=12))
    def test_psi_is_never_negative(self, pairs: list[tuple[float, float]]) -> None:
        """Every term (r - b) ln(r / b) is >= 0, so the index is too."""
        value = psi([b for b, _ in pairs], [r for _, r in pairs])
        assert value is None or value >= -1e-12


class TestQuantileBins:
    def test_deciles_of_one_to_ten(self) -> None:
        """The nearest-rank deciles of 1..10 are 1..9: ten bins of one value each."""
        values = list(range(1, 11))
        edges = quantile_edges(values)
        assert edges == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert bin_counts(values, edges) == [1.0] * 10

    def test_repeated_values_merge_their_edges(self) -> None:
        """A constant sample has one edge: its value closes the first bin."""
        assert quantile_edges([5] * 10) == [5]
        assert bin_counts([5] * 10 + [6], [5]) == [10, 1]

    def test_weights_move_the_quantiles(self) -> None:
        """A value standing for nine others holds nine tenths of the distribution."""
        assert quantile_edges([1, 2], weights=[9, 1]) == [1]
        assert bin_counts([1, 2], [1], weights=[9, 1]) == [9, 1]

    def test_an_empty_sample_has_no_edges(self) -> None:
        """No values, no edges, one bin."""
        assert quantile_edges([]) == []
        assert bin_counts([], []) == [0.0]


class TestKs:
    def test_hand_computed_distances(self) -> None:
        """Sup |F_a - F_b| over the values: 1/2 for shifted quarters, 1 for disjoint samples."""
        assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
        assert ks_statistic([1, 2, 3], [4, 5]) == 1.0
        assert ks_statistic([3, 1, 2], [2, 3, 1]) == 0.0

    def test_ties_move_both_ecdfs_before_comparing(self) -> None:
        """[1, 1, 2] against [1, 2, 2]: at 1, 2/3 against 1/3; at 2, both 1: D = 1/3."""
        assert ks_statistic([1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)

    def test_weights_count_as_copies(self) -> None:
        """Weights of 2 give the statistic of each value written twice."""
        weighted = ks_statistic([1, 2], [1.5, 3], a_weights=[2, 2], b_weights=[1, 1])
        assert weighted == ks_statistic([1, 1, 2, 2], [1.5, 3])

    def test_an_empty_sample_has_no_statistic(self) -> None:
        """Nothing to compare gives None."""
        assert ks_statistic([], [1.0]) is None

    @given(samples, samples)
    def test_the_statistic_is_a_symmetric_distance_in_0_1(
        self, a: list[float], b: list[float]
    ) -> None:
        """D is in [0, 1], symmetric, and 0 between a sample and itself."""
        d = ks_statistic(a, b)
        assert d is not None
        assert 0 <= d <= 1
        assert d == ks_statistic(b, a)
        assert ks_statistic(a, a) == 0


class TestKsPvalue:
    # n = m = 200: n_e = 100, so lambda = (10 + 0.12 + 0.011) * d = 10.131 * d.
    SCALE = 10.131

    def test_kolmogorovs_distribution_at_known_points(self) -> None:
        """Q(1) = 2(e^-2 - e^-8 + e^-18 - ...) = 0.2700; Q(2) = 0.00067; Q(0.5) = 0.9639."""
        assert ks_pvalue(1 / self.SCALE, 200, 200) == pytest.approx(0.26999967167735, rel=1e-9)
        assert ks_pvalue(2 / self.SCALE, 200, 200) == pytest.approx(0.00067092525580, rel=1e-9)
        assert ks_pvalue(0.5 / self.SCALE, 200, 200) == pytest.approx(0.96394524366488, rel=1e-9)

    def test_the_two_series_meet_where_they_switch(self) -> None:
        """The theta-function form below lambda = 1.18 and the alternating one above agree."""
        below = ks_pvalue((1.18 - 1e-9) / self.SCALE, 200, 200)
        above = ks_pvalue(1.18 / self.SCALE, 200, 200)
        assert below == pytest.approx(above, abs=1e-9)

    def test_edges(self) -> None:
        """D = 0 gives 1; an empty sample gives None; a D outside [0, 1] is refused."""
        assert ks_pvalue(0.0, 10, 10) == 1.0
        assert ks_pvalue(0.5, 0, 10) is None
        with pytest.raises(ValueError, match="between 0 and 1"):
            ks_pvalue(1.5, 10, 10)

    @given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 10_000), st.integers(1, 10_000))
    def test_a_larger_distance_is_less_likely(self, d1: float, d2: float, n: int, m: int) -> None:
        """The p-value is in [0, 1] and falls as D grows."""
        low, high = sorted((d1, d2))
        p_low, p_high = ks_pvalue(low, n, m), ks_pvalue(high, n, m)
        assert p_low is not None
        assert p_high is not None
        assert 0 <= p_high <= p_low + 1e-12 <= 1 + 1e-12

    def test_effective_size(self) -> None:
        """Kish's size is n for equal weights, less for unequal ones."""
        assert effective_size([3.0] * 8) == pytest.approx(8)
        assert effective_size([1.0, 1.0, 8.0]) == pytest.approx(100 / 66)
        assert effective_size([]) == 0


class TestCategoryPsi:
    def test_a_new_value_takes_the_epsilon_baseline(self) -> None:
        """80/20 USD/EUR against 50/20/30 with GBP new: 0.3 ln 1.6 + 0.2999 ln 3000 = 2.5421."""
        shifted = category_psi({"USD": 80, "EUR": 20}, {"USD": 50, "EUR": 20, "GBP": 30})
        assert shifted == pytest.approx(2.542111, abs=1e-6)
        assert category_psi({"a": 3, "b": 1}, {"b": 2, "a": 6}) == pytest.approx(0)


# -- drift in the book ---------------------------------------------------------------------

DRIFT = MonitorConfig(
    bucket_seconds=60, window_seconds=1800, recent_seconds=1800, baseline_seconds=7200
)


def _amounts(shift: float, *, every: float = 2.0, config: MonitorConfig = DRIFT) -> MonitorBook:
    """A decision every `every` s for 2.5 h: amounts ~ N(100, 15), the last 30 min moved."""
    rng = random.Random(7)
    book = MonitorBook(config)
    t = 0.0
    while t < 9000:
        mean = 100 + (shift if t >= 7200 else 0)
        args = {"order_id": f"o-{t}", "amount": round(rng.gauss(mean, 15), 2)}
        book.apply(*decision(f"d{t}", t, args=args, context={}))
        t += every
    return book


def _drift(book: MonitorBook, field: str) -> DriftFigure:
    (figures,) = book.figures(at(9000))
    (found,) = [d for d in figures.drift if d.field == field]
    return found


class TestBookDrift:
    def test_the_same_distribution_does_not_drift(self) -> None:
        """3,600 baseline and 900 recent draws of one normal: PSI < 0.1, KS not significant."""
        drift = _drift(_amounts(0), "args.amount")
        assert (drift.kind, drift.baseline_samples, drift.recent_samples) == ("numeric", 3600, 900)
        assert drift.psi is not None
        assert drift.psi < 0.1
        assert drift.ks_pvalue is not None
        assert drift.ks_pvalue > 0.05

    def test_a_shifted_distribution_drifts(self) -> None:
        """The recent mean one standard deviation up: PSI > 0.25 and a tiny KS p-value."""
        drift = _drift(_amounts(15), "args.amount")
        assert drift.psi is not None
        assert drift.psi > 0.25
        assert drift.ks_statistic is not None
        assert drift.ks_statistic > 0.3
        assert drift.ks_pvalue is not None
        assert drift.ks_pvalue < 1e-6

    def test_thinned_samples_still_tell_drift_apart(self) -> None:
        """Thirty decisions a minute kept as 8 per bucket, and 300 per side: the same verdicts."""
        config = dataclasses.replace(DRIFT, sample_size=8, max_drift_samples=300)
        same = _drift(_amounts(0, every=2, config=config), "args.amount")
        moved = _drift(_amounts(15, every=2, config=config), "args.amount")
        assert (same.baseline_samples, same.recent_samples) == (3600, 900)  # observations
        assert same.psi is not None
        assert moved.psi is not None
        assert same.psi < 0.1
        assert moved.psi > 0.25

    def test_a_baseline_is_needed_for_an_index(self) -> None:
        """With nothing before the recent window, the drift has samples but no figures."""
        book = fold(MonitorBook(DRIFT), [decision(f"d{i}", 8000 + i) for i in range(10)])
        drift = _drift(book, "args.amount")
        assert (drift.baseline_samples, drift.recent_samples, drift.psi) == (0, 10, None)

    def test_categories_show_new_values_and_their_share(self) -> None:
        """USD/EUR 80/20 before; 50/20/30 with GBP since: one new value, 30% of traffic."""
        stream = []
        for i in range(100):  # the baseline: a decision a minute
            stream.append(
                decision(f"b{i}", 60 * i, args={"currency": "EUR" if i % 5 == 0 else "USD"})
            )
        pattern = ["USD"] * 5 + ["EUR"] * 2 + ["GBP"] * 3
        for i in range(20):  # the last half hour
            stream.append(decision(f"r{i}", 7200 + 60 * i, args={"currency": pattern[i % 10]}))
        drift = _drift(fold(MonitorBook(DRIFT), stream), "args.currency")
        assert drift.kind == "categorical"
        assert (drift.new_values, drift.new_value_share, drift.new_value_examples) == (
            1,
            0.3,
            ("GBP",),
        )
        assert drift.psi == pytest.approx(2.542111, abs=1e-6)
        assert drift.ks_statistic is None

    def test_booleans_are_categories(self) -> None:
        """A boolean argument is watched as the values `true` and `false`."""
        stream = [decision(f"d{i}", 7200 + i, args={"shipped": i % 2 == 0}) for i in range(10)]
        stream += [decision(f"e{i}", i, args={"shipped": True}) for i in range(10)]
        drift = _drift(fold(MonitorBook(DRIFT), stream), "args.shipped")
        assert (drift.kind, drift.new_values, drift.new_value_examples) == (
            "categorical",
            1,
            ("false",),
        )


class TestWatchedFields:
    def test_by_default_every_scalar_at_the_top_is_watched(self) -> None:
        """Numbers, booleans and short strings of args, context and labels; no lists or objects."""
        args = {"amount": 3, "note": "x" * 65, "items": [1], "meta": {"a": 1}, "ok": True}
        context = {"confidence": 0.5, "environment": "prod", "labels": {"ticket": "T-1"}}
        book = fold(MonitorBook(DRIFT), [decision("d1", 8000, args=args, context=context)])
        (figures,) = book.figures(at(9000))
        assert [d.field for d in figures.drift] == [
            "args.amount",
            "args.ok",
            "context.confidence",
            "context.environment",
            "context.labels.ticket",
        ]

    def test_at_most_max_fields_are_watched_per_action(self) -> None:
        """The first `max_fields` fields seen are watched; later ones are not."""
        config = dataclasses.replace(DRIFT, max_fields=3)
        args = {f"f{i}": i for i in range(10)}
        book = fold(MonitorBook(config), [decision("d1", 8000, args=args, context={})])
        (figures,) = book.figures(at(9000))
        assert [d.field for d in figures.drift] == ["args.f0", "args.f1", "args.f2"]

    def test_an_identifier_is_dropped(self) -> None:
        """A discovered string with more distinct values than `max_categories` is no category."""
        config = dataclasses.replace(DRIFT, max_categories=5)
        stream = [
            decision(f"d{i}", 8000 + i, args={"order_id": f"o-{i}", "currency": "USD"}, context={})
            for i in range(20)
        ]
        (figures,) = fold(MonitorBook(config), stream).figures(at(9000))
        assert [d.field for d in figures.drift] == ["args.currency"]

    def test_configured_fields_replace_discovery(self) -> None:
        """An action a `watch` pattern matches watches exactly the fields it names."""
        watch = {"payments.*": ["args.order_id", "context.labels.tier"]}
        config = dataclasses.replace(DRIFT, watch=watch, max_categories=10)
        stream = [
            decision(f"d{i}", 8000 + i, args={"order_id": f"o-{i}", "amount": 5},
                     context={"labels": {"tier": "gold"}})
            for i in range(80)
        ] + [decision("c1", 8000, action="crm.note", args={"body": "hi"}, context={})]  # fmt: skip
        figures = {f.action: f for f in fold(MonitorBook(config), stream).figures(at(9000))}
        refund = figures["payments.refund"]
        assert [d.field for d in refund.drift] == ["args.order_id", "context.labels.tier"]
        # A configured identifier is kept, its values past the cap counted as `(other)`.
        assert refund.drift[0].recent_samples == 80
        assert [d.field for d in figures["crm.note"].drift] == ["args.body"]

    def test_a_value_of_another_kind_is_not_sampled(self) -> None:
        """A numeric field's strings, NaN and infinities are not samples of it."""
        values = [1, "two", float("nan"), float("inf"), 2**2000, 3.5]
        stream = [
            decision(f"d{i}", 8000 + i, args={"x": v}, context={}) for i, v in enumerate(values)
        ]
        drift = _drift(fold(MonitorBook(DRIFT), stream), "args.x")
        assert (drift.kind, drift.recent_samples) == ("numeric", 2)
