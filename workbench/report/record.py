"""The baseline record, schema version 3: one JSON per run, self-describing and comparable.

A record holds what was measured and everything needed to trust and compare it::

    schema_version    3; older files are migrated on load (MIGRATIONS), newer ones refused
    run_id, source    workbench run or import ({"tool": "k6", "imported": true, ...})
    scenario, profile, parameters, parameters_hash  (profile "custom" when the parameters differ
                      from profile_base; profile_differs names each difference)
    target            url, kind (certctl | stand-in), version, commit, modified, commit_date, dsn
                      (password removed)
    workbench         the workbench's git SHA and whether its tree was clean
    run               started_at, ended_at (UTC ISO 8601), status
    machine           CPU model, cores, memory, kernel, virtualisation, fingerprint, name
    software          Python and package versions
    database          server_version and settings read from the target database, or null
    fixtures          sizes (what comparability checks) and what seeding reported
    load              offered and achieved rate, duration, scheduled/completed/failed/dropped
    protocol          h1 or h2, what the driver spoke (null: unknown, as for an import)
    telemetry         per-window summaries of the server-side samples, or null when none
    calibration       the machine measured before and after the timed phase (CPU, loopback
                      round trip, commit latency; :mod:`workbench.report.calibration`), or
                      ``measured: false`` with the reason (older records, imports)
    latency_basis     what the latency numbers measure
    endpoints         per endpoint (and "all"): counts, rates, errors, p50 ... p99.9, max (ms)
    percentiles       per endpoint and status class: value and 95% interval [lo, hi] (null when
                      not identifiable)
    histograms        HdrHistogram encodings per endpoint and status class (µs)
    windows           per endpoint, per time window: counts, percentiles and an encoded histogram,
                      so two records can be compared statistically without the raw samples
    validity          valid, reasons, the checks behind them
    thresholds, passed  k6-style threshold verdicts
    phases            optional, only for a run with a new connection per request: per endpoint,
                      connect, tls, ttfb and total (ms): count, p50, p95, p99, max

Building a record is pure (DataFrames and dicts in, a dict out); :mod:`workbench.run.scenario`
gathers the facts that need I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from workbench.analyse import hdr, stats
from workbench.analyse.analysis import (
    PERCENTILES,
    STATUS_CLASSES,
    Analysis,
    Requests,
    as_requests,
    phases,
    select_ranks,
    window_of,
)
from workbench.capacity import records
from workbench.driver import DriveResult
from workbench.errors import WorkbenchError
from workbench.report import calibration

SCHEMA_VERSION = 3
RECORD_FILE = "record.json"
LATENCY_BASIS = "response time from the intended start (coordinated omission corrected)"
HISTOGRAM_ENCODING = "HdrHistogram V2 compressed histoblob, base64"
WINDOW_PERCENTILES = (50.0, 95.0, 99.0)

# Top-level keys of a version-3 record and their JSON types (None: null allowed).
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "run_id": (str,), "source": (dict,), "scenario": (str,),
    "profile": (str, type(None)), "parameters": (dict,), "parameters_hash": (str,),
    "target": (dict,), "workbench": (dict,), "run": (dict,), "machine": (dict,),
    "software": (dict,), "database": (dict, type(None)), "fixtures": (dict,), "load": (dict,),
    "latency_basis": (str,), "endpoints": (dict,), "percentiles": (dict,),
    "histograms": (dict,), "windows": (dict, type(None)), "validity": (dict,),
    "thresholds": (list,), "passed": (bool,), "protocol": (str, type(None)),
    "telemetry": (dict, type(None)), "calibration": (dict,),
}
_NESTED = {"target": ("kind", "version", "commit", "commit_date"),
           "run": ("started_at", "ended_at"), "machine": ("name", "fingerprint"),
           "validity": ("valid", "reasons"), "fixtures": ("sizes",),
           "source": ("tool", "imported"), "calibration": ("measured", "figures")}

# Version n -> n + 1. A later schema adds its step here, so files already committed stay
# readable (asv's api_version and update_json).
def _v1_to_v2(record: dict) -> dict:
    """Version 2 names the protocol (every version-1 run spoke HTTP/1.1) and telemetry."""
    measured = not record["source"].get("imported")
    return record | {"schema_version": 2, "protocol": "h1" if measured else None,
                     "telemetry": None}


def _v2_to_v3(record: dict) -> dict:
    """Version 3 measures the machine beside the run; a version-2 record never did."""
    return record | {"schema_version": 3, "calibration": calibration.missing(
        "recorded with record schema 2, before calibration existed")}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}


def params_hash(params: Mapping) -> str:
    """A short stable hash of a run's parameters (key order does not matter)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def validate(record: Mapping, where: str = "record") -> None:
    """Refuse a record that is not a complete record of this version, naming the first problem."""
    if not isinstance(record, Mapping):
        raise WorkbenchError(f"{where}: a baseline record must be a JSON object")
    for key, types in REQUIRED.items():
        if key not in record:
            raise WorkbenchError(f"{where}: baseline record lacks {key!r}; it was not written "
                                 "by this workbench (re-record the run)")
        if not isinstance(record[key], types):
            raise WorkbenchError(f"{where}: baseline record field {key!r} has the wrong type "
                                 f"({type(record[key]).__name__})")
    for section, keys in _NESTED.items():
        missing = [k for k in keys if k not in record[section]]
        if missing:
            raise WorkbenchError(f"{where}: baseline record section {section!r} lacks "
                                 f"{', '.join(missing)}")


def migrate(record: dict, where: str = "record") -> dict:
    """Bring a record of an older schema version up to :data:`SCHEMA_VERSION`."""
    version = record.get("schema_version") if isinstance(record, Mapping) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise WorkbenchError(f"{where} is not a baseline record (it has no schema_version); "
                             "pass a run folder (runs/<id>) or a record under baselines/")
    if record.get("kind") == records.KIND:
        raise WorkbenchError(f"{where} is a capacity record, not a run's; compare and table "
                             "run records (a capacity search's steps are in its capacity.json)")
    if version > SCHEMA_VERSION:
        raise WorkbenchError(f"{where}: baseline schema version {version!r} is not "
                             f"{SCHEMA_VERSION}; upgrade the workbench")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise WorkbenchError(f"{where}: no migration from baseline schema version "
                                 f"{version}; this workbench reads version {SCHEMA_VERSION}")
        try:
            record = step(record)
        except (KeyError, TypeError, AttributeError) as exc:  # not the shape that version had
            raise WorkbenchError(f"{where} is not a baseline record of schema version {version} "
                                 f"(no {exc}); pass a run folder or a record under baselines/"
                                 ) from None
        version = record["schema_version"]
    return record


def num(value: Any) -> Any:
    """A JSON-safe scalar: numpy to Python, NaN and infinities to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _latency_us(chunk: pd.DataFrame) -> np.ndarray:
    """Response times in integer microseconds, exact from the nanosecond columns."""
    return (chunk["end_ns"].to_numpy().astype(np.int64)
            - chunk["intended_ns"].to_numpy().astype(np.int64)) // 1000


def latency_sections(requests: pd.DataFrame | Requests, window_s: float,
                     driver_histograms: Mapping | None = None) -> dict:
    """The ``histograms`` and ``windows`` sections from a run's requests, streamed.

    Per-endpoint histograms come from the driver's result when it wrote them, else
    from ``requests.parquet`` with the same configuration (the encoding does not depend on
    which). Windows are cut by intended start, as :func:`workbench.analyse.analysis.windows` cuts
    them; their percentiles are selected by rank, exactly, without holding the requests.
    """
    src = as_requests(requests)
    n_tags, classes = len(src.tags), list(STATUS_CLASSES)
    n_win = src.n_windows(window_s)
    by_window, by_class = hdr.SparseHistograms(), hdr.SparseHistograms()
    requests_in, errors_in = np.zeros(n_tags * n_win, np.int64), np.zeros(n_tags * n_win,
                                                                          np.int64)

    def grouped(chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        sent = ~chunk["dropped"].to_numpy()
        tag = chunk["tag"].cat.codes.to_numpy().astype(np.int64)[sent]
        return (tag * n_win + window_of(chunk, window_s)[sent],
                _latency_us(chunk)[sent].astype(np.float64))

    bounds = None
    for chunk in src.chunks():
        group, latency = grouped(chunk)
        bounds = stats.key_bounds(latency, bounds)
        latency_us = latency.astype(np.int64)
        requests_in += np.bincount(group, minlength=requests_in.size)
        errors_in += np.bincount(group, weights=chunk["failed"].to_numpy()[
            ~chunk["dropped"].to_numpy()], minlength=errors_in.size).astype(np.int64)
        by_window.add(group, latency_us)
        if not driver_histograms:
            sent = ~chunk["dropped"].to_numpy()
            tag = chunk["tag"].cat.codes.to_numpy().astype(np.int64)[sent]
            cls = chunk["status_class"].cat.codes.to_numpy().astype(np.int64)[sent]
            by_class.add(tag * len(classes) + cls, latency_us)
    if driver_histograms:
        by_endpoint = {str(t): {str(c): b for c, b in sorted(h.items())}
                       for t, h in sorted(driver_histograms.items())}
        source = "driver"
    else:
        by_endpoint = {}
        for key, blob in sorted(by_class.encode().items()):
            by_endpoint.setdefault(src.tags[key // len(classes)], {})[
                classes[key % len(classes)]] = blob
        source = "requests.parquet"
    present = np.flatnonzero(requests_in)
    ranks = [stats.nearest_rank(requests_in[present], p) for p in WINDOW_PERCENTILES]
    picked = select_ranks(src, grouped, np.tile(present, len(ranks)), np.concatenate(ranks),
                          bounds)
    picked = picked.reshape(len(ranks), -1)
    blobs = by_window.encode()
    windows: dict[str, list] = {}
    for j, g in enumerate(present):
        entry = {"t_s": float((g % n_win) * window_s), "requests": int(requests_in[g]),
                 "errors": int(errors_in[g])}
        for p, values in zip(WINDOW_PERCENTILES, picked, strict=True):
            entry[stats.label(p)] = float(values[j]) / 1000
        entry["histogram"] = blobs[int(g)]
        windows.setdefault(src.tags[g // n_win], []).append(entry)
    return {
        "histograms": {"encoding": HISTOGRAM_ENCODING, **hdr.CONFIG, "source": source,
                       "by_endpoint": by_endpoint},
        "windows": {"seconds": window_s, "by": "intended start", "by_endpoint": windows},
    }


def percentile_section(table: pd.DataFrame, confidence: float = stats.CONFIDENCE) -> dict:
    """``percentiles`` from :func:`workbench.analyse.analysis.percentiles`: value and [lo, hi] in
    ms."""
    groups = []
    for (_, endpoint, status_class), row in table.iterrows():
        entry = {"endpoint": endpoint, "status_class": status_class, "count": int(row["count"])}
        for p in PERCENTILES:
            key = stats.label(p)
            entry[key] = {"value": num(row[key]),
                          "ci": [num(row[f"{key}_lo"]), num(row[f"{key}_hi"])]}
        entry["max"] = num(row["max"])
        groups.append(entry)
    return {"unit": "ms", "confidence": confidence,
            "method": "nearest rank; distribution-free order-statistic interval (binomial)",
            "groups": groups}


def endpoint_section(result: Analysis) -> dict:
    """``endpoints``: the per-endpoint numbers the baselines table shows."""
    out = {}
    errors = result.errors
    for tag, row in result.summary.iterrows():
        entry = {k: num(row[k]) for k in ("requests", "failed", "dropped", "achieved_rps",
                                          "error_rate")}
        entry["offered_rps"] = num(result.load.loc[tag, "offered_rps"])
        entry |= {stats.label(p): num(row[stats.label(p)]) for p in PERCENTILES}
        entry["max"] = num(row["max"])
        by_class = errors.loc[tag].drop(["sent", "failed", "error_rate"])
        entry["errors"] = {str(k): int(v) for k, v in by_class.items() if v}
        out[str(tag)] = entry
    return out


def validity_section(reported: DriveResult | None) -> dict:
    """``validity``: the driver's verdict, its reasons and the checks behind them.

    The driver judged the run once (``result.json``: ``valid``, ``invalid_reasons``,
    ``checks``); the record keeps that judgement. Without a driver result the run is not
    judged: ``valid`` is null.
    """
    if reported is None:
        return {"valid": None, "reasons": [], "checks": [], "schedule_lag_ms": None,
                "driver_cpu_fraction": None, "driver_scheduling": None}
    checks = [{k: num(c[k]) for k in ("check", "measured", "limit", "ok")}
              for c in reported["checks"]]
    return {"valid": bool(reported["valid"]), "reasons": list(reported["invalid_reasons"]),
            "checks": checks, "schedule_lag_ms": reported["schedule_lag_ms"],
            "driver_cpu_fraction": reported["driver"]["cpu_fraction"],
            # what the driver got from the OS: how far other tenants could delay its wake-ups
            "driver_scheduling": reported["driver"].get("scheduling")}


def phase_section(table: pd.DataFrame) -> dict:
    """``phases``: :func:`workbench.analyse.analysis.phases` as ``{endpoint: {phase: {count, p50,
    p95, p99, max}}}`` in ms."""
    out: dict[str, dict] = {}
    for (endpoint, phase), row in table.iterrows():
        out.setdefault(str(endpoint), {})[str(phase)] = {
            k: int(v) if k == "count" else num(v) for k, v in row.items()}
    return out


def threshold_section(verdicts: pd.DataFrame) -> list[dict]:
    """``thresholds``: one entry per k6-style threshold, its measured value and verdict."""
    return [{k: num(v) for k, v in row.items()} for row in verdicts.to_dict("records")]


def build(context: Mapping, result: Analysis, requests: pd.DataFrame | Requests,
          verdicts: pd.DataFrame,
          reported: DriveResult | None = None) -> dict:
    """A complete record of a workbench run.

    ``context`` holds the provenance gathered with I/O (run_id, scenario, profile, parameters,
    target, workbench, run, machine, software, database, fixtures, load); ``reported`` is the
    driver's result (:func:`workbench.driver.load_result`).
    """
    record = {
        "schema_version": SCHEMA_VERSION,
        "source": {"tool": "workbench", "imported": False},
        **context,
        "parameters_hash": params_hash(context["parameters"]),
        "latency_basis": LATENCY_BASIS,
        "endpoints": endpoint_section(result),
        "percentiles": percentile_section(result.percentiles),
        **latency_sections(requests, result.window_s,
                           reported["histograms"] if reported is not None else None),
        "validity": validity_section(reported),
        "thresholds": threshold_section(verdicts),
        "passed": bool(verdicts["ok"].all()) if len(verdicts) else True,
        "protocol": reported["protocol"] if reported is not None else None,
        "telemetry": context.get("telemetry"),
        "calibration": context.get("calibration")
        or calibration.missing("not measured: the run was recorded without a calibration"),
    }
    timed = phases(requests)
    if timed is not None:  # a connection per request: its phases beside the total
        record["phases"] = phase_section(timed)
    validate(record)
    return record
