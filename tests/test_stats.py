"""Pure statistics against known distributions and against scipy's and HdrHistogram's own code."""

import numpy as np
import pytest
from scipy import stats as sps

from workbench.analyse import hdr, stats


@pytest.mark.parametrize("n,p,rank", [(100, 95, 95), (100, 99, 99), (1000, 99.9, 999),
                                      (1, 50, 1), (3, 50, 2), (10, 99.999, 10), (0, 50, 0)])
def test_nearest_rank_is_exact_in_integers(n, p, rank):
    assert int(stats.nearest_rank(n, p)) == rank


def test_grouped_percentiles_match_numpy_inverted_cdf():
    rng = np.random.default_rng(0)
    groups = [rng.lognormal(1, 1, size) for size in (1, 7, 100, 2345)]
    values = np.concatenate([np.sort(g) for g in groups])
    out = stats.grouped_percentiles(values, np.array([g.size for g in groups]), confidence=None)
    for i, g in enumerate(groups):
        for p in stats.PERCENTILES:
            want = np.percentile(g, p, method="inverted_cdf")
            assert out[stats.label(p)][i] == pytest.approx(want)
        assert out["max"][i] == g.max()


@pytest.mark.parametrize("n", [20, 100, 1000, 5000])
@pytest.mark.parametrize("p", [50, 90, 99, 99.9])
def test_interval_equals_scipy_quantile_test(n, p):
    x = np.sort(np.random.default_rng(n).exponential(1, n))
    lo, hi = stats.ci_ranks(n, p)
    ci = sps.quantile_test(x, q=np.quantile(x, p / 100), p=p / 100).confidence_interval(0.95)
    ours = (x[lo[0] - 1] if lo[0] else np.nan, x[hi[0] - 1] if hi[0] else np.nan)
    np.testing.assert_array_equal(ours, (ci.low, ci.high))


@pytest.mark.parametrize("p", [*stats.PERCENTILES, 0.1, 10, 99.99, 99.999, 100])
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.5])
def test_binomial_quantile_equals_scipy_stats(p, confidence):
    """The bisection over ``scipy.special.bdtr`` is ``scipy.stats.binom.ppf``, rank for rank,
    for every n up to 3,000 and a spread of n up to 2e7, at both ends of the interval."""
    ns = np.concatenate([np.arange(1, 3001),
                         np.unique(np.logspace(3.5, np.log10(2e7), 400).astype(np.int64))])
    for y in ((1 - confidence) / 2, (1 + confidence) / 2):
        ours = stats.binom_ppf(y, ns, p / 100)
        theirs = sps.binom.ppf(y, ns, p / 100).astype(np.int64)
        wrong = np.flatnonzero(ours != theirs)
        assert wrong.size == 0, (f"n={ns[wrong[:5]].tolist()}: {ours[wrong[:5]].tolist()} "
                                 f"!= scipy {theirs[wrong[:5]].tolist()}")


def test_unidentifiable_bounds_are_missing():
    lo, hi = stats.ci_ranks(np.array([100, 10, 0]), 99.9)
    assert hi.tolist() == [0, 0, 0]  # 100 samples cannot bound p99.9 from above
    assert lo[0] >= 1 and lo[2] == 0
    out = stats.grouped_percentiles(np.arange(1.0, 101.0), np.array([100]))
    assert np.isnan(out["p99.9_hi"][0]) and out["p99.9_lo"][0] <= 100


@pytest.mark.parametrize("dist", [sps.expon(), sps.lognorm(1.0), sps.uniform(0, 10)],
                         ids=["exponential", "lognormal", "uniform"])
@pytest.mark.parametrize("n,p", [(200, 50), (500, 90), (2000, 99)])
def test_interval_coverage_is_close_to_95_percent(dist, n, p):
    """Over 600 samples of a known distribution the interval holds the true percentile
    about 95% of the time: at least 95% minus noise, and as often as its exact coverage says."""
    trials = 600
    rng = np.random.default_rng(n * 1000 + int(p))
    samples = np.sort(dist.rvs(size=(trials, n), random_state=rng), axis=1)
    lo, hi = (int(r[0]) for r in stats.ci_ranks(n, p))
    truth = dist.ppf(p / 100)
    covered = (samples[:, lo - 1] <= truth) & (truth <= samples[:, hi - 1])
    exact = stats.ci_coverage(n, p)
    noise = 4 * np.sqrt(exact * (1 - exact) / trials)
    assert 0.95 <= exact < 0.99
    assert abs(covered.mean() - exact) <= noise
    assert 0.93 <= covered.mean() <= 0.995


def test_bucket_arithmetic_matches_hdrhistogram():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.integers(0, 5000, 2000), rng.lognormal(10, 3, 5000).astype(int),
                             [hdr.HIGHEST_US]])
    values = np.clip(values, 0, hdr.HIGHEST_US)
    reference = hdr.new()
    for v in values.tolist():
        reference.record_value(v)
    fast = hdr.new()
    hdr.record_array(fast, values)
    index, counts = stats.bucket_counts(fast)
    assert counts.sum() == values.size
    want = [reference.get_highest_equivalent_value(reference.get_value_from_index(int(i)))
            for i in index]
    assert stats.bucket_values_us(fast, index).tolist() == want
    decoded = hdr.decode(hdr.encode(fast))
    np.testing.assert_array_equal(stats.bucket_counts(decoded)[1], counts)


def test_percentiles_from_counts_is_nearest_rank_over_buckets():
    rng = np.random.default_rng(2)
    values = np.sort(rng.uniform(1, 100, 50))
    counts = rng.integers(0, 5, (3, 50))
    counts[2] = 0
    out = stats.percentiles_from_counts(counts, values, (50, 95, 99))
    for row in range(2):
        expanded = np.repeat(values, counts[row])
        np.testing.assert_allclose(
            out[row], np.percentile(expanded, (50, 95, 99), method="inverted_cdf"))
    assert np.isnan(out[2]).all()


def test_bootstrap_interval_holds_the_true_ratio():
    rng = np.random.default_rng(3)
    values = np.geomspace(0.5, 50, 400)
    base = np.array([np.histogram(rng.lognormal(1, 0.5, 300), bins=np.r_[0, values])[0]
                     for _ in range(30)])
    slow = np.array([np.histogram(1.3 * rng.lognormal(1, 0.5, 300), bins=np.r_[0, values])[0]
                     for _ in range(30)])
    low, high = stats.bootstrap_ratio_ci(base, slow, values, (50, 95), n_boot=400)
    assert (low < 1.3).all() and (high > 1.3).all() and (low > 1.1).all()
    low, high = stats.bootstrap_ratio_ci(base, base[::-1], values, (50,), n_boot=400, seed=9)
    assert low[0] <= 1 <= high[0]


def test_mann_whitney_reachability():
    assert stats.min_attainable_p(3, 3) == pytest.approx(0.1)  # 3 vs 3 can never reach 0.002
    assert stats.min_attainable_p(10, 10) < 0.002
    assert stats.mann_whitney_p(np.ones(5), np.ones(5)) == 1.0
    assert stats.min_units_for_test(0.002) == 7
    assert stats.min_attainable_p(6, 6) >= 0.002 > stats.min_attainable_p(7, 7)


@pytest.mark.parametrize("ratio,p,low,high,verdict", [
    (1.2, 0.001, 1.15, 1.25, "slower"),
    (0.8, 0.001, 0.75, 0.85, "faster"),
    (1.2, 0.001, 0.95, 1.5, "slower"),  # asv's rule: beyond the factor and significant
    (1.2, 0.01, 1.15, 1.25, "inconclusive"),  # an effect the test does not confirm
    (0.35, 0.16, 0.23, 0.77, "inconclusive"),  # issue 12b: once called "no change"
    (1.05, 1e-9, 1.02, 1.08, "no change"),  # significant, but ruled out beyond the factor
    (1.0, 0.9, 0.95, 1.04, "no change"),
    (1.0, 0.9, 0.85, 1.04, "inconclusive"),  # a 15 % speed-up is not ruled out
    (1.0, 0.9, 1 / 1.1, 1.1, "no change"),  # the bounds themselves are inside
    (1.0, 0.9, float("nan"), float("nan"), "inconclusive"),  # no interval shows nothing
    (float("nan"), 1e-9, 0.95, 1.05, "no change"),
])
def test_verdict_is_honest_in_all_three_directions(ratio, p, low, high, verdict):
    assert stats.verdict(ratio, p, low, high, 1.1, 0.002) == verdict


def test_noether_counts_the_units_a_mann_whitney_test_needs():
    a, b = np.arange(20.0), np.arange(20.0) + 5  # U / (n m) = p' = 287.5 / 400
    p_shift = 0.71875
    z = sps.norm.ppf(1 - 0.002 / 2) + sps.norm.ppf(0.8)
    assert stats.units_for_power(a, b, 0.002) == int(np.ceil(z**2 / (6 * (p_shift - 0.5)**2)))
    assert stats.units_for_power(a, b, 0.002) == 54
    assert stats.units_for_power(b, a, 0.002) == 54  # a shift either way
    assert stats.units_for_power(a, a, 0.002) is None  # no shift: no count would show one
    assert stats.units_for_power(a, a + 100, 0.002) == 11  # p' = 1: z² / 1.5
    # and the count holds: 54 normal units a side with that p' give the test 80 % power
    rng = np.random.default_rng(7)
    shift = sps.norm.ppf(p_shift) * np.sqrt(2)
    x, y = rng.normal(0, 1, (2000, 54)), rng.normal(shift, 1, (2000, 54))
    power = (sps.mannwhitneyu(x, y, axis=1).pvalue < 0.002).mean()
    assert 0.8 <= power < 0.9  # measured 0.82


def test_interval_narrowing_counts_units_for_each_side():
    # B/A 1.0 in [0.9, 1.2] from 10 units: the upper side needs (ln 1.2 / ln 1.1)² x 10 = 36.6
    assert stats.units_for_interval(10, 1.0, 0.9, 1.2, 1.1) == 37
    assert stats.units_for_interval(10, 1.0, 0.95, 1.05, 1.1) == 10  # already inside
    assert stats.units_for_interval(10, 1.12, 1.0, 1.3, 1.1) is None  # the point is outside
    assert stats.units_for_interval(10, 1.0, float("nan"), 1.2, 1.1) is None
