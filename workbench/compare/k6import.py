"""Import a k6 end-of-test summary as a run, so certctl's k6 figures sit in the same table.

certctl's harness writes its summary twice to one path: ``handleSummary`` returns k6's summary
data (``metrics[name] = {"type", "contains", "values": {...}, "thresholds": {expr: {"ok"}}}``)
and ``--summary-export`` writes k6's older flat form (``metrics[name] = {...values,
"thresholds": {expr: failed}}``, a rate's ``rate`` renamed ``value``). Both are read.

Endpoints are the tagged sub-metrics ``http_req_duration{scenario:NAME}`` (any tag but
``expected_response``) and custom time trends named ``NAME_duration`` (certctl's ACME script);
``all`` is the untagged ``http_req_duration``. k6 keeps no histogram and no interval, so those
stay empty; its times run from the request's send, so they are not corrected for coordinated
omission, and the machine that ran k6 is unknown: the record says all of this.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from workbench.analyse import hdr
from workbench.analyse.analysis import _EXPR, ALL, PERCENTILES
from workbench.analyse.stats import label
from workbench.compare.baseline import check_path_part, workbench_revision
from workbench.errors import WorkbenchError
from workbench.jsonio import dumps, write_json
from workbench.paths import project_root, runs_dir
from workbench.report import calibration, record

LATENCY_BASIS = ("k6 http_req_duration: from the request's send to the end of its response; "
                 "not corrected for coordinated omission")
_SUBMETRIC = re.compile(r"(?P<name>[A-Za-z0-9_]+)(?:\{(?P<key>[^:}]+):(?P<value>[^}]*)\})?")
_BUILTIN_TRENDS = {"http_req_duration", "http_req_blocked", "http_req_connecting",
                   "http_req_tls_handshaking", "http_req_sending", "http_req_waiting",
                   "http_req_receiving", "iteration_duration", "group_duration"}
_SCENARIO_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_K6_STAT = {"p50": "med"} | {label(p): f"p({p:g})" for p in PERCENTILES if p != 50}


@dataclass(frozen=True)
class Metric:
    """One k6 metric in a format-independent shape."""

    kind: str  # trend | rate | counter | gauge
    values: dict
    thresholds: dict[str, bool]  # expression -> passed


@dataclass(frozen=True)
class Summary:
    """A parsed k6 summary: its format, metrics and test duration (seconds, when known)."""

    format: str  # "handleSummary" | "summary-export"
    metrics: dict[str, Metric]
    duration_s: float | None


def _legacy_kind(values: Mapping) -> str:
    if "med" in values or "avg" in values:
        return "trend"
    if "passes" in values and "fails" in values:
        return "rate"
    if "count" in values:
        return "counter"
    return "gauge"


def parse(data: Mapping) -> Summary:
    """Read either summary format; anything else is refused with what was expected."""
    metrics = data.get("metrics") if isinstance(data, Mapping) else None
    if not isinstance(metrics, Mapping) or not metrics:
        raise WorkbenchError("not a k6 summary: no 'metrics' object; export one with "
                             "`k6 run --summary-export=summary.json` or handleSummary")
    first = next(iter(metrics.values()))
    out: dict[str, Metric] = {}
    if isinstance(first, Mapping) and "values" in first and "type" in first:
        fmt = "handleSummary"
        for name, m in metrics.items():
            thresholds = {str(k): bool(v.get("ok")) for k, v in (m.get("thresholds") or {}).items()}
            out[name] = Metric(str(m["type"]), dict(m["values"]), thresholds)
        duration_ms = (data.get("state") or {}).get("testRunDurationMs")
        duration_s = float(duration_ms) / 1000 if duration_ms else None
    else:
        fmt = "summary-export"
        for name, m in metrics.items():
            values = {k: v for k, v in m.items() if k != "thresholds"}
            kind = _legacy_kind(values)
            if kind == "rate" and "value" in values:
                values["rate"] = values.pop("value")  # the export renamed it; undo
            # the export stores whether each threshold *failed*
            thresholds = {str(k): not bool(v) for k, v in (m.get("thresholds") or {}).items()}
            out[name] = Metric(kind, values, thresholds)
        duration_s = None
    for name, metric in out.items():
        _check_values(name, metric)
    if "http_reqs" in out and duration_s is None:
        reqs = out["http_reqs"].values
        if reqs.get("rate"):
            duration_s = reqs["count"] / reqs["rate"]
    if "http_req_duration" not in out:
        raise WorkbenchError("the k6 summary has no http_req_duration metric; was it written "
                             "by an HTTP test?")
    return Summary(fmt, out, duration_s)


def _check_values(name: str, metric: Metric) -> None:
    """Refuse what k6 never writes: a statistic that is not a finite number, a negative count
    or time, a rate outside 0..1 (a gauge alone may be negative)."""
    for stat, value in metric.values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise WorkbenchError(f"not a k6 summary: metric {name!r} has {stat} {value!r}, not "
                                 "a number; pass the file k6 wrote with --summary-export or "
                                 "handleSummary")
        if metric.kind != "gauge" and value < 0:
            raise WorkbenchError(f"not a k6 summary: metric {name!r} has a negative {stat} "
                                 f"({value!r}); k6 never writes a negative count, rate or time")
        if metric.kind == "rate" and stat == "rate" and value > 1:
            raise WorkbenchError(f"not a k6 summary: metric {name!r} has rate {value!r}, above "
                                 "1; a k6 rate is a share of 0..1")


def endpoints(summary: Summary) -> dict[str, tuple[str, str | None]]:
    """Endpoint name -> (trend metric name, tag selector ``{key:value}`` or None)."""
    found: dict[str, tuple[str, str | None]] = {}
    for name, metric in summary.metrics.items():
        m = _SUBMETRIC.fullmatch(name)
        if not m or metric.kind != "trend":
            continue
        if m["name"] == "http_req_duration" and m["key"] and m["key"] != "expected_response":
            found[m["value"]] = (name, f"{{{m['key']}:{m['value']}}}")
        elif (not m["key"] and m["name"].endswith("_duration")
              and m["name"] not in _BUILTIN_TRENDS):
            found[m["name"].removesuffix("_duration")] = (name, None)
    if len(found) != 1:
        found[ALL] = ("http_req_duration", "")
    return dict(sorted(found.items()))


def _stat(values: Mapping, key: str):
    value = values.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _endpoint(summary: Summary, trend: str, selector: str | None) -> dict:
    metrics = summary.metrics
    values = metrics[trend].values
    entry = {k: _stat(values, v) for k, v in _K6_STAT.items()}
    entry["max"] = _stat(values, "max")
    reqs = metrics.get(f"http_reqs{selector}") if selector is not None else None
    failed = metrics.get(f"http_req_failed{selector}") if selector is not None else None
    entry["requests"] = int(reqs.values["count"]) if reqs else None
    entry["achieved_rps"] = _stat(reqs.values, "rate") if reqs else None
    entry["failed"] = int(failed.values.get("passes", 0)) if failed else None
    entry["error_rate"] = _stat(failed.values, "rate") if failed else None
    entry["dropped"] = None
    entry["offered_rps"] = None
    entry["errors"] = {}
    return entry


def _threshold_value(metric: Metric, expression: str):
    m = _EXPR.fullmatch(expression)
    if not m:
        return None
    agg = m["agg"]
    if agg.startswith("p("):
        key = "med" if float(m["q"]) == 50 and "p(50)" not in metric.values else agg
        return _stat(metric.values, key)
    return _stat(metric.values, {"rate": "rate", "count": "count"}.get(agg, agg))


def to_record(summary: Summary, scenario: str, started_at: datetime, *, file_name: str,
              sha256: str, machine: str | None = None, commit: str | None = None,
              version: str | None = None, target_kind: str = "certctl",
              started_at_source: str = "given") -> dict:
    """A version-1 record of an imported k6 summary, marked as imported."""
    eps = {name: _endpoint(summary, trend, sel) for name, (trend, sel) in
           endpoints(summary).items()}
    metrics = summary.metrics
    reqs = metrics.get("http_reqs")
    failed = metrics.get("http_req_failed")
    dropped_metric = metrics.get("dropped_iterations")
    dropped = int(dropped_metric.values.get("count", 0)) if dropped_metric else 0
    count = int(reqs.values["count"]) if reqs else None
    n_failed = int(failed.values.get("passes", 0)) if failed else None
    if ALL in eps:
        eps[ALL] |= {"requests": count, "failed": n_failed, "dropped": dropped,
                     "achieved_rps": _stat(reqs.values, "rate") if reqs else None,
                     "error_rate": _stat(failed.values, "rate") if failed else None}
    duration = summary.duration_s
    ended = started_at + timedelta(seconds=duration) if duration else started_at
    thresholds = [{"metric": name, "threshold": expr, "ok": ok,
                   "value": _threshold_value(metric, expr)}
                  for name, metric in sorted(metrics.items())
                  for expr, ok in sorted(metric.thresholds.items())]
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    groups = [{"endpoint": name, "status_class": ALL, "count": e["requests"],
               **{label(p): {"value": e[label(p)], "ci": [None, None]} for p in PERCENTILES},
               "max": e["max"]} for name, e in eps.items()]
    rec = {
        "schema_version": record.SCHEMA_VERSION,
        "run_id": f"{stamp}_{scenario}_{sha256[:8]}",
        "source": {"tool": "k6", "imported": True, "format": summary.format,
                   "file": file_name, "sha256": sha256},
        "scenario": scenario,
        "protocol": None,  # k6 negotiates h2 where offered; its summary does not say
        "telemetry": None,
        "calibration": calibration.missing("imported from k6: the machine that ran it was "
                                           "not measured"),
        "profile": None,
        "parameters": {},
        "parameters_hash": record.params_hash({}),
        "target": {"url": None, "kind": target_kind, "version": version, "commit": commit,
                   "modified": None, "commit_date": None, "dsn": None},
        "workbench": workbench_revision(project_root()),
        "run": {"started_at": started_at.isoformat(), "ended_at": ended.isoformat(),
                "status": "completed", "started_at_source": started_at_source},
        "machine": {"name": machine or "k6-unknown-machine", "fingerprint": None,
                    "note": "imported from k6: the machine that ran the test is unknown"},
        "software": {"python": None, "packages": {}, "k6": None},
        "database": None,
        "fixtures": {"sizes": {}, "seeded": {}},
        "load": {"offered_rate": None,
                 "achieved_rate": _stat(reqs.values, "rate") if reqs else None,
                 "duration_s": duration, "scheduled": None,
                 "completed": count - n_failed if count is not None and n_failed is not None
                 else None,
                 "failed": n_failed, "dropped": dropped,
                 "error_rate": _stat(failed.values, "rate") if failed else None},
        "latency_basis": LATENCY_BASIS,
        "endpoints": eps,
        "percentiles": {"unit": "ms", "confidence": None,
                        "method": "k6 summary statistics; no interval without the samples",
                        "groups": groups},
        "histograms": {"encoding": record.HISTOGRAM_ENCODING, **hdr.CONFIG,
                       "source": "none: a k6 summary keeps no histogram", "by_endpoint": {}},
        "windows": None,
        "validity": {"valid": dropped == 0,
                     "reasons": [f"k6 dropped {dropped} iterations"] if dropped else [],
                     "checks": [{"check": "dropped iterations (k6)", "measured": dropped,
                                 "limit": 0, "ok": dropped == 0}],
                     "schedule_lag_ms": None, "driver_cpu_fraction": None,
                     "driver_scheduling": None},
        "thresholds": thresholds,
        "passed": all(t["ok"] for t in thresholds),
    }
    record.validate(rec)
    return rec


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WorkbenchError(f"--started-at {text!r} is not an ISO 8601 time; write it as "
                             "2026-05-02T14:30:00Z") from None
    if value.tzinfo is None:
        raise WorkbenchError(f"--started-at {text!r} has no time zone; add Z for UTC")
    return value.astimezone(UTC)


def import_summary(path: Path | str, scenario: str, *, machine: str | None = None,
                   commit: str | None = None, version: str | None = None,
                   started_at: str | None = None, target_kind: str = "certctl",
                   out_root: Path | None = None) -> Path:
    """Write ``runs/<run-id>/record.json`` for a k6 summary file; returns the run folder.

    The run id derives from the start time and the file's hash, so importing the same file
    twice is refused (records are immutable) instead of filing it twice.
    """
    path = Path(path)
    if not _SCENARIO_NAME.fullmatch(scenario or ""):
        raise WorkbenchError(f"scenario name {scenario!r} must be lower-case letters, digits "
                             "and underscores (e.g. api_tier)")
    if commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        raise WorkbenchError(f"--commit {commit!r} is not a git SHA (7 to 40 hex digits)")
    if machine is not None:
        check_path_part(machine, "--machine")  # it names a folder under baselines/
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkbenchError(f"cannot read k6 summary {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except RecursionError:
        raise WorkbenchError(f"{path} nests deeper than any k6 summary; pass the file k6 "
                             "wrote with --summary-export or handleSummary") from None
    except ValueError as exc:
        raise WorkbenchError(f"{path} is not JSON ({exc}); pass the file k6 wrote with "
                             "--summary-export or handleSummary") from None
    given_start = _parse_time(started_at) if started_at else None
    try:  # a summary of another shape fails somewhere in here: one line, nothing written
        summary = parse(data)
        if given_start is not None:
            start, source = given_start, "given"
        else:
            start = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
            if summary.duration_s:
                start -= timedelta(seconds=summary.duration_s)  # the file is written at the end
            source = "file modification time minus the test duration"
        rec = to_record(summary, scenario, start.replace(microsecond=0), file_name=path.name,
                        sha256=hashlib.sha256(raw).hexdigest(), machine=machine, commit=commit,
                        version=version, target_kind=target_kind, started_at_source=source)
        dumps(rec)  # NaN or infinity in the summary: refused here, before anything is written
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        raise WorkbenchError(f"{path} is not a k6 summary this importer reads ({reason}); pass "
                             "the file k6 wrote with --summary-export or handleSummary") from None
    run_dir = (out_root or runs_dir()) / rec["run_id"]
    write_json(run_dir / record.RECORD_FILE, rec, exclusive=True)
    return run_dir
