"""Latency analysis and thresholds: DataFrame in, DataFrame out, no I/O except loading.

Thresholds use k6's syntax so certctl's plan carries over unchanged::

    {"http_req_duration": ["p(99)<1000", "p(95)<500"],
     "http_req_failed": ["rate<0.001"],
     "http_req_duration{endpoint:heartbeat}": ["p(95)<500"]}

``http_req_duration`` is the response time in milliseconds measured from the *intended* start
(coordinated omission corrected); ``http_req_failed`` is the share of sent requests that failed
(transport error or HTTP status >= 400, as k6 counts them). Dropped arrivals never count as sent.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError

PERCENTILES = (50, 90, 95, 99)  # reported for every endpoint, plus max

_AGG = r"p\((?P<q>\d+(?:\.\d+)?)\)|avg|min|max|med|rate|count"
_EXPR = re.compile(
    rf"^\s*(?P<agg>{_AGG})\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)\s*$")
_METRIC = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<key>[a-z_]+):(?P<tag>[^}]+)\})?$")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
METRICS = {"http_req_duration": "latency_ms", "http_req_failed": "failed",
           "http_req_service_time": "service_ms"}


class ThresholdBreach(AssertionError):
    """Raised at the end of a notebook so papermill, and so CI, exits non-zero."""


@dataclass(frozen=True)
class Threshold:
    metric: str  # as written, e.g. http_req_duration{endpoint:heartbeat}
    expression: str  # as written, e.g. p(95)<500
    column: str
    tag: str | None
    agg: str
    q: float | None
    op: str
    limit: float


def parse_thresholds(spec: Mapping[str, list[str] | str]) -> list[Threshold]:
    """Parse k6-style thresholds; a malformed one raises WorkbenchError naming it."""
    if not isinstance(spec, Mapping):
        raise WorkbenchError(f"thresholds must be a mapping of metric to expressions, got {spec!r}")
    out = []
    for metric, exprs in spec.items():
        m = _METRIC.match(metric)
        if not m or m["name"] not in METRICS:
            raise WorkbenchError(f"unknown threshold metric {metric!r}; use one of "
                                 f"{', '.join(METRICS)} (optionally with {{endpoint:NAME}})")
        if m["key"] not in (None, "endpoint", "tag"):
            raise WorkbenchError(f"threshold selector in {metric!r} must be {{endpoint:NAME}}")
        for expr in [exprs] if isinstance(exprs, str) else exprs:
            e = _EXPR.match(str(expr))
            if not e:
                raise WorkbenchError(f"malformed threshold {expr!r} for {metric}; write it as "
                                     "k6 does, e.g. 'p(95)<500' or 'rate<0.01'")
            agg = e["agg"].split("(")[0]
            q = float(e["q"]) if e["q"] else None
            out.append(Threshold(metric, str(expr), METRICS[m["name"]], m["tag"], agg, q,
                                 e["op"], float(e["value"])))
    return out


def load_requests(run_dir: Path | str) -> pd.DataFrame:
    """Read ``requests.parquet`` and add derived columns (milliseconds, seconds into the run)."""
    df = pd.read_parquet(Path(run_dir) / "requests.parquet")
    return with_derived(df)


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["error"] = df["error"].astype(str)
    df["tag"] = df["tag"].astype(str)
    df["dropped"] = df["error"] == "dropped"
    df["failed"] = (df["error"] != "") & ~df["dropped"]
    df["latency_ms"] = (df["end_ns"] - df["intended_ns"]) / 1e6
    df["service_ms"] = (df["end_ns"] - df["send_ns"]) / 1e6
    df["lag_ms"] = (df["send_ns"] - df["intended_ns"]) / 1e6
    t0 = df["intended_ns"].min() if len(df) else 0
    df["t_s"] = (df["intended_ns"] - t0) / 1e9
    return df


def _pcts(values: np.ndarray) -> dict:
    if values.size == 0:
        return {f"p{q}": np.nan for q in PERCENTILES} | {"max": np.nan}
    qs = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return {f"p{q}": v for q, v in zip(PERCENTILES, qs, strict=True)} | {"max": values.max()}


def summarize(df: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """One row per endpoint (plus ``all`` when several): counts, achieved rate, error rate, latency percentiles."""
    rows = []
    groups = [(tag, g) for tag, g in df.groupby("tag", sort=True)]
    if len(groups) != 1:  # an "all" row only adds information over several endpoints
        groups.insert(0, ("all", df))
    for tag, g in groups:
        sent = g[~g["dropped"]]
        rows.append({
            "endpoint": tag,
            "requests": len(sent),
            "failed": int(sent["failed"].sum()),
            "dropped": int(g["dropped"].sum()),
            "achieved_rps": len(sent) / duration_s if duration_s else np.nan,
            "error_rate": sent["failed"].mean() if len(sent) else np.nan,
            **_pcts(sent["latency_ms"].to_numpy()),
        })
    return pd.DataFrame(rows).set_index("endpoint")


def windows(df: pd.DataFrame, seconds: float = 1.0) -> pd.DataFrame:
    """Per-window request rate, error count and latency percentiles (by intended start)."""
    sent = df[~df["dropped"]]
    w = (sent["t_s"] // seconds) * seconds
    grouped = sent.groupby(w)["latency_ms"]
    out = pd.DataFrame({
        "rps": grouped.size() / seconds,
        "errors": sent.groupby(w)["failed"].sum(),
        "p50": grouped.quantile(0.50),
        "p95": grouped.quantile(0.95),
        "p99": grouped.quantile(0.99),
    })
    out.index.name = "t_s"
    return out


def _aggregate(values: pd.Series, t: Threshold) -> float:
    if values.empty:
        return np.nan
    if t.agg == "p":
        return float(np.percentile(values.to_numpy(), t.q, method="inverted_cdf"))
    return float({"avg": values.mean, "min": values.min, "max": values.max,
                  "med": values.median, "count": values.count,
                  "rate": lambda: values.astype(float).mean()}[t.agg]())


def evaluate_thresholds(df: pd.DataFrame, thresholds: Mapping | list[Threshold]) -> pd.DataFrame:
    """One row per threshold: metric, expression, measured value, ok.

    A threshold on an endpoint with no samples fails: a check that saw nothing passed nothing.
    """
    parsed = thresholds if isinstance(thresholds, list) else parse_thresholds(thresholds)
    sent = df[~df["dropped"]]
    rows = []
    for t in parsed:
        subset = sent if t.tag is None else sent[sent["tag"] == t.tag]
        values = subset[t.column] if t.column == "failed" else subset[t.column].dropna()
        value = _aggregate(values, t)
        ok = bool(not np.isnan(value) and _OPS[t.op](value, t.limit))
        rows.append({"metric": t.metric, "threshold": t.expression, "value": value, "ok": ok})
    return pd.DataFrame(rows, columns=["metric", "threshold", "value", "ok"])


def assert_thresholds(verdicts: pd.DataFrame) -> None:
    """Raise :class:`ThresholdBreach` listing every failed threshold."""
    failed = verdicts[~verdicts["ok"]]
    if len(failed):
        lines = [f"{r.metric} {r.threshold} (measured {r.value:.4g})" for r in failed.itertuples()]
        raise ThresholdBreach("thresholds breached: " + "; ".join(lines))
