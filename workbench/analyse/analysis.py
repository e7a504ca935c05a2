"""Latency analysis and thresholds: requests in, DataFrames out, no I/O except loading.

:func:`analyse` turns a run's requests into the tables a reader needs: percentiles
p50/p90/p95/p99/p99.9/max per scenario, endpoint and status class with distribution-free 95%
confidence intervals (:mod:`workbench.analyse.stats`), achieved against offered load, errors by
class, per-window percentiles and rates, and the driver's validity checks.

The requests are a frame (:func:`load_requests`, :func:`with_derived`) or, for a run of any
length, :func:`open_requests`: ``requests.parquet`` streamed one row group at a time. Every
statistic is computed chunk by chunk either way: counts add up, and each percentile is the
exact value of its nearest rank, selected by rank over repeated passes
(:func:`workbench.analyse.stats.select_ranks`), so memory does not grow with the number of requests.

Thresholds use k6's syntax so certctl's plan carries over unchanged::

    {"http_req_duration": ["p(99)<1000", "p(95)<500"],
     "http_req_failed": ["rate<0.001"],
     "http_req_duration{endpoint:heartbeat}": ["p(95)<500"]}

``http_req_duration`` is the response time in milliseconds measured from the *intended* start
(coordinated omission corrected); ``http_req_failed`` is the share of sent requests that failed
(transport error or HTTP status >= 400, as k6 counts them). Dropped arrivals never count as sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analyse import stats
from workbench.analyse.thresholds import (  # noqa: F401 - the thresholds' grammar, re-exported here
    _EXPR,
    _OPS,
    METRICS,
    Threshold,
    ThresholdBreach,
    parse_thresholds,
    threshold_options,
)
from workbench.driver import ERROR_CLASSES, DriveResult
from workbench.driver.recorder import PHASE_COLUMNS

PERCENTILES = stats.PERCENTILES  # p50, p90, p95, p99, p99.9; reported with max
ALL = "all"  # the row pooling every endpoint or every status class
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")  # "error": no response (transport)
NOT_JUDGED = "not judged: no driver result"  # validity of a frame the driver did not write

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


class Requests:
    """A run's requests as the analysis reads them: chunk by chunk, each with the derived
    columns, tags numbered alike in every chunk (``tags``, sorted) and ``t_s`` counted from the
    run's first intended start (``t0_ns``). :meth:`open` streams ``requests.parquet`` one row
    group at a time, so analysing a run of any length holds one row group, never every
    request; :meth:`of` wraps a frame already in memory (one chunk)."""

    def __init__(self, chunks: Callable[[], Iterator[pd.DataFrame]], rows: int, t0_ns: int,
                 last_ns: int, tags: list[str], columns: tuple[str, ...]) -> None:
        self._chunks = chunks
        self.rows = rows
        self.t0_ns = t0_ns
        self.last_ns = last_ns  # the last intended start
        self.tags = tags
        self.columns = columns
        self.largest_chunk = 0  # rows of the largest chunk handed out so far

    def __len__(self) -> int:
        return self.rows

    @property
    def span_s(self) -> float:
        """Seconds from the first intended start to the last (the largest ``t_s``)."""
        return (self.last_ns - self.t0_ns) / 1e9

    def n_windows(self, seconds: float) -> int:
        """Windows of ``seconds``, by intended start, from the first to the last request."""
        return int(np.floor(self.span_s / seconds)) + 1 if self.rows else 0

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Every chunk, afresh on each call."""
        for chunk in self._chunks():
            self.largest_chunk = max(self.largest_chunk, len(chunk))
            yield chunk

    @classmethod
    def of(cls, df: pd.DataFrame) -> Requests:
        """A frame with the derived columns (:func:`with_derived`) as one chunk."""
        tags = sorted({str(t) for t in df["tag"].astype(str).unique()}) if len(df) else []
        one = df.assign(tag=pd.Categorical(df["tag"].astype(str), categories=tags))
        intended = df["intended_ns"].to_numpy()
        return cls(lambda: iter((one,)), len(df), int(intended.min()) if len(df) else 0,
                   int(intended.max()) if len(df) else 0, tags, tuple(df.columns))

    @classmethod
    def open(cls, run_dir: Path | str) -> Requests:
        """``requests.parquet`` of ``run_dir``, read one row group at a time: one pass over
        the intended starts and tags now, one per statistic later."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = Path(run_dir) / "requests.parquet"
        pf = pq.ParquetFile(path)
        t0, last, tags = None, 0, set()
        for i in range(pf.num_row_groups):
            group = pf.read_row_group(i, columns=["intended_ns", "tag"])
            if group.num_rows:
                span = pc.min_max(group["intended_ns"])
                low, high = span["min"].as_py(), span["max"].as_py()
                t0 = low if t0 is None else min(t0, low)
                last = max(last, high)
                for tag in group["tag"].chunks:  # the names its rows use, not the dictionary's
                    known = tag.dictionary.to_pylist()
                    tags.update(str(known[k]) for k in np.unique(
                        tag.indices.to_numpy(zero_copy_only=False)))
        names, start = sorted(tags), int(t0 or 0)
        columns = tuple(pf.schema_arrow.names)

        def chunks() -> Iterator[pd.DataFrame]:
            for i in range(pf.num_row_groups):
                group = pf.read_row_group(i)
                frame = {}
                for name in columns:
                    col = group[name]
                    if name == "tag":
                        frame[name] = col.to_pandas().cat.set_categories(names)
                    elif name == "error":
                        frame[name] = col.to_pandas()
                    else:
                        if name in ("send_ns", "end_ns", *PHASE_COLUMNS):
                            col = pc.fill_null(col, 0)
                        frame[name] = col.to_numpy()
                yield pd.DataFrame(frame | _derived(frame, start), copy=False)

        return cls(chunks, pf.metadata.num_rows, start, last, names, columns)


def open_requests(run_dir: Path | str) -> Requests:
    """A run's requests, streamed from ``requests.parquet`` (see :class:`Requests`)."""
    return Requests.open(run_dir)


def as_requests(requests: pd.DataFrame | Requests) -> Requests:
    """``requests`` as a :class:`Requests` (a frame becomes one chunk)."""
    return requests if isinstance(requests, Requests) else Requests.of(requests)


Grouped = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]  # chunk -> codes, values


@dataclass(frozen=True)
class Counted:
    """Values per group over every chunk, and the bounds of their order keys."""

    counts: np.ndarray
    bounds: tuple[int, int] | None


def group_counts(src: Requests, grouped: Grouped, n_groups: int) -> Counted:
    """Count the values ``grouped`` gives per group, over every chunk of ``src``."""
    counts, bounds = np.zeros(n_groups, np.int64), None
    for chunk in src.chunks():
        codes, values = grouped(chunk)
        counts += np.bincount(codes, minlength=n_groups)
        bounds = stats.key_bounds(values, bounds)
    return Counted(counts, bounds)


def _order_statistics(src: Requests, grouped: Grouped, counted: Counted,
                      percentiles: tuple[float, ...],
                      confidence: float | None = None) -> dict[str, np.ndarray]:
    """:func:`workbench.analyse.stats.grouped_percentiles` of values streamed from ``src``:
    ``grouped(chunk)`` gives a chunk's group codes and float values, ``counted`` each group's
    size; the values are selected by rank (:func:`workbench.analyse.stats.select_ranks`), never
    held."""
    counts = counted.counts
    wanted: dict[str, np.ndarray] = {}
    for p in percentiles:
        key = stats.label(p)
        wanted[key] = stats.nearest_rank(counts, p)
        if confidence is not None:
            wanted[f"{key}_lo"], wanted[f"{key}_hi"] = stats.ci_ranks(counts, p, confidence)
    wanted["max"] = counts
    groups = np.concatenate([np.flatnonzero(r > 0) for r in wanted.values()])
    ranks = np.concatenate([r[r > 0] for r in wanted.values()])
    values = select_ranks(src, grouped, groups, ranks, counted.bounds)
    out, at = {}, 0
    for key, r in wanted.items():
        column = np.full(len(counts), np.nan)
        column[r > 0] = values[at:at + int((r > 0).sum())]
        at += int((r > 0).sum())
        out[key] = column
    return out


def select_ranks(src: Requests, grouped: Grouped, groups: np.ndarray, ranks: np.ndarray,
                 bounds: tuple[int, int] | None = None) -> np.ndarray:
    """Values at (group, 1-based rank) pairs of the values ``grouped(chunk)`` gives (group
    codes, float64 values), exactly, each distinct pair selected once
    (:func:`workbench.analyse.stats.select_ranks`)."""
    if not len(groups):
        return np.zeros(0)
    pairs, inverse = np.unique(np.stack([groups, ranks], 1), axis=0, return_inverse=True)
    values = stats.select_ranks(lambda: (grouped(c) for c in src.chunks()), pairs[:, 0],
                                pairs[:, 1], bounds)
    return values[inverse.reshape(-1)]


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``dropped``, ``failed``, ``status_class``, ``latency_ms``, ``service_ms``, ``lag_ms``
    and ``t_s`` (seconds from the first intended start) to a frame of raw request columns."""
    return _derive(df.copy())


def _derive(df: pd.DataFrame, t0_ns: int | None = None) -> pd.DataFrame:
    """:func:`with_derived` on a frame this module owns (no copy); ``t_s`` counts from
    ``t0_ns`` (default: the frame's first intended start)."""
    df["error"] = df["error"].astype("category")
    df["tag"] = df["tag"].astype("category")
    for name, column in _derived(df, t0_ns).items():
        df[name] = column
    return df


def _derived(raw: Mapping, t0_ns: int | None) -> dict[str, object]:
    """The derived columns of raw request columns (``error`` categorical)."""
    # by code, not string: comparing strings costs more than the rest of this together
    names = [str(c) for c in raw["error"].cat.categories]
    error = raw["error"].cat.codes.to_numpy()
    dropped = error == (names.index("dropped") if "dropped" in names else -2)
    status = np.asarray(raw["status"]).astype(np.int64)
    code = np.where(status <= 0, 4, np.clip(status // 100, 2, 5) - 2)  # index in STATUS_CLASSES
    intended, send, end = (np.asarray(raw[c]) for c in ("intended_ns", "send_ns", "end_ns"))
    out: dict[str, object] = {
        "dropped": dropped,
        "failed": (error != (names.index("") if "" in names else -2)) & ~dropped,
        "status_class": pd.Categorical.from_codes(np.where(dropped, -1, code),
                                                  categories=list(STATUS_CLASSES)),
        "server_error": (status >= 500) & ~dropped}
    for column, start, stop in (("latency_ms", intended, end), ("service_ms", send, end),
                                ("lag_ms", intended, send)):
        out[column] = np.where(dropped, np.nan, (stop - start) / 1e6)
    t0 = t0_ns if t0_ns is not None else intended.min() if len(intended) else 0
    out["t_s"] = (intended - t0) / 1e9
    return out


def _recode(series: pd.Series, categories: tuple[str, ...], other: str) -> np.ndarray:
    """Index into ``categories`` of each value (``other``'s index for an unknown value)."""
    cat = series.astype("category")
    lookup = np.array([categories.index(c) if c in categories else categories.index(other)
                       for c in np.asarray(cat.cat.categories, dtype=str)], dtype=np.int64)
    return lookup[cat.cat.codes.to_numpy()] if lookup.size else np.zeros(len(series), np.int64)


def _sent_values(column: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """A chunk's sent rows' ``column`` as float64."""
    return lambda chunk: chunk[column].to_numpy(dtype=np.float64)[~chunk["dropped"].to_numpy()]


def _tag_codes(chunk: pd.DataFrame) -> np.ndarray:
    return chunk["tag"].cat.codes.to_numpy().astype(np.int64)


def sent_latency_by_tag(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's sent requests: their tag (numbered as ``Requests.tags``) and response time
    (ms); the grouping for :func:`group_counts` and :func:`select_ranks`."""
    sent = ~chunk["dropped"].to_numpy()
    return _tag_codes(chunk)[sent], chunk["latency_ms"].to_numpy(np.float64)[sent]


def summarize(df: pd.DataFrame | Requests, duration_s: float) -> pd.DataFrame:
    """One row per endpoint (plus ``all`` when several): counts, rates, latency percentiles."""
    src = as_requests(df)
    return _summary(_latency_rows(src, None, False), _by_tag_and_error(src), src.tags,
                    duration_s)


def _summary(rows: dict[tuple[str, str], dict], counts: np.ndarray, tags: list[str],
             duration_s: float) -> pd.DataFrame:
    """:func:`summarize` from :func:`_latency_rows` and :func:`_by_tag_and_error`."""
    by_tag = [(tag, counts[i]) for i, tag in enumerate(tags)]
    if len(by_tag) != 1:  # an "all" row only adds information over several endpoints
        by_tag.insert(0, (ALL, counts.sum(axis=0)))
    out = []
    for tag, c in by_tag:
        dropped = int(c[ERROR_CLASSES.index("dropped")])
        sent = int(c.sum()) - dropped
        failed = sent - int(c[0])  # class 0: no error
        latency = rows.get((tag, ALL), {})
        out.append({"endpoint": tag, "requests": sent, "failed": failed, "dropped": dropped,
                    "achieved_rps": sent / duration_s if duration_s else np.nan,
                    "error_rate": failed / sent if sent else np.nan,
                    **{k: latency.get(k, np.nan)
                       for k in [stats.label(p) for p in PERCENTILES] + ["max"]}})
    return pd.DataFrame(out).set_index("endpoint")


PHASES = ("connect", "tls", "ttfb", "total")  # the connection's phases, then the response time
PHASE_PERCENTILES = (50.0, 95.0, 99.0)


def phases(df: pd.DataFrame | Requests) -> pd.DataFrame | None:
    """Per endpoint, each phase of a new connection's request in ms: p50, p95, p99, max.

    ``connect`` is the send to the TCP handshake's end, ``tls`` the TLS handshake, ``ttfb`` the
    request written to the first response byte, ``total`` the response time from the intended
    start (what the thresholds judge). Each phase counts the requests that completed it. None
    when the run did not time phases (it reused connections).
    """
    src = as_requests(df)
    if not set(PHASE_COLUMNS) <= set(src.columns):
        return None
    k = len(PHASES)

    def grouped(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        sent = ~chunk["dropped"].to_numpy()
        tag = _tag_codes(chunk)[sent]
        send, connected, tls_done, first_byte = (
            chunk[c].to_numpy()[sent].astype(np.int64) for c in ("send_ns", *PHASE_COLUMNS))
        written = np.where(tls_done > 0, tls_done, connected)  # plain http: written at connect
        spans = [(connected > 0, connected - send),
                 ((connected > 0) & (tls_done > 0), tls_done - connected),
                 ((written > 0) & (first_byte > 0), first_byte - written)]
        codes = [tag[done] * k + i for i, (done, _) in enumerate(spans)]
        values = [span[done] / 1e6 for done, span in spans]
        return (np.concatenate([*codes, tag * k + 3]),
                np.concatenate([*values, chunk["latency_ms"].to_numpy(np.float64)[sent]]))

    counted = group_counts(src, grouped, len(src.tags) * k)
    counts = counted.counts
    table = _order_statistics(src, grouped, counted, PHASE_PERCENTILES)
    rows = [{"endpoint": tag, "phase": phase, "count": int(counts[t * k + i])}
            | {key: float(v[t * k + i]) for key, v in table.items()}
            for t, tag in enumerate(src.tags) for i, phase in enumerate(PHASES)]
    return pd.DataFrame(rows).set_index(["endpoint", "phase"])


def percentiles(df: pd.DataFrame | Requests, scenario: str = "",
                confidence: float = stats.CONFIDENCE, by_status_class: bool = True
                ) -> pd.DataFrame:
    """Latency percentiles with order-statistic confidence intervals.

    Index ``(scenario, endpoint, status_class)``; ``all`` pools every endpoint (only when there
    are several) or every status class. Columns ``count``, then for each percentile its value
    and ``_lo``/``_hi`` bounds (NaN where n samples cannot bound it), then ``max``; milliseconds.
    A ``scenario`` column in ``df`` (several scenarios in one frame) overrides ``scenario``.
    """
    if isinstance(df, pd.DataFrame) and "scenario" in df.columns:
        parts = [(str(k), g) for k, g in df.groupby("scenario", sort=True, observed=True)]
        if parts:
            return pd.concat([percentiles(g.drop(columns="scenario"), name, confidence,
                                          by_status_class) for name, g in parts])
        df = df.drop(columns="scenario")
    src = as_requests(df)
    return _percentile_frame(_latency_rows(src, confidence, by_status_class), src.tags,
                             scenario, by_status_class)


def _latency_rows(src: Requests, confidence: float | None,
                  by_status_class: bool) -> dict[tuple[str, str], dict]:
    """``{(endpoint, status class): {"count", p50, p50_lo, p50_hi, ..., "max"}}`` of the sent
    requests' response times, ``all`` pooling either level; only groups with requests."""
    names, n_cls = src.tags, len(STATUS_CLASSES)
    n = len(names)
    # group codes: (endpoint, all), (all, all), then (endpoint, class), (all, class)
    keys = [(e, ALL) for e in names] + [(ALL, ALL)]
    if by_status_class:
        keys += [(e, c) for e in names for c in STATUS_CLASSES]
        keys += [(ALL, c) for c in STATUS_CLASSES]
    latency = _sent_values("latency_ms")

    def grouped(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        sent = ~chunk["dropped"].to_numpy()
        ep = _tag_codes(chunk)[sent]
        codes = [ep, np.full(len(ep), n)]
        if by_status_class:
            cls = chunk["status_class"].cat.codes.to_numpy().astype(np.int64)[sent]
            codes += [n + 1 + ep * n_cls + cls, n + 1 + n * n_cls + cls]
        return np.concatenate(codes), np.tile(latency(chunk), len(codes))

    counted = group_counts(src, grouped, len(keys))
    counts = counted.counts
    table = _order_statistics(src, grouped, counted, PERCENTILES, confidence)
    return {key: {"count": int(counts[i])} | {c: float(v[i]) for c, v in table.items()}
            for i, key in enumerate(keys) if counts[i]}


def _percentile_frame(rows: dict[tuple[str, str], dict], names: list[str], scenario: str,
                      by_status_class: bool) -> pd.DataFrame:
    """:func:`percentiles` from :func:`_latency_rows`: ``all`` rows only over several
    endpoints that sent requests."""
    several = sum((e, ALL) in rows for e in names) > 1
    endpoints = ([ALL] if several else []) + names
    classes = [ALL] + (list(STATUS_CLASSES) if by_status_class else [])
    keys = [(e, c) for e in endpoints for c in classes if (e, c) in rows]
    index = pd.MultiIndex.from_tuples([(scenario, e, c) for e, c in keys],
                                      names=["scenario", "endpoint", "status_class"])
    columns = ["count"] + [f"{stats.label(p)}{s}" for p in PERCENTILES
                           for s in ("", "_lo", "_hi")] + ["max"]
    return pd.DataFrame([rows[k] for k in keys], index=index, columns=columns)


def _by_tag_and_error(src: Requests) -> np.ndarray:
    """Rows per endpoint (in ``src.tags`` order) and error class (:data:`ERROR_CLASSES`)."""
    counts = np.zeros((len(src.tags), len(ERROR_CLASSES)), np.int64)
    for chunk in src.chunks():
        err = _recode(chunk["error"], ERROR_CLASSES, "other")
        counts += np.bincount(_tag_codes(chunk) * len(ERROR_CLASSES) + err,
                              minlength=counts.size).reshape(counts.shape)
    return counts


def load(df: pd.DataFrame | Requests, offered_rate: float | None,
         duration_s: float) -> pd.DataFrame:
    """Offered against achieved load per endpoint (``all`` first when several).

    An endpoint's offered rate is its share of the scheduled arrivals times the run's offered
    rate (NaN for a closed loop, which offers none); achieved counts every request sent
    (completed or failed) over the planned duration.
    """
    src = as_requests(df)
    return _load(_by_tag_and_error(src), src.tags, offered_rate, duration_s)


def _load(counts: np.ndarray, tags: list[str], offered_rate: float | None,
          duration_s: float) -> pd.DataFrame:
    """:func:`load` from :func:`_by_tag_and_error`."""
    groups = [(tag, counts[i]) for i, tag in enumerate(tags)]
    total = max(int(counts.sum()), 1)
    if len(groups) != 1:
        groups.insert(0, (ALL, counts.sum(axis=0)))
    rows = []
    for tag, c in groups:
        scheduled = int(c.sum())
        dropped = int(c[ERROR_CLASSES.index("dropped")])
        sent = scheduled - dropped
        failed = sent - int(c[0])  # class 0: no error
        offered = offered_rate * scheduled / total if offered_rate else np.nan
        achieved = sent / duration_s if duration_s else np.nan
        rows.append({"endpoint": tag, "scheduled": scheduled, "sent": sent,
                     "completed": sent - failed, "failed": failed, "dropped": dropped,
                     "offered_rps": offered, "achieved_rps": achieved,
                     "achieved_ratio": achieved / offered if offered else np.nan})
    return pd.DataFrame(rows, columns=["endpoint", "scheduled", "sent", "completed", "failed",
                                       "dropped", "offered_rps", "achieved_rps",
                                       "achieved_ratio"]).set_index("endpoint")


def errors(df: pd.DataFrame | Requests) -> pd.DataFrame:
    """Errors by class per endpoint (``all`` first when several): counts and the error rate.

    ``error_rate`` is failed over sent, as k6's ``http_req_failed``; ``dropped`` arrivals were
    never sent and are counted beside, not in the rate.
    """
    src = as_requests(df)
    return _errors(_by_tag_and_error(src), src.tags)


def _errors(counts: np.ndarray, names: list[str]) -> pd.DataFrame:
    """:func:`errors` from :func:`_by_tag_and_error`."""
    classes = [c for c in ERROR_CLASSES if c]
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


def window_of(chunk: pd.DataFrame, seconds: float) -> np.ndarray:
    """Each row's window (by intended start) as an integer, ``seconds`` long."""
    return np.floor(chunk["t_s"].to_numpy() / seconds).astype(np.int64)


def windows(df: pd.DataFrame | Requests, seconds: float = 10.0,
            by_endpoint: bool = False) -> pd.DataFrame:
    """Per-window (by intended start) request rate, errors, drops and latency percentiles.

    Index ``t_s`` (window start, seconds into the run), or ``(endpoint, t_s)`` with
    ``by_endpoint``. Columns: ``requests`` sent, ``rps``, ``errors``, ``dropped``, p50 ... p99.9,
    ``max`` (ms). Windows in which nothing was sent have NaN percentiles.
    """
    src = as_requests(df)
    names = src.tags if by_endpoint else [ALL]
    n_win = src.n_windows(seconds)
    n_groups = len(names) * n_win

    def group(chunk: pd.DataFrame) -> np.ndarray:
        ep = _tag_codes(chunk) if by_endpoint else np.zeros(len(chunk), np.int64)
        return ep * n_win + window_of(chunk, seconds)

    def grouped(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        sent = ~chunk["dropped"].to_numpy()
        return group(chunk)[sent], chunk["latency_ms"].to_numpy(np.float64)[sent]

    rows, sent, failed, dropped = (np.zeros(n_groups, np.int64) for _ in range(4))
    bounds = None
    for chunk in src.chunks():
        g = group(chunk)
        bounds = stats.key_bounds(grouped(chunk)[1], bounds)
        rows += np.bincount(g, minlength=n_groups)
        failed += np.bincount(g, weights=chunk["failed"].to_numpy(), minlength=n_groups
                              ).astype(np.int64)
        drop = chunk["dropped"].to_numpy()
        dropped += np.bincount(g, weights=drop, minlength=n_groups).astype(np.int64)
        sent += np.bincount(g[~drop], minlength=n_groups)
    pct = _order_statistics(src, grouped, Counted(sent, bounds), PERCENTILES)
    out = pd.DataFrame({"requests": sent, "rps": sent / seconds, "errors": failed,
                        "dropped": dropped, **pct})
    index = pd.MultiIndex.from_product([names, np.arange(n_win) * seconds],
                                       names=["endpoint", "t_s"])
    out = out.set_axis(index)[rows > 0]
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


def analyse(df: pd.DataFrame | Requests, scenario: str, offered_rate: float | None,
            duration_s: float, window_s: float | None = None,
            reported: DriveResult | None = None) -> Analysis:
    """Analyse one run: ``df`` from :func:`open_requests` (streamed) or :func:`load_requests`
    (or :func:`with_derived`); ``reported`` is the driver's result
    (:func:`workbench.driver.load_result`)."""
    window_s = window_s or window_seconds(duration_s)
    src = as_requests(df)
    rows = _latency_rows(src, stats.CONFIDENCE, True)  # one selection for both tables
    counts = _by_tag_and_error(src)
    return Analysis(
        scenario=scenario, offered_rate=offered_rate, duration_s=duration_s, window_s=window_s,
        summary=_summary(rows, counts, src.tags, duration_s),
        percentiles=_percentile_frame(rows, src.tags, scenario, True),
        load=_load(counts, src.tags, offered_rate, duration_s),
        errors=_errors(counts, src.tags),
        windows=windows(src, window_s, by_endpoint=True),
        validity=validity(reported),
    )


def numpy_rank(n: int, p: float) -> int:
    """1-based rank ``np.percentile(values, p, method="inverted_cdf")`` picks among n values
    (numpy's own floating-point rule, which k6-style thresholds have always used)."""
    index = n * (p / 100) - 1
    below = np.floor(index)
    return int(max(below if index == below else below + 1, 0)) + 1


def evaluate_thresholds(df: pd.DataFrame | Requests,
                        thresholds: Mapping | list[Threshold]) -> pd.DataFrame:
    """One row per threshold: metric, expression, measured value, ok.

    A threshold on an endpoint with no samples fails: a check that saw nothing passed nothing.
    """
    parsed = thresholds if isinstance(thresholds, list) else parse_thresholds(thresholds)
    src = as_requests(df)

    def grouped(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        sent = ~chunk["dropped"].to_numpy()
        tags = chunk["tag"].astype(str).to_numpy()
        codes, values = [], []
        for i, t in enumerate(parsed):
            column = chunk[t.column].to_numpy(dtype=np.float64)
            keep = sent & (True if t.tag is None else tags == t.tag)
            if t.column != "failed":
                keep &= ~np.isnan(column)
            codes.append(np.full(int(keep.sum()), i))
            values.append(column[keep])
        return (np.concatenate(codes) if codes else np.zeros(0, np.int64),
                np.concatenate(values) if values else np.zeros(0))

    counts = np.zeros(len(parsed), np.int64)
    sums = np.zeros(len(parsed))
    bounds = None
    for chunk in src.chunks():
        codes, values = grouped(chunk)
        counts += np.bincount(codes, minlength=len(parsed))
        bounds = stats.key_bounds(values, bounds)
        for i in np.unique(codes):  # numpy's pairwise sum, as pandas' mean adds them
            sums[i] += values[codes == i].sum()
    wanted: list[tuple[int, int]] = []  # (threshold, rank) pairs to select
    for i, t in enumerate(parsed):
        n = int(counts[i])
        if n and t.agg in ("p", "min", "max", "med"):
            ranks = {"p": [numpy_rank(n, t.q or 0.0)], "min": [1], "max": [n],
                     "med": sorted({(n + 1) // 2, n // 2 + 1})}[t.agg]
            wanted += [(i, r) for r in ranks]
    picked = select_ranks(src, grouped, np.array([i for i, _ in wanted], np.int64),
                          np.array([r for _, r in wanted], np.int64), bounds)
    rows = []
    for i, t in enumerate(parsed):
        n = int(counts[i])
        mine = [float(v) for (j, _), v in zip(wanted, picked, strict=True) if j == i]
        if not n:
            value = np.nan
        elif t.agg in ("avg", "rate"):
            value = float(sums[i] / n)
        elif t.agg == "count":
            value = float(n)
        else:  # a percentile, min, max, or the median (the middle two's mean when n is even)
            value = float(np.mean(mine))
        ok = bool(not np.isnan(value) and _OPS[t.op](value, t.limit))
        rows.append({"metric": t.metric, "threshold": t.expression, "value": value, "ok": ok})
    return pd.DataFrame(rows, columns=["metric", "threshold", "value", "ok"])


def assert_thresholds(verdicts: pd.DataFrame) -> None:
    """Raise :class:`ThresholdBreach` listing every failed threshold."""
    failed = verdicts[~verdicts["ok"]]
    if len(failed):
        lines = [f"{r.metric} {r.threshold} (measured {r.value:.4g})" for r in failed.itertuples()]
        raise ThresholdBreach("thresholds breached: " + "; ".join(lines))
