"""Pure statistics: percentiles with order-statistic intervals, HDR buckets, bootstrap, tests.

No I/O and no pandas: numpy arrays in, numpy arrays out (asv's ``_stats.py`` is the model).

Percentiles are *nearest rank*: the p-th percentile of n sorted values is the value of rank
``ceil(p/100 * n)`` (1-based), always an observed value, as ``np.percentile(...,
method="inverted_cdf")`` and the driver compute it. Ranks are computed in integers so that
``p(95)`` of 100 values is rank 95, not 96 through floating-point noise.

Confidence interval of a percentile (distribution-free, Hahn & Meeker): the number B of samples
at or below the true q-quantile is Binomial(n, q), so with ``r = F⁻¹(α/2)`` and
``s = F⁻¹(1-α/2) + 1`` (F the binomial CDF) the order statistics ``[X(r), X(s)]`` cover it with
probability ``F(s-1) - F(r-1) >= 1-α``. When ``r < 1`` or ``s > n`` that bound is not
identifiable from n samples and is reported as missing (NaN here, ``null`` in JSON).

Bootstrap and comparison work on HdrHistogram bucket counts (``workbench.analyse.hdr``'s one
configuration), so runs and committed baselines, which keep only encoded histograms, are
compared the same way.

Two sets of repeated runs are tested with the run as the unit (:func:`welch_log`): the
variance that matters lives between runs (the machine and the target drift from run to run),
and windows of one run share that run's level, so windows pooled from several runs are not
independent samples. Per run, x = ln(percentile of the run's pooled histogram); Welch's t on
the x of each side:

    d = mean(y) - mean(x),   se² = s_x²/n + s_y²/m,
    ν = se⁴ / ((s_x²/n)²/(n-1) + (s_y²/m)²/(m-1))   (Welch-Satterthwaite),
    t = d / se,  p = 2 P(T_ν > |t|),  interval exp(d ± t_{ν,1-(1-c)/2} se).

Logs, because a slowdown multiplies latencies (the ratio is the effect) and a percentile's
spread grows with its level; a t rather than a rank test because with the two to six runs a
side people repeat, a rank test cannot reach a small p at all (Mann-Whitney's smallest
two-sided p for 4 runs a side is 2/70 = 0.029), while the t's p stays exact for normal run
levels and errs on the safe side for heavier tails. ``exp(d)`` is the ratio of the geometric
means of the per-run percentiles: the typical run of B against the typical run of A.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from hdrh.histogram import HdrHistogram
from scipy import special  # scipy.stats (0.5-1 s to import) is imported where it is used

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
CONFIDENCE = 0.95
_MILLI = 1000  # percentiles are exact to 1/1000 of a percent (p99.999)


def label(p: float) -> str:
    """``p50``, ``p99.9``: the column and JSON key of a percentile."""
    return f"p{p:g}"


def nearest_rank(n: np.ndarray | int, p: float) -> np.ndarray:
    """1-based rank of the p-th percentile among n values (0 where n is 0)."""
    n = np.asarray(n, dtype=np.int64)
    pm = int(round(p * _MILLI))
    rank = (n * pm + 100 * _MILLI - 1) // (100 * _MILLI)
    return np.where(n > 0, np.clip(rank, 1, np.maximum(n, 1)), 0)


def binom_ppf(y: float, n: np.ndarray, q: float) -> np.ndarray:
    """Smallest ``k`` in ``[0, n]`` with ``P(Binomial(n, q) <= k) >= y``: ``scipy.stats.binom.ppf``
    from ``scipy.special.bdtr`` by bisection (``scipy.stats`` takes 0.5-1 s to import, a third
    of a short ``workbench drive``'s overhead). Equal to scipy's for every n up to 2e7 at the
    percentiles and confidences used here (``tests/test_stats.py``); beyond, the two may differ
    by one rank where the CDF sits on ``y`` within floating-point error."""
    n = np.asarray(n, dtype=np.int64)
    lo, hi = np.zeros_like(n), n.copy()
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        enough = special.bdtr(mid, n, q) >= y
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    return lo


def ci_ranks(n: np.ndarray | int, p: float,
             confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks ``(r, s)`` of the order-statistic interval; 0 where a bound is unidentifiable.

    The interval is conservative: its exact coverage :func:`ci_coverage` is at least
    ``confidence``.
    """
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    q = p / 100.0
    alpha = 1.0 - confidence
    safe_n = np.maximum(n, 1)
    lo = binom_ppf(alpha / 2, safe_n, q)  # r = smallest k with F(k) >= α/2
    hi = binom_ppf(1 - alpha / 2, safe_n, q) + 1
    lo = np.where((n > 0) & (lo >= 1), lo, 0)
    hi = np.where((n > 0) & (hi <= n), hi, 0)
    return lo, hi


def ci_coverage(n: int, p: float, confidence: float = CONFIDENCE) -> float:
    """Exact coverage probability of :func:`ci_ranks` for a continuous distribution.

    An unidentifiable bound counts as infinite (the interval is open on that side).
    """
    lo, hi = (int(x[0]) for x in ci_ranks(n, p, confidence))
    q = p / 100.0
    upper = special.bdtr(hi - 1, n, q) if hi else 1.0
    lower = special.bdtr(lo - 1, n, q) if lo else 0.0
    return float(upper - lower)


def grouped_percentiles(sorted_values: np.ndarray, counts: np.ndarray,
                        percentiles: tuple[float, ...] = PERCENTILES,
                        confidence: float | None = CONFIDENCE) -> dict[str, np.ndarray]:
    """Percentiles (and intervals) of consecutive groups of an already group-wise sorted array.

    ``sorted_values`` holds group 0's values ascending, then group 1's, ...; ``counts`` gives each
    group's size. Returns arrays of one entry per group: ``p50`` ..., ``p50_lo``/``p50_hi`` when
    ``confidence`` is given, and ``max``; NaN for empty groups and unidentifiable bounds.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    values = np.asarray(sorted_values, dtype=np.float64)
    empty = counts == 0

    def pick(rank: np.ndarray) -> np.ndarray:
        idx = np.clip(starts + rank - 1, 0, max(values.size - 1, 0))
        out = values[idx] if values.size else np.full(counts.shape, np.nan)
        return np.where((rank > 0) & ~empty, out, np.nan)

    out: dict[str, np.ndarray] = {}
    for p in percentiles:
        key = label(p)
        out[key] = pick(nearest_rank(counts, p))
        if confidence is not None:
            lo, hi = ci_ranks(counts, p, confidence)
            out[f"{key}_lo"] = pick(lo)
            out[f"{key}_hi"] = pick(hi)
    out["max"] = pick(counts)
    return out


def group_sort(values: np.ndarray, codes: np.ndarray, n_groups: int,
               presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Values ordered by group code, ascending within each group; and the group sizes.

    With ``presorted`` the values are already ascending, so a stable sort by the small integer
    codes (a radix sort in numpy) keeps them ascending inside each group.
    """
    codes = np.asarray(codes)
    if presorted:
        order = np.argsort(codes, kind="stable")
    else:
        order = np.lexsort((values, codes))
    return values[order], np.bincount(codes, minlength=n_groups)


# --- HdrHistogram buckets (the layout lives in workbench.analyse.hdr) ---------------------------


def bucket_counts(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty buckets of a histogram: sorted counts-array indices and their counts."""
    counts = np.ctypeslib.as_array(hist.counts).astype(np.int64)
    nonzero = np.flatnonzero(counts)
    return nonzero.astype(np.int64), counts[nonzero]


def bucket_values_us(hist: HdrHistogram, index: np.ndarray) -> np.ndarray:
    """Highest value equivalent to each counts index (what HdrHistogram reports), in µs."""
    index = np.asarray(index, dtype=np.int64)
    half_mag, half = hist.sub_bucket_half_count_magnitude, hist.sub_bucket_half_count
    bucket = (index >> half_mag) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0
    sub = np.where(first, sub - half, sub)
    bucket = np.where(first, 0, bucket) + hist.unit_magnitude
    return (sub << bucket) + (np.int64(1) << bucket) - 1


def percentiles_from_counts(counts: np.ndarray, values: np.ndarray,
                            percentiles: tuple[float, ...]) -> np.ndarray:
    """Nearest-rank percentiles of each row of a bucket-count matrix (rows x buckets).

    ``values`` are the bucket values in ascending order; rows with no count give NaN.
    Returns an array of shape (rows, len(percentiles)).
    """
    counts = np.atleast_2d(counts)
    cum = np.cumsum(counts, axis=1)
    total = np.rint(cum[:, -1]).astype(np.int64) if cum.size else np.zeros(len(counts), np.int64)
    out = np.full((len(counts), len(percentiles)), np.nan)
    for j, p in enumerate(percentiles):
        rank = nearest_rank(total, p)
        idx = (cum >= rank[:, None] - 1e-9).argmax(axis=1)  # first bucket reaching the rank
        out[:, j] = np.where(total > 0, values[idx], np.nan)
    return out


def bootstrap_ratio_ci(a_units: np.ndarray, b_units: np.ndarray, values: np.ndarray,
                       percentiles: tuple[float, ...], n_boot: int = 1000,
                       confidence: float = CONFIDENCE, seed: int = 0,
                       chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``percentile(B) / percentile(A)``, resampling units.

    A unit is a row of bucket counts: one time window or one whole run, never one request,
    because requests within a run are autocorrelated and an i.i.d. bootstrap over them would
    understate the uncertainty. Each replicate draws as many units as each side has, with
    replacement, pools their counts and takes the percentile of the pool (never an average of
    percentiles). Returns ``(low, high)`` arrays, one entry per percentile.
    """
    rng = np.random.default_rng(seed)
    a_units, b_units = np.atleast_2d(a_units), np.atleast_2d(b_units)
    ratios = np.empty((n_boot, len(percentiles)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        wa = rng.multinomial(len(a_units), np.full(len(a_units), 1 / len(a_units)), size=size)
        wb = rng.multinomial(len(b_units), np.full(len(b_units), 1 / len(b_units)), size=size)
        qa = percentiles_from_counts(wa @ a_units, values, percentiles)
        qb = percentiles_from_counts(wb @ b_units, values, percentiles)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start:start + size] = qb / qa
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail], axis=0)
    return low, high


def min_attainable_p(n: int, m: int) -> float:
    """Smallest two-sided p-value a Mann-Whitney U test can give for samples of n and m."""
    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n + m, n))


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (NaN-free inputs); 1.0 when a side is empty."""
    from scipy import stats as sps

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return 1.0
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0  # identical constants: scipy would warn and return NaN
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


FACTOR = 1.10  # the smallest change called "slower" or "faster" (asv's default factor)
ALPHA = 0.002  # significance level of a change (asv's)
VERDICTS = ("slower", "faster", "no change", "inconclusive", "insufficient data")
POWER = 0.80  # the power the "what would settle it" estimates aim for


def verdict(ratio: float, p_value: float, ci_low: float, ci_high: float, factor: float,
            alpha: float) -> str:
    """asv's rule for a change, and an equivalence rule for its absence.

    ``slower`` when ``ratio > factor`` and ``p < alpha``; ``faster`` when ``ratio < 1/factor``
    and ``p < alpha`` (a change needs both a minimum effect and significance). ``no change``
    only when the interval ``[ci_low, ci_high]`` lies inside ``[1/factor, factor]``: the data
    rule out a change as large as the factor. Anything else is ``inconclusive``: neither a
    change nor its absence is shown (a missing interval shows nothing).
    """
    if np.isfinite(ratio) and np.isfinite(p_value) and p_value < alpha:
        if ratio > factor:
            return "slower"
        if ratio < 1 / factor:
            return "faster"
    if np.isfinite(ci_low) and np.isfinite(ci_high) and 1 / factor <= ci_low \
            and ci_high <= factor:
        return "no change"
    return "inconclusive"


def overall(verdicts: Iterable[str]) -> str:
    """One verdict over rows: any change wins (slower first), then inconclusive; "no change"
    needs every row to show it; rows that are all untestable give "insufficient data"."""
    verdicts = set(verdicts)
    for v in ("slower", "faster", "inconclusive"):
        if v in verdicts:
            return v
    if verdicts == {"no change"}:
        return "no change"
    return "inconclusive" if "no change" in verdicts else "insufficient data"


def min_units_for_test(alpha: float) -> int:
    """Fewest units a side (n = m) for which a Mann-Whitney test can reach ``p < alpha``."""
    n = 1
    while min_attainable_p(n, n) >= alpha:
        n += 1
    return n


def units_for_power(a: np.ndarray, b: np.ndarray, alpha: float,
                    target: float = POWER) -> int | None:
    """Units a side for a Mann-Whitney test at ``alpha`` to detect, with power ``target``, the
    shift between samples ``a`` and ``b`` (per-unit percentiles); None if they show none.

    Noether's formula, ``n = (z_{1-α/2} + z_target)² / (6 (p' - ½)²)`` a side, where
    ``p' = P(B > A)`` is the test's own effect size, estimated as ``U / (n m)``. It is
    distribution-free, slightly conservative for normal data, and never below the units the
    test needs to reach ``alpha`` at all.
    """
    from scipy import stats as sps

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return None
    p_shift = sps.mannwhitneyu(b, a).statistic / (a.size * b.size)
    if p_shift == 0.5:
        return None
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(target)
    return max(min_units_for_test(alpha), math.ceil(z**2 / (6 * (p_shift - 0.5) ** 2)))


def units_for_interval(units: int, ratio: float, ci_low: float, ci_high: float,
                       factor: float) -> int | None:
    """Units a side for the interval to fit inside ``[1/factor, factor]``, if it can.

    Each side of the interval, in log scale, shrinks as ``1/sqrt(units)`` towards the point
    estimate and must fit in the room between the estimate and its bound. None when the point
    estimate itself is outside (more of the same data would not show "no change").
    """
    if not all(np.isfinite(v) and v > 0 for v in (ratio, ci_low, ci_high)) or units < 1:
        return None
    log_f, log_r = math.log(factor), math.log(ratio)
    if abs(log_r) >= log_f:
        return None
    scale = max((max(math.log(ci_high / ratio), 0.0) / (log_f - log_r)) ** 2,
                (max(math.log(ratio / ci_low), 0.0) / (log_f + log_r)) ** 2)
    return max(units, math.ceil(units * scale))


# --- repeated runs: the run as the unit ---------------------------------------------------------


def welch_log(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Welch's t on the logs of per-run values (see the module docstring); NaNs dropped.

    Returns ``a`` and ``b`` (geometric means), ``ratio`` (b/a), ``ci_low``/``ci_high``,
    ``p_value``, ``df``, ``sd`` (the pooled standard deviation of the logs, for power) and
    the counts ``n_a``/``n_b``. Fewer than two runs on a side give NaNs (no variance).
    """
    x = np.log(np.asarray(a, dtype=float))
    y = np.log(np.asarray(b, dtype=float))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    n, m = x.size, y.size
    out = {"n_a": float(n), "n_b": float(m), "a": np.nan, "b": np.nan, "ratio": np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "df": np.nan, "sd": np.nan}
    if n == 0 or m == 0:
        return out
    d = y.mean() - x.mean()
    out |= {"a": float(np.exp(x.mean())), "b": float(np.exp(y.mean())), "ratio": float(np.exp(d))}
    if n < 2 or m < 2:
        return out
    va, vb = x.var(ddof=1) / n, y.var(ddof=1) / m
    se = math.sqrt(va + vb)
    out["sd"] = float(math.sqrt(((n - 1) * x.var(ddof=1) + (m - 1) * y.var(ddof=1))
                                / (n + m - 2)))
    if se == 0:  # every run of each side measured the same value
        same = d == 0
        return out | {"p_value": 1.0 if same else 0.0, "ci_low": out["ratio"],
                      "ci_high": out["ratio"], "df": float(n + m - 2)}
    df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (m - 1))
    half = special.stdtrit(df, 1 - (1 - confidence) / 2) * se  # the t quantile, as a ufunc
    return out | {"p_value": float(2 * special.stdtr(df, -abs(d) / se)), "df": float(df),
                  "ci_low": float(np.exp(d - half)), "ci_high": float(np.exp(d + half))}


def t_power(shift: float, se: float, df: float, alpha: float) -> float:
    """Power of a two-sided t test at ``alpha`` for a true ``shift`` whose estimate has
    standard error ``se`` with ``df`` degrees of freedom (noncentral t)."""
    if not (se > 0 and df > 0):
        return float("nan")
    crit = special.stdtrit(df, 1 - alpha / 2)
    nc = abs(shift) / se
    far = special.nctdtr(df, nc, -crit)  # the wrong-sign tail: negligible, NaN when tiny
    return float(1 - special.nctdtr(df, nc, crit) + (far if np.isfinite(far) else 0.0))


def runs_for_power(shift: float, sd: float, alpha: float, target: float = POWER) -> int | None:
    """Runs a side for Welch's t on logs (equal runs and spread a side, so ν = 2n - 2) to
    detect a log ``shift`` with power ``target`` at ``alpha``, given the per-run standard
    deviation ``sd`` of the logs; None when there is no shift or no spread to go by."""
    if not (np.isfinite(shift) and np.isfinite(sd)) or shift == 0 or sd <= 0:
        return None
    return smallest_n(2, lambda n: t_power(shift, sd * math.sqrt(2 / n), 2 * n - 2, alpha)
                      >= target)


def runs_for_interval(shift: float, sd: float, factor: float,
                      confidence: float = CONFIDENCE) -> int | None:
    """Runs a side for the Welch interval of a log ``shift`` (per-run standard deviation
    ``sd`` of the logs, ν = 2n - 2) to fit inside ``[1/factor, factor]``; None when the shift
    itself is outside (more runs would not show "no change") or there is no spread."""
    room = math.log(factor) - abs(shift)
    if not (np.isfinite(room) and np.isfinite(sd)) or room <= 0 or sd < 0:
        return None
    return smallest_n(2, lambda n: special.stdtrit(2 * n - 2, 1 - (1 - confidence) / 2)
                      * sd * math.sqrt(2 / n) <= room)


def smallest_n(first: int, ok: Callable[[int], bool], most: int = 100_000) -> int | None:
    """The smallest n >= ``first`` with ``ok(n)``, for an ``ok`` that stays true once true
    (doubling, then bisection); None when not even ``most`` will do."""
    high = first
    while not ok(high):
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(first, high // 2)
    if ok(low):
        return low
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


# --- exact order statistics of streamed values, in bounded memory ------------------------------

SELECT_DIGIT_BITS = (8, 16)  # a pass splits each candidate bucket into 2**8 to 2**16 ones,
SELECT_COUNTS = 1 << 20  # as many as 2**20 counts (8 MiB) allow: few buckets split finer
SELECT_GATHER = 256  # a bucket holding at most this many values is gathered and sorted
_SIGN = np.uint64(1 << 63)


def order_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned 64-bit keys that sort as the float64 ``values`` do (no NaN): sign bit set for
    positives, every bit flipped for negatives."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def from_order_keys(keys: np.ndarray) -> np.ndarray:
    """The float64 values of :func:`order_keys`."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).view(np.float64)


def key_bounds(values: np.ndarray, bounds: tuple[int, int] | None = None
               ) -> tuple[int, int] | None:
    """The smallest and largest :func:`order_keys` of ``values`` and of ``bounds`` so far."""
    if not len(values):
        return bounds
    keys = order_keys(values)
    low, high = int(keys.min()), int(keys.max())
    return (low, high) if bounds is None else (min(low, bounds[0]), max(high, bounds[1]))


def select_ranks(scan: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                 groups: np.ndarray, ranks: np.ndarray,
                 bounds: tuple[int, int] | None = None) -> np.ndarray:
    """The value of 1-based rank ``ranks[i]`` within group ``groups[i]``, exactly, without
    holding the values: ``scan()`` yields, afresh on each call, chunks of ``(group codes,
    float64 values)``; a rank must lie within its group's size.

    Radix selection over :func:`order_keys`: a first scan finds the keys' range (unless
    ``bounds`` from :func:`key_bounds` gives it, or a wider one); each further
    scan counts, per candidate bucket (one per distinct group and rank), its values in 2**8 to
    2**16 sub-buckets and keeps the one holding the rank, until a bucket holds at most
    :data:`SELECT_GATHER` values (one last scan gathers and sorts them) or a single key. Memory
    is at most :data:`SELECT_COUNTS` counts (or 256 per query), :data:`SELECT_GATHER` values
    per query and one chunk, whatever the number of values.
    """
    groups = np.asarray(groups, dtype=np.int64)
    ranks = np.asarray(ranks, dtype=np.int64)
    q = len(groups)
    if q == 0:
        return np.zeros(0)
    if bounds is None:
        for _, values in scan():
            bounds = key_bounds(values, bounds)
    if bounds is None:
        raise ValueError("select_ranks: no values to rank")
    lo = np.full(q, bounds[0], dtype=np.uint64)  # each query's bucket: [lo, lo + 2**width)
    width = (bounds[1] - bounds[0]).bit_length()
    below = np.zeros(q, np.int64)  # values of the group under the bucket
    size = np.full(q, np.iinfo(np.int64).max)  # values in the bucket (unknown at first)
    active = np.ones(q, bool)
    if width == 0:  # every value is the same
        return from_order_keys(lo)
    while active.any():
        gather = size <= SELECT_GATHER
        # distinct (group, lo) buckets of the active queries; in a group they are disjoint
        idx = np.flatnonzero(active)
        pairs, bq = np.unique(np.stack([groups[idx], lo[idx].view(np.int64)], 1), axis=0,
                              return_inverse=True)
        bq = bq.reshape(-1)
        fewest, most = SELECT_DIGIT_BITS
        room = (SELECT_COUNTS // len(pairs)).bit_length() - 1
        step = min(width, max(fewest, min(most, room)))
        digits = 1 << step
        by_group = {}  # group -> its buckets' lower keys (ascending) and bucket numbers
        for g in np.unique(pairs[:, 0]):
            ids = np.flatnonzero(pairs[:, 0] == g)
            los = pairs[ids, 1].view(np.uint64)
            order = np.argsort(los)
            by_group[int(g)] = (los[order], ids[order])
        counts = np.zeros(len(pairs) * digits, np.int64)
        gathered: list[tuple[np.ndarray, np.ndarray]] = []
        gather_bucket = np.zeros(len(pairs), bool)
        gather_bucket[bq[gather[idx]]] = True
        for codes, values in scan():
            codes = np.asarray(codes, dtype=np.int64)
            order = np.argsort(codes, kind="stable")
            present, starts = np.unique(codes[order], return_index=True)
            cells = []  # bucket * digits + digit of each value in a bucket being refined
            for g, start, end in zip(present, starts, np.r_[starts[1:], len(codes)],
                                     strict=True):
                if int(g) not in by_group:
                    continue
                los, ids = by_group[int(g)]
                keys = order_keys(values[order[start:end]])
                at = np.searchsorted(los, keys, side="right") - 1
                inside = at >= 0
                at, keys = at[inside], keys[inside]
                offset = keys - los[at]
                inside = offset >> np.uint64(width) == 0 if width < 64 else np.ones_like(at, bool)
                b, offset, keys = ids[at[inside]], offset[inside], keys[inside]
                take = gather_bucket[b]
                if take.any():
                    gathered.append((b[take], keys[take]))
                cells.append(b[~take] * digits
                             + (offset[~take] >> np.uint64(width - step)).astype(np.int64))
            if cells:
                cell, n = np.unique(np.concatenate(cells), return_counts=True)
                counts[cell] += n
        counts = counts.reshape(len(pairs), digits)
        if gathered:
            b_all = np.concatenate([b for b, _ in gathered])
            k_all = np.concatenate([k for _, k in gathered])
            order = np.lexsort((k_all, b_all))
            b_all, k_all = b_all[order], k_all[order]
            first = np.searchsorted(b_all, np.arange(len(pairs)))
        need = ranks[idx] - below[idx]  # the rank within each query's bucket
        took = gather_bucket[bq]
        if took.any():
            lo[idx[took]] = k_all[first[bq[took]] + need[took] - 1]
            active[idx[took]] = False
        refine, b, need = idx[~took], bq[~took], need[~took]
        # the sub-bucket reaching each rank: cumulative counts, each bucket's row lifted above
        # the one before, so one searchsorted serves every query (in place: no second array)
        cum = np.cumsum(counts, axis=1, out=counts)
        lift = np.arange(len(pairs), dtype=np.int64) * (int(cum[:, -1].max()) + 1)
        cum += lift[:, None]
        d = np.searchsorted(cum.ravel(), need + lift[b]) - b * digits
        before = np.where(d > 0, cum[b, np.maximum(d - 1, 0)] - lift[b], 0)
        below[refine] += before
        size[refine] = cum[b, d] - lift[b] - before
        lo[refine] += d.astype(np.uint64) << np.uint64(width - step)
        if width - step == 0:
            active[refine] = False
        width -= step
    return from_order_keys(lo)
