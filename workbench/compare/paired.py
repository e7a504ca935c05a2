"""Paired rounds of an interleaved A/B: the statistics ``workbench ab`` judges by.

Pure functions, numpy in and dicts out, no I/O (asv's ``_stats.py`` is the model).

**Design.** Builds A and B run alternately on one host in rounds; round k is one run of each,
in the order AB when k is even and BA when k is odd (:func:`abba_order`: A B B A A B B A ...).
The pair is the unit: whatever the machine does slowly (a kernel, a neighbour, a warming disk)
reaches both runs of a pair nearly alike, and the order alternates so that a steady drift adds
``+δ`` to one pair and ``-δ`` to the next, cancelling in the mean instead of piling up on one
side.

**Statistic.** Per pair, ``d_k = ln(B_k / A_k)`` for a percentile (p50, p95 or p99 of each
run's whole histogram). With ``n`` pairs, ``d̄`` their mean and ``s`` their standard deviation,
the paired t on log ratios::

    t = d̄ / (s / √n),   ν = n - 1,   p = 2 P(T_ν > |t|),
    ratio = exp(d̄)      (the geometric mean of the per-pair ratios)
    interval  exp(d̄ ± t_{ν, 1-γ/2} s / √n)

Why a t and not a sign or Wilcoxon signed-rank test: a rank test on n pairs can never give a
two-sided p below ``2 / 2ⁿ``, so at the workbench's ``alpha`` of 0.002 it needs ten pairs
before it can say anything, and more once alpha is split over looks (below): twenty runs or
more for any verdict. The log ratio of two runs' percentiles, each from thousands of requests,
is close to normal (a percentile is asymptotically normal), and under "no change" A and B
are exchangeable within a pair, so ``d`` is symmetric about 0; for symmetric data the t's
false-alarm rate stays at or below its nominal level at small alphas, heavy tails only making it
more cautious (Efron, "Student's t-test under symmetry conditions", JASA 1969). Tests here
check both on synthetic data, a drifting machine included.

**Disturbed runs.** A run whose percentile is more than :data:`DISTURBED` times above or
below the median of its own side's runs is set aside with its pair: measured on the real
certctl, one run in a few dozen stalls (a p50 of 116 ms among runs of 2-5 ms), and one such
pair makes the t useless (its interval spans 0.15-6.2 on a 1.4x slowdown found in 8 of 9
pairs). A change in the build moves every run of a side, never one; the machine moves one.
The rule looks at each side's values, not at which pair holds them, so under "no change" the
pairs kept are as exchangeable as before and the t keeps its level; on a simulated drifting
machine with 6 % of runs stalled 4-50x (tests/test_paired.py), the plain t found a 1.3x
slowdown in 126 of 300 sessions, with the rule in all 300, and A/A sessions stayed within
alpha (23 of 1000 at 5 %).
The rounds set aside are named in the row (``set_aside``).

**Sequential rule.** ``ab`` looks after every round, from ``min_pairs`` to ``max_pairs``, and
stops as soon as the verdict is settled. Looking repeatedly at a fixed-level test inflates its
false alarms (Armitage, McPherson & Rowe 1969: five looks at 5 % give 14 %). The rule here
splits the error rates over the planned looks, Bonferroni style: with
``K = max_pairs - min_pairs + 1`` looks, each look tests at ``alpha / K`` and shows the
interval at confidence ``1 - (1 - confidence) / K``. By Boole's inequality the chance that any
look calls a change that is not there is at most ``alpha``, and the chance that any interval
misses the true ratio (so that a "no change" is wrong) at most ``1 - confidence``, however the
looks depend on each other (Jennison & Turnbull, *Group Sequential Methods with Applications to
Clinical Trials*, 2000, on repeated significance tests and their Bonferroni bound).
Alpha-spending boundaries (Lan & DeMets, Biometrika 1983) or a mixture SPRT (Robbins 1970;
Johari, Pekelis & Walsh, "Peeking at A/B tests", KDD 2017) spend less at each look, but both
rest on a normal statistic of known variance, which a t on three to twenty pairs is not; the
split holds what it promises at any size, and costs about a pair or two at these.

**Verdict**, per percentile, in :mod:`workbench.compare.runs`'s words: ``slower`` when the ratio is
above ``factor`` and ``p < alpha / K``; ``faster`` its mirror; ``no change`` when the interval
lies inside ``[1/factor, factor]``; otherwise ``inconclusive``, and at the last look with what
would settle it (pairs for :data:`stats.POWER` power, or for the interval to fit); before
``min_pairs`` or without a spread to go by, ``insufficient data``.

The ``ab`` command calls :func:`abba_order` to plan its runs, :func:`judge` per endpoint and
percentile after every round, :func:`workbench.analyse.stats.overall` over those rows (as compare
does), and :func:`settled` to decide whether to stop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import special

from workbench.analyse import stats

MIN_PAIRS = 3  # the first look: a t on two pairs has one degree of freedom
MAX_PAIRS = 16  # default planned rounds: 32 short runs
DISTURBED = 3.0  # a run this many times off its side's median is the machine, not the build
SETTLED = ("slower", "faster", "no change")


def abba_order(rounds: int) -> list[tuple[str, str]]:
    """The run order of ``rounds`` rounds: ``("A", "B")``, ``("B", "A")``, ``("A", "B")`` ..."""
    return [("A", "B") if k % 2 == 0 else ("B", "A") for k in range(rounds)]


def looks(min_pairs: int = MIN_PAIRS, max_pairs: int = MAX_PAIRS) -> int:
    """How many looks the plan makes: one after every round from ``min_pairs`` on."""
    if not 2 <= min_pairs <= max_pairs:
        raise ValueError(f"pairs: need 2 <= min_pairs <= max_pairs, got {min_pairs}, "
                         f"{max_pairs}")
    return max_pairs - min_pairs + 1


def log_ratios(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``ln(b_k / a_k)`` of each pair with a positive value on both sides (others dropped)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"pairs: A has {a.size} values and B {b.size}; one of each per round")
    keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return np.log(b[keep] / a[keep])


def disturbed(a: Sequence[float], b: Sequence[float],
              factor: float = DISTURBED) -> np.ndarray:
    """Which pairs hold a disturbed run (module docstring): a value more than ``factor`` times
    above or below the median of its side's values. Missing values are left to
    :func:`log_ratios`."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"pairs: A has {a.size} values and B {b.size}; one of each per round")
    out = np.zeros(a.shape, dtype=bool)
    for side in (a, b):
        ok = np.isfinite(side) & (side > 0)
        if ok.any():
            logs = np.log(np.where(ok, side, 1.0))
            out |= ok & (np.abs(logs - np.median(logs[ok])) > math.log(factor))
    return out


def paired_t(d: np.ndarray, alpha: float, confidence: float) -> dict[str, float]:
    """The paired t on log ratios ``d`` (module docstring): ratio, interval at
    ``confidence``, two-sided p, ν, and ``sd`` of the log ratios."""
    n = d.size
    out = {"pairs": n, "ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "p_value": np.nan, "df": np.nan, "sd": np.nan}
    if n == 0:
        return out
    mean = float(d.mean())
    out["ratio"] = math.exp(mean)
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    out |= {"sd": sd, "df": float(n - 1)}
    se = sd / math.sqrt(n)
    if se == 0:  # every pair measured the same ratio
        return out | {"p_value": 1.0 if mean == 0 else 0.0, "ci_low": out["ratio"],
                      "ci_high": out["ratio"]}
    half = special.stdtrit(n - 1, 1 - (1 - confidence) / 2) * se
    return out | {"p_value": float(2 * special.stdtr(n - 1, -abs(mean) / se)),
                  "ci_low": math.exp(mean - half), "ci_high": math.exp(mean + half)}


def _pairs_for_power(shift: float, sd: float, alpha: float, min_pairs: int) -> int | None:
    """Pairs for the t at a plan's per-look level to reach :data:`stats.POWER` against a log
    ``shift``, the plan re-made with that many rounds (so a smaller per-look alpha)."""
    if not (np.isfinite(shift) and np.isfinite(sd)) or shift == 0 or sd <= 0:
        return None
    return stats.smallest_n(max(min_pairs, 2), lambda n: stats.t_power(
        shift, sd / math.sqrt(n), n - 1, alpha / looks(min_pairs, n)) >= stats.POWER)


def _pairs_for_interval(shift: float, sd: float, factor: float, confidence: float,
                        min_pairs: int) -> int | None:
    """Pairs for a plan's interval (re-made with that many rounds) to fit inside the factor."""
    room = math.log(factor) - abs(shift)
    if not (np.isfinite(room) and np.isfinite(sd)) or room <= 0 or sd < 0:
        return None
    return stats.smallest_n(max(min_pairs, 2), lambda n: special.stdtrit(
        n - 1, 1 - (1 - confidence) / looks(min_pairs, n) / 2) * sd / math.sqrt(n) <= room)


def judge(a: Sequence[float], b: Sequence[float], factor: float = stats.FACTOR,
          alpha: float = stats.ALPHA, confidence: float = stats.CONFIDENCE,
          min_pairs: int = MIN_PAIRS, max_pairs: int = MAX_PAIRS) -> dict:
    """The verdict on one percentile after the rounds so far.

    ``a[k]`` and ``b[k]`` are round k's runs' values of the percentile (ms). Returns the
    paired t (:func:`paired_t`) at this look's level, with ``alpha_look``,
    ``confidence_look``, ``looks`` (K), ``verdict``, ``final`` (this is the last planned look),
    ``set_aside`` (1-based rounds holding a disturbed run, not judged) and ``to_settle``
    (words; empty when settled, or before the last look).
    """
    if not factor > 1:
        raise ValueError(f"factor must be above 1 (1.10 means 10 %), got {factor}")
    if not 0 < alpha < 1 or not 0 < confidence < 1:
        raise ValueError(f"alpha and confidence must be between 0 and 1, got {alpha}, "
                         f"{confidence}")
    k = looks(min_pairs, max_pairs)
    alpha_look, confidence_look = alpha / k, 1 - (1 - confidence) / k
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    aside = disturbed(a, b)
    d = log_ratios(a[~aside], b[~aside])
    out = paired_t(d, alpha_look, confidence_look) | {
        "alpha_look": alpha_look, "confidence_look": confidence_look, "looks": k,
        "final": len(a) >= max_pairs, "set_aside": [int(i) + 1 for i in np.flatnonzero(aside)]}
    if d.size < min_pairs:
        verdict = "insufficient data"
    else:
        verdict = stats.verdict(out["ratio"], out["p_value"], out["ci_low"], out["ci_high"],
                                factor, alpha_look)
    out["verdict"] = verdict
    out["to_settle"] = "" if verdict in SETTLED or not out["final"] else to_settle(
        out, factor, alpha, confidence, min_pairs)
    return out


def to_settle(row: dict, factor: float, alpha: float, confidence: float,
              min_pairs: int = MIN_PAIRS) -> str:
    """What would settle an unsettled row: pairs for the test's power when the ratio is
    beyond the factor, for the interval to fit inside it when it is not."""
    ratio, sd = row["ratio"], row["sd"]
    if not (np.isfinite(ratio) and ratio > 0):
        return "pairs with a value on both sides"
    shift = math.log(ratio)
    if abs(shift) > math.log(factor):
        need = _pairs_for_power(shift, sd, alpha, min_pairs)
        what = f"{stats.POWER:.0%} power to confirm B/A {ratio:.2f}"
    else:
        need = _pairs_for_interval(shift, sd, factor, confidence, min_pairs)
        what = f"the interval to narrow inside [{1 / factor:.2f}, {factor:.2f}]"
    if need is None:
        return "more pairs: these show no spread between pairs to size them by"
    return (f"about {need} rounds (pairs) for {what}, given the spread between pairs "
            f"measured (--max-rounds {need})")


def settled(verdicts: Iterable[str]) -> bool:
    """Whether ``ab`` may stop: a row says slower (nothing later outranks it), or every row is
    settled (slower, faster or no change)."""
    verdicts = list(verdicts)
    return bool(verdicts) and ("slower" in verdicts or all(v in SETTLED for v in verdicts))
