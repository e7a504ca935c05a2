"""Compare two runs, two baselines or two sets of repeated runs, statistically.

For each endpoint and each of p50, p95 and p99 (``B / A``; above 1 means B is slower):

* the ratio of the pooled percentiles, with a bootstrap confidence interval that resamples
  whole time windows (one run per side) or whole runs (several per side), never single
  requests, which are autocorrelated;
* the test at the unit where the variance lives: with two or more runs a side, Welch's t on
  the logs of each run's percentile (the run is the unit: windows of one run share its level,
  so windows pooled from several runs are not independent samples); with one run on a side, a
  two-sided Mann-Whitney U test over per-window percentiles, which sees the variation within
  each run but cannot see run-to-run drift (the verdict says so);
* a verdict honest in all three directions: ``slower`` when the ratio exceeds ``factor``
  (1.10) **and** p < ``alpha`` (0.002), ``faster`` for the mirror image (asv's rule);
  ``no change`` only when the interval lies inside ``[1/factor, factor]``, so the data rule
  out a change as large as the factor; otherwise ``inconclusive``, with what would settle it
  (``to_settle``: how many windows or runs a side, computed from the data at hand). When the
  samples are too few for the test ever to reach ``alpha`` (or a side has no windows, as an
  imported k6 summary), the verdict is ``insufficient data``: no claim either way.

Records measured on machines with different fingerprints (or an unknown machine), with
different parameters or fixture sizes, are ``not comparable`` unless forced; so are records
whose machine calibrated differently (:func:`workbench.report.calibration.judge`: the same machine
name measured more than ``calibration_tolerance`` slower or faster) or not at all, since a
verdict between two moments needs the machine measured beside each; ``workbench ab`` answers
instead, with both builds interleaved on one host.

Everything works on the records alone (``record.json`` of a run, or a committed baseline):
their per-window HdrHistograms carry what the raw samples would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analyse import hdr, stats
from workbench.analyse.analysis import ALL, window_seconds
from workbench.compare.baseline import load_record
from workbench.driver.result import RESULT_FILE, SHARD_FILE, SPEC_FILE
from workbench.errors import WorkbenchError
from workbench.paths import baselines_dir
from workbench.report import calibration
from workbench.report.record import RECORD_FILE

FACTOR = stats.FACTOR
ALPHA = stats.ALPHA
STATS = (50.0, 95.0, 99.0)
N_BOOT = 1000
SEED = 20260502  # fixed: the same inputs give the same interval, run after run
DRIVER_FILES = (RESULT_FILE, SPEC_FILE, SHARD_FILE)  # in run folders beside the records


# --- loading ------------------------------------------------------------------------------


def load_records(paths: str | Path | Iterable[str | Path]) -> list[dict]:
    """Records named by run folders (their ``record.json``), record files, or folders of them.

    One path is taken as well as a list of them (papermill's ``-p a runs/X`` passes a string).
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    records: list[dict] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / RECORD_FILE).exists():
            records.append(load_record(path / RECORD_FILE))
        elif path.is_dir() and (path / RESULT_FILE).exists():
            raise WorkbenchError(f"{path} is a run without a {RECORD_FILE} (the driver's "
                                 f"{RESULT_FILE} alone does not compare); run its notebook "
                                 "through the record step")
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if not p.name.startswith(".")
                           and p.name not in DRIVER_FILES)
            if not files:
                raise WorkbenchError(f"{path} holds no record; pass a run folder "
                                     "(runs/<id>), a baseline .json or a folder of them")
            records.extend(load_record(p) for p in files)
        elif path.is_file():
            records.append(load_record(path))
        else:
            raise WorkbenchError(f"{path} is neither a run folder nor a baseline record; pass "
                                 "runs/<id> or baselines/<machine>/<scenario>/<file>.json")
    return sorted(records, key=lambda r: (r["run"]["started_at"], r["run_id"]))


def load_baselines(root: str | Path | None = None, scenario: str | None = None,
                   machine: str | None = None) -> list[dict]:
    """Committed baseline records (``baselines/`` or ``root``), of a scenario and machine name."""
    base = Path(root) if root else baselines_dir()
    records = [load_record(p) for p in sorted(base.glob("*/*/*.json"))]
    return [r for r in records if (scenario is None or r["scenario"] == scenario)
            and (machine is None or r["machine"]["name"] == machine)]


# --- comparability ------------------------------------------------------------------------


def comparability(a: Sequence[Mapping], b: Sequence[Mapping]) -> list[str]:
    """Why these records cannot be compared; empty when they can (conbench's key, asv's ``x``)."""
    records = list(a) + list(b)
    reasons = []
    scenarios = sorted({r["scenario"] for r in records})
    if len(scenarios) > 1:
        reasons.append(f"different scenarios: {', '.join(scenarios)}")
    unknown = [r["run_id"] for r in records if not r["machine"].get("fingerprint")]
    if unknown:
        reasons.append(f"unknown machine for {len(unknown)} record(s) (imported: "
                       f"{', '.join(unknown[:3])})")
    fingerprints = {r["machine"]["fingerprint"]: r["machine"]["name"] for r in records
                    if r["machine"].get("fingerprint")}
    if len(fingerprints) > 1:
        reasons.append("different machines (fingerprints "
                       + ", ".join(f"{f} {n}" for f, n in sorted(fingerprints.items())) + ")")
    protocols = {r.get("protocol") or "unknown" for r in records}
    if len(protocols) > 1:  # HTTP/1.1 and HTTP/2 load a server differently: not one baseline
        reasons.append(f"different protocols: {', '.join(sorted(protocols))}")
    params = {r["parameters_hash"]: r["parameters"] for r in records}
    if len(params) > 1:
        keys = sorted({k for p in params.values() for k in p
                       if len({json.dumps(q.get(k), sort_keys=True) for q in params.values()}) > 1})
        reasons.append(f"different parameters ({', '.join(keys) or 'hash differs'})")
    sizes = {json.dumps(r["fixtures"].get("sizes"), sort_keys=True) for r in records}
    if len(sizes) > 1:
        reasons.append(f"different fixture sizes ({'; '.join(sorted(sizes))})")
    return reasons


TABLE_RATIO, TABLE_ROWS = 2.0, 10_000  # a table this many times larger, and this large: named


def _side_tables(records: Sequence[Mapping]) -> dict[str, dict[str, float]] | None:
    """One side's tables: each count the median over its records; None if one has none."""
    tables = [((r.get("database") or {}).get("tables_before_load")) for r in records]
    if not tables or not all(tables):
        return None
    names = set.intersection(*(set(t) for t in tables))
    return {name: {key: float(np.median([t[name][key] for t in tables]))
                   for key in ("rows", "dead_rows")} for name in names}


def database_differences(a: Sequence[Mapping], b: Sequence[Mapping]) -> list[str] | None:
    """The target database's tables in which the two sides' loads found it apart (rows or dead
    rows at least :data:`TABLE_RATIO` times more on one side, and at least
    :data:`TABLE_ROWS` of them), largest first; None when a side's records read none.

    Said, not refused: the same certctl build answers slower over a larger ``audit_events``
    (it grows a row a request), and a database that grew between the sides explains a
    difference the verdict would otherwise put on certctl."""
    ta, tb = _side_tables(a), _side_tables(b)
    if ta is None or tb is None:
        return None
    found = []
    for name in set(ta) & set(tb):
        for key, what in (("rows", "rows"), ("dead_rows", "dead rows")):
            x, y = ta[name][key], tb[name][key]
            if max(x, y) >= TABLE_ROWS and max(x, y) >= TABLE_RATIO * max(min(x, y), 1):
                found.append((max(x, y), f"{name} {x:,.0f} / {y:,.0f} {what}"))
    return [text for _, text in sorted(found, reverse=True)]


# --- windows as bucket counts ---------------------------------------------------------------


@dataclass(frozen=True)
class WindowSet:
    """One side's time windows for one endpoint: HDR bucket counts per window, and its run."""

    windows: list[tuple[np.ndarray, np.ndarray]]  # (sorted bucket indices, counts)
    run: np.ndarray  # index of the run each window belongs to

    @property
    def runs(self) -> int:
        return int(self.run.max()) + 1 if self.run.size else 0

    @classmethod
    def from_samples(cls, windows_ms: Sequence[np.ndarray],
                     run: Sequence[int] | None = None) -> WindowSet:
        """Windows from raw latency samples in milliseconds (tests, notebooks)."""
        out = []
        for values in windows_ms:
            hist = hdr.new()
            hdr.record_array(hist, (np.asarray(values) * 1000).astype(np.int64))
            out.append(stats.bucket_counts(hist))
        runs = np.zeros(len(out), np.int64) if run is None else np.asarray(run, np.int64)
        return cls(out, runs)

    @classmethod
    def from_records(cls, records: Sequence[Mapping], endpoint: str) -> WindowSet | None:
        """The endpoint's windows of every record; None if a record has none for it.

        ``all`` of a multi-endpoint record pools its endpoints' windows of the same start.
        """
        out, runs = [], []
        for i, rec in enumerate(records):
            by_endpoint = (rec.get("windows") or {}).get("by_endpoint") or {}
            names = sorted(by_endpoint) if endpoint == ALL and ALL not in by_endpoint \
                else [endpoint]
            if not all(n in by_endpoint for n in names) or not names:
                return None
            by_start: dict[float, list[str]] = {}
            for name in names:
                for w in by_endpoint[name]:
                    by_start.setdefault(float(w["t_s"]), []).append(w["histogram"])
            for start in sorted(by_start):
                out.append(stats.bucket_counts(hdr.merge(by_start[start])))
                runs.append(i)
        return cls(out, np.asarray(runs, np.int64))


def _dense(sides: Sequence[WindowSet]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bucket values (ms) over the union of non-empty buckets, and each side's count matrix."""
    union = np.unique(np.concatenate([idx for s in sides for idx, _ in s.windows]
                                     or [np.zeros(0, np.int64)]))
    matrices = []
    for side in sides:
        m = np.zeros((len(side.windows), union.size), dtype=np.int64)
        for row, (idx, counts) in enumerate(side.windows):
            m[row, np.searchsorted(union, idx)] = counts
        matrices.append(m)
    values = stats.bucket_values_us(hdr.new(), union) / 1000.0
    return values, matrices


def compare_windows(a: WindowSet, b: WindowSet, percentiles: Sequence[float] = STATS,
                    factor: float = FACTOR, alpha: float = ALPHA, n_boot: int = N_BOOT,
                    confidence: float = stats.CONFIDENCE, seed: int = SEED) -> list[dict]:
    """One row per percentile: A and B (ms), B/A with its interval, p and verdict.

    With two or more runs a side the run is the unit (:func:`stats.welch_log` on per-run
    percentiles); with one run on a side, the time window (a bootstrap interval over windows
    and a Mann-Whitney test over per-window percentiles), which cannot see run-to-run drift.
    """
    percentiles = tuple(percentiles)
    values, (ma, mb) = _dense([a, b])
    keep_a, keep_b = ma.sum(axis=1) > 0, mb.sum(axis=1) > 0
    ma, mb, run_a, run_b = ma[keep_a], mb[keep_b], a.run[keep_a], b.run[keep_b]
    if len(np.unique(run_a)) >= 2 and len(np.unique(run_b)) >= 2:
        return _compare_runs(values, ma, mb, run_a, run_b, percentiles, factor, alpha,
                             confidence)
    point_a = stats.percentiles_from_counts(ma.sum(axis=0), values, percentiles)[0]
    point_b = stats.percentiles_from_counts(mb.sum(axis=0), values, percentiles)[0]
    per_window_a = stats.percentiles_from_counts(ma, values, percentiles)
    per_window_b = stats.percentiles_from_counts(mb, values, percentiles)
    if len(ma) and len(mb) and n_boot > 0:
        low, high = stats.bootstrap_ratio_ci(ma, mb, values, percentiles, n_boot, confidence,
                                             seed)
    else:
        low = high = np.full(len(percentiles), np.nan)
    testable = stats.min_attainable_p(len(ma), len(mb)) < alpha
    rows = []
    for j, p in enumerate(percentiles):
        ratio = point_b[j] / point_a[j] if point_a[j] else np.nan
        p_value = stats.mann_whitney_p(per_window_a[:, j], per_window_b[:, j])
        if testable:
            verdict = stats.verdict(ratio, p_value, low[j], high[j], factor, alpha)
        else:
            verdict = "insufficient data"
        settle = "" if verdict in ("slower", "faster", "no change") else _to_settle(
            verdict, ratio, low[j], high[j], per_window_a[:, j], per_window_b[:, j],
            (a, b), factor, alpha)
        rows.append({
            "stat": stats.label(p), "a_ms": point_a[j], "b_ms": point_b[j], "ratio": ratio,
            "ci_low": low[j], "ci_high": high[j], "p_value": p_value,
            "a_windows": len(ma), "b_windows": len(mb), "a_units": len(ma),
            "b_units": len(mb), "unit": "windows", "verdict": verdict, "to_settle": settle,
        })
    return rows


def _compare_runs(values: np.ndarray, ma: np.ndarray, mb: np.ndarray, run_a: np.ndarray,
                  run_b: np.ndarray, percentiles: tuple[float, ...], factor: float,
                  alpha: float, confidence: float) -> list[dict]:
    """The rows of :func:`compare_windows` with the run as the unit: each run's percentile
    from its pooled windows, then Welch's t on their logs (:func:`stats.welch_log`)."""
    ua = np.stack([ma[run_a == r].sum(axis=0) for r in np.unique(run_a)])
    ub = np.stack([mb[run_b == r].sum(axis=0) for r in np.unique(run_b)])
    per_run_a = stats.percentiles_from_counts(ua, values, percentiles)
    per_run_b = stats.percentiles_from_counts(ub, values, percentiles)
    rows = []
    for j, p in enumerate(percentiles):
        t = stats.welch_log(per_run_a[:, j], per_run_b[:, j], confidence)
        verdict = stats.verdict(t["ratio"], t["p_value"], t["ci_low"], t["ci_high"], factor,
                                alpha)
        settle = "" if verdict in ("slower", "faster", "no change") else _runs_to_settle(
            t, factor, alpha)
        rows.append({
            "stat": stats.label(p), "a_ms": t["a"], "b_ms": t["b"], "ratio": t["ratio"],
            "ci_low": t["ci_low"], "ci_high": t["ci_high"], "p_value": t["p_value"],
            "a_windows": len(ma), "b_windows": len(mb), "a_units": int(t["n_a"]),
            "b_units": int(t["n_b"]), "unit": "runs", "verdict": verdict, "to_settle": settle,
        })
    return rows


def _runs_to_settle(t: Mapping[str, float], factor: float, alpha: float) -> str:
    """What would settle a row tested over runs: runs a side for the t's power when B/A is
    beyond the factor, for the interval to fit inside it when B/A is not."""
    ratio = t["ratio"]
    if not (np.isfinite(ratio) and ratio > 0):
        return "a percentile on both sides (one side has none)"
    if abs(math.log(ratio)) > math.log(factor):
        need = stats.runs_for_power(math.log(ratio), t["sd"], alpha)
        if need is None:
            return "more runs a side: these show no spread to size the test by"
        return (f"about {need} runs a side for {stats.POWER:.0%} power to confirm a shift of "
                f"B/A {ratio:.2f} at p < {alpha:g}, given the run-to-run spread measured")
    need = stats.runs_for_interval(math.log(ratio), t["sd"], factor)
    if need is None:
        return "more runs a side: these show no spread to size the interval by"
    return (f"about {need} runs a side to narrow the interval inside [{1 / factor:.2f}, "
            f"{factor:.2f}], given the run-to-run spread measured")


def _to_settle(verdict: str, ratio: float, low: float, high: float, window_a: np.ndarray,
               window_b: np.ndarray, sides: tuple[WindowSet, ...], factor: float,
               alpha: float) -> str:
    """What would settle an inconclusive (or untestable) row tested over windows, from the
    data at hand.

    Beyond the factor but not significant: windows a side for the test to have
    :data:`stats.POWER` for the shift its per-window percentiles show (Noether). Inside the
    factor: windows a side for the interval to narrow inside ``[1/factor, factor]``.
    """
    if verdict == "insufficient data":
        need = stats.min_units_for_test(alpha)
        return (f"at least {need} windows a side: with {len(window_a)} and {len(window_b)} "
                f"the test can never reach p < {alpha:g}; {_as_runs(need, sides)}")
    if not (np.isfinite(ratio) and ratio > 0):
        return "a percentile on both sides (one side has none)"
    if abs(math.log(ratio)) > math.log(factor):
        need = stats.units_for_power(window_a[np.isfinite(window_a)],
                                     window_b[np.isfinite(window_b)], alpha)
        if need is None:
            return ("repeats: B/A is beyond the factor but the per-window percentiles show no "
                    "shift, so the windows disagree with the pooled runs")
        return (f"about {need} windows a side for {stats.POWER:.0%} power to confirm a shift of "
                f"B/A {ratio:.2f} at p < {alpha:g}; {_as_runs(need, sides)}")
    if not (np.isfinite(low) and np.isfinite(high)):
        return "an interval: compare with resamples > 0"
    need = stats.units_for_interval(min(len(window_a), len(window_b)), ratio, low, high, factor)
    return (f"about {need} windows a side to narrow the interval inside "
            f"[{1 / factor:.2f}, {factor:.2f}]; {_as_runs(need, sides)}")


def _as_runs(windows: int, sides: tuple[WindowSet, ...]) -> str:
    """``windows`` a side as repeats of the runs compared, or as one longer run.

    A longer run gains windows only at the analysis' default windowing (a tenth of a run
    shorter than 100 s, else 10 s windows), so that is the run length given.
    """
    per_run = min(len(s.windows) / max(s.runs, 1) for s in sides)
    repeats = math.ceil(windows / per_run) if per_run else windows
    length = max(100.0, windows * window_seconds(100.0))
    return f"{repeats} runs like these a side, or one run of {length:g} s a side"


# --- the comparison -----------------------------------------------------------------------


@dataclass
class Comparison:
    """The outcome of :func:`compare`: a table per endpoint and statistic, and a verdict."""

    scenario: str
    a_runs: list[str]
    b_runs: list[str]
    comparable: bool
    reasons: list[str]
    forced: bool
    factor: float
    alpha: float
    confidence: float
    table: pd.DataFrame
    verdict: str
    curves: dict = field(default_factory=dict, repr=False)  # endpoint -> side -> (ms, counts)
    targets: str = ""  # what each side measured, for figure titles
    dates: str = ""  # when each side ran
    calibration: dict = field(default_factory=dict)  # A, B, ratios, tolerance, reason
    database: list[str] | None = None  # the tables the sides' databases differ in (A / B)

    def units(self) -> set[str]:
        """The units the rows were tested over: ``runs``, ``windows`` or both."""
        return set(self.table["unit"].dropna()) if "unit" in self.table else set()

    def rule(self) -> str:
        """The rule the verdict followed, in words, for the units the rows were tested over."""
        tests = []
        if "runs" in self.units():
            tests.append(f"Welch's t p < {self.alpha:g} over the logs of per-run percentiles "
                         f"(runs as the unit)")
        if "windows" in self.units() or not tests:
            tests.append(f"Mann-Whitney p < {self.alpha:g} over per-window percentiles (one "
                         "run a side: windows as the unit)")
        interval = ("t interval" if self.units() == {"runs"} else "bootstrap interval")
        return (f"slower/faster when B/A is beyond {self.factor:g} and "
                f"{' or '.join(tests)}; no change when the {self.confidence:.0%} {interval} "
                f"lies inside [{1 / self.factor:.3g}, {self.factor:g}]; else inconclusive; "
                f"alpha is each row's false-alarm rate")

    def verdict_text(self) -> str:
        """The verdict, why when the sides are not comparable, and what a single run a side
        cannot see."""
        if self.verdict == "not comparable":
            return "not comparable: " + "; ".join(self.reasons)
        if "windows" in self.units():
            return (f"{self.verdict} (one run on a side: its windows show the variation "
                    "within a run, not run-to-run drift; repeat runs, compare A1 A2 ... --vs "
                    "B1 B2 ..., or interleave them with workbench ab)")
        return self.verdict

    def calibration_text(self) -> str:
        """Both sides' calibration and their ratio, in a line each."""
        c = self.calibration
        if not c:
            return ""
        ratios = ", ".join(f"{k} {v:.3f}" for k, v in c["ratios"].items())
        judged = ("beyond" if c["reason"] else "within") + f" {c['tolerance']:.0%}"
        return (f"A {c['A']}\nB {c['B']}\nB/A "
                + (f"{ratios} ({judged})" if ratios else "none (a side has no calibration)"))

    def database_text(self) -> str:
        """Whether the sides' loads found the target database alike, in a line."""
        if self.database is None:
            return "unknown (a side's records have no table sizes)"
        if not self.database:
            return "alike (no table 2 x larger on one side)"
        return ("differs, A / B: " + "; ".join(self.database[:5])
                + (f"; {len(self.database) - 5} more" if len(self.database) > 5 else ""))

    def summary(self) -> pd.Series:
        """The comparison's header: what was compared, under which rule, and the verdict."""
        return pd.Series({
            "scenario": self.scenario, "A": ", ".join(self.a_runs), "B": ", ".join(self.b_runs),
            "calibration": self.calibration_text(),
            "database": self.database_text(),
            "comparable": "yes" if self.comparable else
            "no (forced: " + "; ".join(self.reasons) + ")" if self.forced else "no",
            "forced": self.forced,
            "rule": self.rule(),
            "verdict": self.verdict_text(),
        })

    def as_dict(self) -> dict:
        """The comparison as JSON-ready data (``workbench compare --json``): the header and
        one row per endpoint and statistic, a missing number as None."""
        rows = self.table.astype(object).where(self.table.notna(), None)
        return {"scenario": self.scenario, "a": self.a_runs, "b": self.b_runs,
                "comparable": self.comparable, "reasons": self.reasons, "forced": self.forced,
                "factor": self.factor, "alpha": self.alpha, "confidence": self.confidence,
                "verdict": self.verdict, "database": self.database,
                "rows": rows.to_dict(orient="records")}

    def text(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"{k:<11} " + str(v).replace("\n", "\n" + " " * 12)
                 for k, v in self.summary().items()]
        if len(self.table):
            lines.append("")
            shown = self.table.copy()
            for col in ("a_ms", "b_ms"):
                shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
            shown["B/A"] = shown["ratio"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
            shown["interval"] = [
                "" if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"
                for lo, hi in zip(shown["ci_low"], shown["ci_high"], strict=True)]
            shown["p"] = shown["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}")
            shown["unit"] = shown["unit"].fillna("")
            shown["n"] = [f"{a:g}/{b:g}" if pd.notna(a) else ""
                          for a, b in zip(shown["a_units"], shown["b_units"], strict=True)]
            lines.append(shown[["endpoint", "stat", "a_ms", "b_ms", "B/A", "interval", "p",
                                "unit", "n", "verdict"]].to_string(index=False))
            settle = self.table[self.table["to_settle"].fillna("") != ""]
            if len(settle):
                lines += ["", "to settle:"] + [f"  {r.endpoint} {r.stat}: {r.to_settle}"
                                               for r in settle.itertuples()]
        return "\n".join(lines)


def _describe(a: Sequence[Mapping], b: Sequence[Mapping]) -> tuple[str, str]:
    """Figure-title labels: each side's target(s) and first start date."""
    def target(records):
        return ", ".join(sorted({f"{r['target']['kind']} {(r['target'].get('commit') or '?')[:8]}"
                                 for r in records}))

    def date(records):
        return min(r["run"]["started_at"] for r in records)[:16].replace("T", " ")

    return (f"A {target(a)} · B {target(b)}", f"A {date(a)} UTC · B {date(b)} UTC")


def _point(records: Sequence[Mapping], endpoint: str, stat: str) -> float:
    values = [r["endpoints"].get(endpoint, {}).get(stat) for r in records]
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else np.nan  # only for records without windows


def _overall(verdicts: Iterable[str]) -> str:
    """One verdict for the comparison: any change wins; "no change" needs every row to show it.

    Rows of an endpoint that only one side measured take no part.
    """
    return stats.overall(v for v in verdicts if not v.startswith("missing in"))


def compare(a: Sequence[Mapping], b: Sequence[Mapping], factor: float = FACTOR,
            alpha: float = ALPHA, force: bool = False, n_boot: int = N_BOOT,
            confidence: float = stats.CONFIDENCE, percentiles: Sequence[float] = STATS,
            seed: int = SEED, calibration_tolerance: float = calibration.TOLERANCE
            ) -> Comparison:
    """Compare record sets A and B endpoint by endpoint (see the module docstring)."""
    if not a or not b:
        raise WorkbenchError("compare needs at least one record on each side")
    if not factor > 1:
        raise WorkbenchError(f"--factor must be above 1 (1.10 means 10 %), got {factor}")
    if not 0 < alpha < 1:
        raise WorkbenchError(f"--alpha must be between 0 and 1, got {alpha}")
    if not calibration_tolerance > 0:
        raise WorkbenchError("--calibration-tolerance must be above 0 (0.10 means 10 %), got "
                             f"{calibration_tolerance}")
    reasons = comparability(a, b)
    ratios, machine = calibration.judge(a, b, calibration_tolerance)
    if machine:
        reasons.append(machine)
    calibrated = {"A": calibration.describe(a), "B": calibration.describe(b), "ratios": ratios,
                  "tolerance": calibration_tolerance, "reason": machine}
    comparable = not reasons
    scenario = " / ".join(sorted({r["scenario"] for r in list(a) + list(b)}))
    rows, curves = [], {}
    if comparable or force:
        names_a = {n for r in a for n in r["endpoints"]}
        names_b = {n for r in b for n in r["endpoints"]}
        for endpoint in sorted(names_a | names_b, key=lambda n: (n != ALL, n)):
            if endpoint not in names_a or endpoint not in names_b:
                side = "A" if endpoint not in names_a else "B"
                rows += [{"endpoint": endpoint, "stat": stats.label(p),
                          "verdict": f"missing in {side}"} for p in percentiles]
                continue
            wa, wb = WindowSet.from_records(a, endpoint), WindowSet.from_records(b, endpoint)
            if wa is None or wb is None or not wa.windows or not wb.windows:
                for p in percentiles:
                    key = stats.label(p)
                    pa, pb = _point(a, endpoint, key), _point(b, endpoint, key)
                    rows.append({"endpoint": endpoint, "stat": key, "a_ms": pa, "b_ms": pb,
                                 "ratio": pb / pa if pa else np.nan,
                                 "verdict": "insufficient data",
                                 "to_settle": "per-window histograms on both sides (records "
                                              "measured by the workbench, not imports)"})
                continue
            for row in compare_windows(wa, wb, percentiles, factor, alpha, n_boot, confidence,
                                       seed):
                rows.append({"endpoint": endpoint} | row)
            values, (ma, mb) = _dense([wa, wb])
            curves[endpoint] = {"A": (values, ma.sum(axis=0)), "B": (values, mb.sum(axis=0))}
    columns = ["endpoint", "stat", "a_ms", "b_ms", "ratio", "ci_low", "ci_high", "p_value",
               "a_windows", "b_windows", "a_units", "b_units", "unit", "verdict", "to_settle"]
    table = pd.DataFrame(rows, columns=columns)
    verdict = _overall(table["verdict"]) if (comparable or force) else "not comparable"
    targets, dates = _describe(a, b)
    return Comparison(scenario, [r["run_id"] for r in a], [r["run_id"] for r in b], comparable,
                      reasons, force and not comparable, factor, alpha, confidence, table,
                      verdict, curves, targets, dates, calibrated,
                      database_differences(a, b))


def compare_paths(a: str | Path | Sequence[str | Path], b: str | Path | Sequence[str | Path],
                  **kw) -> Comparison:
    """:func:`compare` of the records named by paths (run folders, record files, folders).

    Each side is one path or a list of them.
    """
    return compare(load_records(a), load_records(b), **kw)


# --- trend --------------------------------------------------------------------------------


def trend(records: Sequence[Mapping],
          percentiles: Sequence[float] = (95.0, 99.0)) -> pd.DataFrame:
    """p95 and p99 (with intervals) per record and endpoint, in commit order.

    Commit order is the measured commit's date where known, else the run's start; runs of the
    same commit share a position. Columns: scenario, endpoint, position, commit, commit_date,
    started_at, machine, source, then each statistic with ``_lo``/``_hi``.
    """
    rows = []
    for rec in records:
        groups = {g["endpoint"]: g for g in rec["percentiles"]["groups"]
                  if g["status_class"] == ALL}
        for endpoint, entry in sorted(rec["endpoints"].items()):
            row = {"scenario": rec["scenario"], "endpoint": endpoint,
                   "commit": (rec["target"].get("commit") or "unknown")[:12],
                   "commit_date": rec["target"].get("commit_date"),
                   "started_at": rec["run"]["started_at"], "machine": rec["machine"]["name"],
                   "source": "k6 import" if rec["source"].get("imported") else "measured"}
            for p in percentiles:
                key = stats.label(p)
                group = groups.get(endpoint, {}).get(key) or {}
                lo, hi = (group.get("ci") or [None, None])
                row |= {key: entry.get(key), f"{key}_lo": lo, f"{key}_hi": hi}
            rows.append(row)
    columns = ["scenario", "endpoint", "position", "commit", "commit_date", "started_at",
               "machine", "source"] + [f"{stats.label(p)}{s}" for p in percentiles
                                       for s in ("", "_lo", "_hi")]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    df["_order"] = pd.to_datetime(df["commit_date"].fillna(df["started_at"]), utc=True,
                                  format="ISO8601")
    firsts = df.groupby("commit")["_order"].min().sort_values(kind="stable")
    df["position"] = df["commit"].map({c: i for i, c in enumerate(firsts.index)})
    df = df.sort_values(["position", "started_at", "endpoint"], kind="stable")
    return df[columns].reset_index(drop=True)
