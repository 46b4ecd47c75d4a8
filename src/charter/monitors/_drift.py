"""Drift statistics: has an input's distribution moved away from its baseline?

Numbers are compared by the population stability index (PSI) over the baseline's
deciles and by the two-sample Kolmogorov-Smirnov (KS) statistic with its asymptotic
p-value; categories by the PSI over their shares and by the values the baseline never
had. Every function takes optional weights: the book's samples are thinned per bucket
(`Column`), and a kept value stands for the values dropped beside it.

Reading the PSI, as credit-risk practice does: below 0.1 no real change, 0.1 to 0.25 a
moderate shift worth a look, above 0.25 a significant shift.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence

__all__ = [
    "EPSILON",
    "OTHER",
    "bin_counts",
    "category_psi",
    "effective_size",
    "ks_pvalue",
    "ks_statistic",
    "psi",
    "quantile_edges",
]

#: The share an empty bin is given in the PSI, so that ln(r / b) stays finite: 1e-4
#: (0.01%), the usual floor. It is applied to each share, baseline and recent alike.
EPSILON = 1e-4

#: The category that values past the per-bucket cap of distinct values are counted under.
OTHER = "(other)"


def _unit(values: Sequence[float], weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0] * len(values)
    if len(weights) != len(values):
        raise ValueError("weights must give one weight per value")
    return weights


def psi(
    baseline: Sequence[float], recent: Sequence[float], *, epsilon: float = EPSILON
) -> float | None:
    """The population stability index of two histograms over the same bins.

    PSI = sum over bins i of (r_i - b_i) * ln(r_i / b_i), where b_i and r_i are bin i's
    share of the baseline's and of the recent total (counts or weights are normalised
    here), each share floored at `epsilon` (`EPSILON`) so that an empty bin counts as
    almost empty rather than infinitely different. Each term is >= 0, so PSI >= 0, and
    it is 0 for identical shares. None when either histogram is empty.
    """
    if len(baseline) != len(recent):
        raise ValueError("both histograms must have the same bins")
    total_b, total_r = math.fsum(baseline), math.fsum(recent)
    if total_b <= 0 or total_r <= 0:
        return None
    out = 0.0
    for b, r in zip(baseline, recent, strict=True):
        pb, pr = max(b / total_b, epsilon), max(r / total_r, epsilon)
        out += (pr - pb) * math.log(pr / pb)
    return out


def quantile_edges(
    values: Sequence[float], bins: int = 10, weights: Sequence[float] | None = None
) -> list[float]:
    """The inner edges of `bins` quantile bins of `values` (deciles for ten), ascending.

    Edge k is the nearest-rank k/bins quantile (see `percentile`); equal edges (a value
    repeated across a quantile) are merged, so a sample of few distinct values gives
    fewer, wider bins rather than empty ones.
    """
    if bins < 1:
        raise ValueError("at least one bin")
    pairs = sorted(zip(values, _unit(values, weights), strict=True))
    if not pairs:
        return []
    total = math.fsum(w for _, w in pairs)
    slack = 1e-9 * total
    edges: list[float] = []
    running, i = 0.0, 0
    for k in range(1, bins):
        target = k / bins * total - slack
        while i < len(pairs) and running + pairs[i][1] < target:
            running += pairs[i][1]
            i += 1
        edge = pairs[min(i, len(pairs) - 1)][0]
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def bin_counts(
    values: Sequence[float], edges: Sequence[float], weights: Sequence[float] | None = None
) -> list[float]:
    """The weight of `values` in each bin cut at `edges`: len(edges) + 1 bins.

    Bins are closed on the right: (-inf, e_1], (e_1, e_2], ..., (e_k, +inf), so a value
    equal to an edge falls in the bin that edge closes, as the quantile that made it does.
    """
    counts = [0.0] * (len(edges) + 1)
    for v, w in zip(values, _unit(values, weights), strict=True):
        counts[bisect.bisect_left(edges, v)] += w
    return counts


def ks_statistic(
    a: Sequence[float],
    b: Sequence[float],
    a_weights: Sequence[float] | None = None,
    b_weights: Sequence[float] | None = None,
) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic: D = sup over x of |F_a(x) - F_b(x)|.

    F_a and F_b are the (weighted) empirical distribution functions of the samples,
    compared after every distinct value, so D is in [0, 1]: 0 for samples of one
    distribution of values, 1 when every value of one lies below every value of the
    other. None when either sample is empty.
    """
    if not a or not b:
        return None
    xa, fa = _ecdf(a, a_weights)
    xb, fb = _ecdf(b, b_weights)
    # The ECDFs change only at the samples' values: D is the largest gap at one of them,
    # each ECDF read past every copy of the value (bisect_right) so that ties move both.
    right = bisect.bisect_right
    d = max(abs(fa[right(xa, x)] - fb[right(xb, x)]) for x in (*xa, *xb))
    return min(d, 1.0)


def _ecdf(
    values: Sequence[float], weights: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """The sorted values and the ECDF before each: F[k] = the share of the first k values."""
    if weights is None:
        n = len(values)
        return sorted(values), [k / n for k in range(n + 1)]
    if len(weights) != len(values):
        raise ValueError("weights must give one weight per value")
    order = sorted(range(len(values)), key=values.__getitem__)
    total = math.fsum(weights)
    shares = [0.0, *itertools.accumulate(weights[i] / total for i in order)]
    return [values[i] for i in order], shares


def effective_size(weights: Sequence[float]) -> float:
    """Kish's effective sample size of weighted values: (sum w)^2 / sum w^2.

    It is n for equal weights, and less when some values stand for more than others.
    """
    squares = math.fsum(w * w for w in weights)
    total = math.fsum(weights)
    return total * total / squares if squares else 0.0


def ks_pvalue(d: float, n: float, m: float) -> float | None:
    """The asymptotic p-value of a two-sample KS statistic `d` of samples of sizes n and m.

    P(D >= d) ~ Q(lambda), with the effective size n_e = n * m / (n + m), lambda =
    (sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) * d (Stephens' correction, as in Numerical
    Recipes' `probks`), and Kolmogorov's survival function
    Q(x) = 2 * sum over j >= 1 of (-1)^(j-1) * exp(-2 j^2 x^2), evaluated for x < 1.18 in
    its equivalent form 1 - (sqrt(2 pi) / x) * sum over k >= 1 of
    exp(-(2k - 1)^2 pi^2 / (8 x^2)), where that series converges in a few terms.
    Sizes may be effective (`effective_size`) rather than whole. None for an empty sample.
    """
    if n <= 0 or m <= 0:
        return None
    if not 0 <= d <= 1:
        raise ValueError(f"a KS statistic is between 0 and 1, got `{d}`")
    root = math.sqrt(n * m / (n + m))
    return _kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def _kolmogorov_sf(x: float) -> float:
    """Q(x) = P(K > x) for Kolmogorov's distribution K, to double precision."""
    if x < 0.1:
        return 1.0  # 1 - 25 * exp(-123) and beyond: 1 to double precision
    if x < 1.18:
        # The theta-function form: its terms fall off like exp(-k^2 pi^2 / x^2).
        scale = -(math.pi**2) / (8 * x * x)
        total = sum(math.exp((2 * k - 1) ** 2 * scale) for k in range(1, 8))
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * total))
    total = sum((1.0 if j % 2 else -1.0) * math.exp(-2 * j * j * x * x) for j in range(1, 12))
    return min(1.0, max(0.0, 2 * total))


def category_psi(
    baseline: Mapping[str, float], recent: Mapping[str, float], *, epsilon: float = EPSILON
) -> float | None:
    """The PSI over categories: `psi` of the shares of each value either side has.

    A value the baseline never had enters with the baseline share `epsilon`, so a new
    value taking 10% of recent traffic alone adds 0.1 * ln(0.1 / 1e-4), about 0.69.
    """
    categories = sorted(baseline.keys() | recent.keys())
    return psi(
        [baseline.get(c, 0.0) for c in categories],
        [recent.get(c, 0.0) for c in categories],
        epsilon=epsilon,
    )
