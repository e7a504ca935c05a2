"""Latency analysis and thresholds: DataFrame in, DataFrame out, no I/O except loading.

:func:`analyse` turns a run's per-request frame into the tables a reader needs: percentiles
p50/p90/p95/p99/p99.9/max per scenario, endpoint and status class with distribution-free 95%
confidence intervals (:mod:`workbench.stats`), achieved against offered load, errors by class,
per-window percentiles and rates, and the driver's validity checks. A million requests take
about a second (``benchmarks/bench_analysis.py``).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import stats
from workbench.driver import ERROR_CLASSES, DriveResult
from workbench.driver.recorder import PHASE_COLUMNS
from workbench.errors import WorkbenchError

PERCENTILES = stats.PERCENTILES  # p50, p90, p95, p99, p99.9; reported with max
ALL = "all"  # the row pooling every endpoint or every status class
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")  # "error": no response (transport)
NOT_JUDGED = "not judged: no driver result"  # validity of a frame the driver did not write

_AGG = r"p\((?P<q>\d+(?:\.\d+)?)\)|avg|min|max|med|rate|count"
_EXPR = re.compile(
    rf"^\s*(?P<agg>{_AGG})\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)\s*$")
_METRIC = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<key>[a-z_]+):(?P<tag>[^}]+)\})?$")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
METRICS = {"http_req_duration": "latency_ms", "http_req_failed": "failed",
           "http_req_service_time": "service_ms",
           "http_req_server_error": "server_error"}  # share of sent requests answered 5xx


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


METRIC_FIRST = re.compile(r"([a-z_]+(?:\{[^}]*\})?)\s*[:\s]\s*(\S.*)")


def threshold_options(values: list[str]) -> dict[str, list[str]]:
    """Command-line thresholds as k6's mapping: each a k6 expression on
    ``http_req_duration`` (``p(99)<200``) unless a metric comes first, after a space or a
    colon (``http_req_failed rate<0.01``, ``http_req_duration{endpoint:heartbeat}:p(95)<100``).
    """
    thresholds: dict[str, list[str]] = {}
    for value in values:
        named = METRIC_FIRST.fullmatch(value.strip())
        metric, expression = named.groups() if named else ("http_req_duration", value.strip())
        thresholds.setdefault(metric, []).append(expression.strip())
    return thresholds


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
    """Read ``requests.parquet`` and add derived columns (milliseconds, seconds into the run).

    Times stay exact int64 nanoseconds: the send and end times of dropped arrivals are null in
    the file and become 0 here (``dropped`` marks them), never float NaN that would round an
    epoch-nanosecond value to 256 ns. The file is read one row group at a time into columns
    sized from its footer, so reading holds the frame and one row group, never the file twice.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    pf = pq.ParquetFile(Path(run_dir) / "requests.parquet")
    n = pf.metadata.num_rows
    schema = pf.schema_arrow
    plain = {f.name: np.empty(n, f.type.to_pandas_dtype()) for f in schema
             if not pt.is_dictionary(f.type)}
    codes = {f.name: np.empty(n, np.int16) for f in schema if pt.is_dictionary(f.type)}
    names: dict[str, list[str]] = {name: [] for name in codes}
    at = 0
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i)
        rows = group.num_rows
        for name, out in plain.items():
            col = group[name]
            if name in ("send_ns", "end_ns", *PHASE_COLUMNS):
                col = pc.fill_null(col, 0)
            out[at:at + rows] = col.to_numpy()
        for name, out in codes.items():  # one category list, however each group numbered it
            start = at
            for chunk in group[name].chunks:
                lookup = np.array([_index(names[name], str(v))
                                   for v in chunk.dictionary.to_pylist()], dtype=np.int16)
                out[start:start + len(chunk)] = (lookup[chunk.indices.to_numpy()]
                                                 if lookup.size else 0)
                start += len(chunk)
        at += rows
    columns: dict[str, object] = dict(plain)
    for name, out in codes.items():
        columns[name] = pd.Categorical.from_codes(out, categories=names[name])
    frame = pd.DataFrame({f.name: columns[f.name] for f in schema}, copy=False)
    return _derive(frame)


def _index(names: list[str], name: str) -> int:
    """Position of ``name`` in ``names``, appended when new."""
    try:
        return names.index(name)
    except ValueError:
        names.append(name)
        return len(names) - 1


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``dropped``, ``failed``, ``status_class``, ``latency_ms``, ``service_ms``, ``lag_ms``
    and ``t_s`` (seconds from the first intended start) to a frame of raw request columns."""
    return _derive(df.copy())


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`with_derived` on a frame this module owns (no copy)."""
    df["error"] = df["error"].astype("category")
    df["tag"] = df["tag"].astype("category")
    dropped = (df["error"] == "dropped").to_numpy()
    df["dropped"] = dropped
    df["failed"] = (df["error"] != "").to_numpy() & ~dropped
    status = df["status"].to_numpy().astype(np.int64)
    code = np.where(status <= 0, 4, np.clip(status // 100, 2, 5) - 2)  # index in STATUS_CLASSES
    df["status_class"] = pd.Categorical.from_codes(np.where(dropped, -1, code),
                                                   categories=list(STATUS_CLASSES))
    df["server_error"] = (status >= 500) & ~dropped
    intended = df["intended_ns"].to_numpy()
    for column, start, end in (("latency_ms", intended, df["end_ns"].to_numpy()),
                               ("service_ms", df["send_ns"].to_numpy(), df["end_ns"].to_numpy()),
                               ("lag_ms", intended, df["send_ns"].to_numpy())):
        df[column] = np.where(dropped, np.nan, (end - start) / 1e6)
    t0 = intended.min() if len(df) else 0
    df["t_s"] = (intended - t0) / 1e9
    return df


def _codes(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a categorical or string column, numbering its observed values sorted."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        names, codes = np.unique(series.astype(str).to_numpy(), return_inverse=True)
        return codes.astype(np.int64), [str(n) for n in names]
    cat = series.cat.remove_unused_categories()
    names = np.asarray(cat.cat.categories, dtype=str)
    order = np.argsort(names)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[cat.cat.codes.to_numpy().astype(np.int64)], [str(n) for n in names[order]]


def _recode(series: pd.Series, categories: tuple[str, ...], other: str) -> np.ndarray:
    """Index into ``categories`` of each value (``other``'s index for an unknown value)."""
    cat = series.astype("category")
    lookup = np.array([categories.index(c) if c in categories else categories.index(other)
                       for c in np.asarray(cat.cat.categories, dtype=str)], dtype=np.int64)
    return lookup[cat.cat.codes.to_numpy()] if lookup.size else np.zeros(len(series), np.int64)


def _sent(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The sent requests, with only ``columns`` (all when None): a mask copies what it keeps."""
    return (df if columns is None else df[columns])[~df["dropped"].to_numpy()]


def _pcts(values: np.ndarray) -> dict:
    """Nearest-rank percentiles and max of one sample, without intervals."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    out = stats.grouped_percentiles(ordered, np.array([ordered.size]), PERCENTILES, None)
    return {k: float(v[0]) for k, v in out.items()}


def summarize(df: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """One row per endpoint (plus ``all`` when several): counts, rates, latency percentiles."""
    rows = []
    df = df[["tag", "dropped", "failed", "latency_ms"]]  # groups copy what they hold
    groups = [(str(tag), g) for tag, g in df.groupby("tag", sort=True, observed=True)]
    if len(groups) != 1:  # an "all" row only adds information over several endpoints
        groups.insert(0, (ALL, df))
    for tag, g in groups:
        sent = _sent(g)
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


PHASES = ("connect", "tls", "ttfb", "total")  # the connection's phases, then the response time
PHASE_PERCENTILES = (50.0, 95.0, 99.0)


def phases(df: pd.DataFrame) -> pd.DataFrame | None:
    """Per endpoint, each phase of a new connection's request in ms: p50, p95, p99, max.

    ``connect`` is the send to the TCP handshake's end, ``tls`` the TLS handshake, ``ttfb`` the
    request written to the first response byte, ``total`` the response time from the intended
    start (what the thresholds judge). Each phase counts the requests that completed it. None
    when the run did not time phases (it reused connections).
    """
    if not set(PHASE_COLUMNS) <= set(df.columns):
        return None
    rows = []
    for tag, g in df.groupby("tag", sort=True, observed=True):
        sent = _sent(g)
        send, connected, tls_done, first_byte = (
            sent[c].to_numpy().astype(np.int64) for c in ("send_ns", *PHASE_COLUMNS))
        written = np.where(tls_done > 0, tls_done, connected)  # plain http: written at connect
        spans = {"connect": (connected > 0, connected - send),
                 "tls": ((connected > 0) & (tls_done > 0), tls_done - connected),
                 "ttfb": ((written > 0) & (first_byte > 0), first_byte - written)}
        for phase, (done, span) in spans.items():
            rows.append(_phase_row(str(tag), phase, span[done] / 1e6))
        rows.append(_phase_row(str(tag), "total", sent["latency_ms"].to_numpy()))
    return pd.DataFrame(rows).set_index(["endpoint", "phase"])


def _phase_row(tag: str, phase: str, values_ms: np.ndarray) -> dict:
    ordered = np.sort(values_ms)
    row = {"endpoint": tag, "phase": phase, "count": int(ordered.size)}
    for p in PHASE_PERCENTILES:
        row[stats.label(p)] = (float(ordered[int(stats.nearest_rank(ordered.size, p)) - 1])
                               if ordered.size else np.nan)
    row["max"] = float(ordered[-1]) if ordered.size else np.nan
    return row


def percentiles(df: pd.DataFrame, scenario: str = "", confidence: float = stats.CONFIDENCE,
                by_status_class: bool = True) -> pd.DataFrame:
    """Latency percentiles with order-statistic confidence intervals.

    Index ``(scenario, endpoint, status_class)``; ``all`` pools every endpoint (only when there
    are several) or every status class. Columns ``count``, then for each percentile its value
    and ``_lo``/``_hi`` bounds (NaN where n samples cannot bound it), then ``max``; milliseconds.
    A ``scenario`` column in ``df`` (several scenarios in one frame) overrides ``scenario``.
    """
    sent = _sent(df, [c for c in ("scenario", "tag", "status_class", "latency_ms")
                      if c in df.columns])
    frames = []
    if "scenario" in sent.columns:
        parts = [(str(k), g) for k, g in sent.groupby("scenario", sort=True, observed=True)]
    else:
        parts = [(scenario, sent)]
    for name, part in parts:
        frames.append(_percentiles_one(part, name, confidence, by_status_class))
    if not frames:
        return _percentiles_one(sent.iloc[:0], scenario, confidence, by_status_class)
    return pd.concat(frames)


def _percentiles_one(sent: pd.DataFrame, scenario: str, confidence: float,
                     by_status_class: bool) -> pd.DataFrame:
    latency = sent["latency_ms"].to_numpy(dtype=np.float64)
    order = np.argsort(latency, kind="stable")
    latency = latency[order]
    ep, ep_names = _codes(sent["tag"])
    ep = ep[order]
    cls = sent["status_class"].cat.codes.to_numpy().astype(np.int64)[order]
    n_cls = len(STATUS_CLASSES)
    endpoints = ([ALL] if len(ep_names) > 1 else []) + ep_names
    classes = [ALL] + (list(STATUS_CLASSES) if by_status_class else [])
    # groupings: (endpoint, class) codes over the sorted latencies; "all" rows pool a level
    groupings = [(np.zeros_like(ep), [(ALL, ALL)])] if len(ep_names) > 1 else []
    groupings.append((ep, [(e, ALL) for e in ep_names]))
    if by_status_class:
        if len(ep_names) > 1:
            groupings.append((cls, [(ALL, c) for c in STATUS_CLASSES]))
        groupings.append((ep * n_cls + cls, [(e, c) for e in ep_names for c in STATUS_CLASSES]))
    rows: dict[tuple[str, str], dict] = {}
    for codes, keys in groupings:
        values, counts = stats.group_sort(latency, codes, len(keys), presorted=True)
        table = stats.grouped_percentiles(values, counts, PERCENTILES, confidence)
        for i, key in enumerate(keys):
            if counts[i]:
                rows[key] = {"count": int(counts[i])} | {k: float(v[i]) for k, v in table.items()}
    keys = [(e, c) for e in endpoints for c in classes if (e, c) in rows]
    index = pd.MultiIndex.from_tuples([(scenario, e, c) for e, c in keys],
                                      names=["scenario", "endpoint", "status_class"])
    columns = ["count"] + [f"{stats.label(p)}{s}" for p in PERCENTILES
                           for s in ("", "_lo", "_hi")] + ["max"]
    return pd.DataFrame([rows[k] for k in keys], index=index, columns=columns)


def load(df: pd.DataFrame, offered_rate: float | None, duration_s: float) -> pd.DataFrame:
    """Offered against achieved load per endpoint (``all`` first when several).

    An endpoint's offered rate is its share of the scheduled arrivals times the run's offered
    rate (NaN for a closed loop, which offers none); achieved counts every request sent
    (completed or failed) over the planned duration.
    """
    rows = []
    df = df[["tag", "dropped", "failed"]]  # groups copy what they hold
    groups = [(str(tag), g) for tag, g in df.groupby("tag", sort=True, observed=True)]
    total = max(len(df), 1)
    if len(groups) != 1:
        groups.insert(0, (ALL, df))
    for tag, g in groups:
        dropped = int(g["dropped"].sum())
        failed = int(g["failed"].sum())
        sent = len(g) - dropped
        offered = offered_rate * len(g) / total if offered_rate else np.nan
        achieved = sent / duration_s if duration_s else np.nan
        rows.append({"endpoint": tag, "scheduled": len(g), "sent": sent,
                     "completed": sent - failed, "failed": failed, "dropped": dropped,
                     "offered_rps": offered, "achieved_rps": achieved,
                     "achieved_ratio": achieved / offered if offered else np.nan})
    return pd.DataFrame(rows, columns=["endpoint", "scheduled", "sent", "completed", "failed",
                                       "dropped", "offered_rps", "achieved_rps",
                                       "achieved_ratio"]).set_index("endpoint")


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """Errors by class per endpoint (``all`` first when several): counts and the error rate.

    ``error_rate`` is failed over sent, as k6's ``http_req_failed``; ``dropped`` arrivals were
    never sent and are counted beside, not in the rate.
    """
    classes = [c for c in ERROR_CLASSES if c]
    ep, names = _codes(df["tag"])
    err = _recode(df["error"], ERROR_CLASSES, "other")
    counts = np.bincount(ep * len(ERROR_CLASSES) + err,
                         minlength=len(names) * len(ERROR_CLASSES)).reshape(len(names), -1)
    table = pd.DataFrame(counts[:, 1:], index=pd.Index(names, name="endpoint"), columns=classes)
    if len(names) != 1:
        table = pd.concat([table.sum().to_frame(ALL).T, table])
        table.index.name = "endpoint"
    sent = counts.sum(axis=1) - counts[:, ERROR_CLASSES.index("dropped")]
    sent = np.concatenate([[sent.sum()], sent]) if len(names) != 1 else sent
    failed = table.drop(columns="dropped").sum(axis=1).to_numpy()
    table.insert(0, "error_rate", np.where(sent > 0, failed / np.maximum(sent, 1), np.nan))
    table.insert(0, "failed", failed)
    table.insert(0, "sent", sent)
    return table


def window_seconds(duration_s: float) -> float:
    """Window length for per-window statistics: 10 s, or a tenth of a shorter run.

    At least ten windows let a Mann-Whitney test over per-window percentiles reach p < 0.002.
    """
    return 10.0 if duration_s >= 100 else max(duration_s / 10, 0.1)


def windows(df: pd.DataFrame, seconds: float = 10.0, by_endpoint: bool = False) -> pd.DataFrame:
    """Per-window (by intended start) request rate, errors, drops and latency percentiles.

    Index ``t_s`` (window start, seconds into the run), or ``(endpoint, t_s)`` with
    ``by_endpoint``. Columns: ``requests`` sent, ``rps``, ``errors``, ``dropped``, p50 ... p99.9,
    ``max`` (ms). Windows in which nothing was sent have NaN percentiles.
    """
    window = np.floor(df["t_s"].to_numpy() / seconds).astype(np.int64)
    n_win = int(window.max()) + 1 if window.size else 0
    if by_endpoint:
        ep, names = _codes(df["tag"])
    else:
        ep, names = np.zeros(len(df), dtype=np.int64), [ALL]
    group = ep * n_win + window
    n_groups = len(names) * n_win
    dropped = df["dropped"].to_numpy()
    failed = df["failed"].to_numpy()
    sent_group = group[~dropped]
    latency = df["latency_ms"].to_numpy(dtype=np.float64)[~dropped]
    values, counts = stats.group_sort(latency, sent_group, n_groups)
    pct = stats.grouped_percentiles(values, counts, PERCENTILES, None)
    present = np.bincount(group, minlength=n_groups) > 0
    out = pd.DataFrame({
        "requests": counts,
        "rps": counts / seconds,
        "errors": np.bincount(group, weights=failed, minlength=n_groups).astype(np.int64),
        "dropped": np.bincount(group, weights=dropped, minlength=n_groups).astype(np.int64),
        **pct,
    })
    index = pd.MultiIndex.from_product([names, np.arange(n_win) * seconds],
                                       names=["endpoint", "t_s"])
    out = out.set_axis(index)[present]
    return out if by_endpoint else out.droplevel("endpoint")


def validity(reported: DriveResult | None) -> pd.DataFrame:
    """The run's validity checks, as the driver judged them (``result["checks"]``).

    The driver judges every run once, from its own histograms (schedule lag, achieved against
    offered load, drops, its CPU, the run's status; :mod:`workbench.driver.result`); this is
    that judgement as a table: ``check``, ``measured``, ``limit``, ``ok``. A frame without a
    driver result (an imported summary, a synthetic frame) is not judged: one row saying so,
    with ``ok`` missing.
    """
    columns = ["check", "measured", "limit", "ok"]
    if reported is None:
        return pd.DataFrame([("validity", NOT_JUDGED, None, None)], columns=columns)
    return pd.DataFrame([(c["check"], c["measured"], c["limit"], c["ok"])
                         for c in reported["checks"]], columns=columns)


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyse` derives from one run's requests (each a DataFrame)."""

    scenario: str
    offered_rate: float | None
    duration_s: float
    window_s: float
    summary: pd.DataFrame = field(repr=False)
    percentiles: pd.DataFrame = field(repr=False)
    load: pd.DataFrame = field(repr=False)
    errors: pd.DataFrame = field(repr=False)
    windows: pd.DataFrame = field(repr=False)
    validity: pd.DataFrame = field(repr=False)

    @property
    def valid(self) -> bool | None:
        """True when every validity check passed; None when the run was not judged."""
        ok = self.validity["ok"]
        return None if ok.isna().any() else bool(ok.all())

    @property
    def invalid_reasons(self) -> list[str]:
        """One line per failed validity check (none when not judged)."""
        return [f"{r.check}: {r.measured} (limit {r.limit})"
                for r in self.validity.itertuples() if not pd.isna(r.ok) and not r.ok]


def analyse(df: pd.DataFrame, scenario: str, offered_rate: float | None, duration_s: float,
            window_s: float | None = None, reported: DriveResult | None = None) -> Analysis:
    """Analyse one run: ``df`` from :func:`load_requests` (or :func:`with_derived`);
    ``reported`` is the driver's result (:func:`workbench.driver.load_result`)."""
    window_s = window_s or window_seconds(duration_s)
    return Analysis(
        scenario=scenario, offered_rate=offered_rate, duration_s=duration_s, window_s=window_s,
        summary=summarize(df, duration_s),
        percentiles=percentiles(df, scenario),
        load=load(df, offered_rate, duration_s),
        errors=errors(df),
        windows=windows(df, window_s, by_endpoint=True),
        validity=validity(reported),
    )


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
    sent = _sent(df, ["tag", *sorted({t.column for t in parsed})])
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
