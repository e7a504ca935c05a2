"""The driver's files and their declared shapes; shard reports merged into ``result.json``.

On-disk contract (every file written by :func:`workbench.jsonio.write_json`):

- ``spec.json`` (:class:`workbench.driver.spec.SpecDocument`): what was driven, query, body
  and header values in clear (secret headers excepted), so readable by its owner only;
- ``shard.json`` (:class:`ShardReport`): one shard's counters and encoded histograms, written
  by each shard process of a sharded run, merged and removed by the parent;
- ``result.json`` (:class:`DriveResult`): the run's result, read back only through
  :func:`load_result`;
- ``requests.parquet``: one row per request (:mod:`workbench.driver.recorder`).

Each JSON file carries ``schema_version``; a reader refuses any other version with the fix.
A field's meaning never changes within a version; a new field is added, never repurposed.

Merging adds HDR histograms and counters (percentiles are never averaged). Percentiles come
from the merged histograms (microsecond values, 3 significant digits: each reported value is
within 0.1 % of a recorded one); exact per-request values stay in ``requests.parquet``.

Validity is computed here, once: the run measured the driver, not the target, when an arrival
was dropped; the open-loop schedule-lag p99 exceeds 2 ms; an open loop achieved below 95 % of
its offered rate; a driver process was busy 90 % of a core or more (an honest signal, as the
timerfd timer does not spin); a real-time driver's watchdog took its priority away during the
run (it computed past the limit without blocking: :mod:`workbench.driver.priority`); or the run
did not complete. ``result["checks"]`` holds each
check with what it measured; ``invalid_reasons`` are the failed ones in words.
"""

# No ``from __future__ import annotations`` here: TypedDict needs NotRequired evaluated.

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from workbench.analyse import hdr
from workbench.driver.outcomes import ERROR_CLASSES
from workbench.driver.spec import DriveSpec, executor_type
from workbench.errors import WorkbenchError

RESULT_SCHEMA_VERSION = 1
SHARD_SCHEMA_VERSION = 1
RESULT_FILE, SHARD_FILE, SPEC_FILE, REQUESTS_FILE = (
    "result.json", "shard.json", "spec.json", "requests.parquet")

MAX_SCHEDULE_LAG_P99_MS = 2.0
MIN_ACHIEVED_RATIO = 0.95
MAX_CPU_FRACTION = 0.90

Percentiles = dict[str, float | None]  # {"p50": ms, ..., "max": ms}; None when nothing was sent
PerTag = dict[str, dict[str, Any]]  # {tag: {key: value}}


class Iterations(TypedDict):
    scheduled: int
    dropped: int


class Check(TypedDict):
    """One validity check: what it measured, its limit, and whether the run passed it."""

    check: str
    measured: float | int | str | None
    limit: float | int | str
    ok: bool


class Watchdog(TypedDict):
    """The real-time watchdog of a driver process (:mod:`workbench.driver.priority`)."""

    limit_ms: int  # real-time CPU without blocking that makes it drop its priority
    fired_at_s: float | None  # seconds from the start (negative: before it); None: never


class Scheduling(TypedDict):
    """What the driver process got from the OS (:func:`workbench.driver.priority.protect`)."""

    policy: str  # fifo | nice | normal
    priority: int  # real-time priority (fifo) or nice value
    cpus: list[int]  # the cores it may run on (one when pinned)
    notes: list[str]  # what was refused and why
    shared_with: NotRequired[int]  # pinned: other workbench drivers already on that core
    watchdog: NotRequired[Watchdog]  # under SCHED_FIFO


class ShardReport(TypedDict):
    """``shard.json``: what one shard (process or Dask worker) measured, for the merge."""

    shard: int
    shards: int
    status: str  # completed | interrupted | failed: <reason>
    scheduled: int
    planned: int | None  # requests the open-loop schedule planned for this shard
    completed: int
    failed: int
    dropped: int
    recorded: int  # rows written to requests.parquet
    iterations: Iterations
    counts: dict[str, dict[str, int]]  # {tag: {error class ("" = success): count}}
    histograms: dict[str, dict[str, str]]  # {tag: {status class: histoblob of response us}}
    timing_histograms: dict[str, str]  # response, service_time, schedule_lag histoblobs
    # {tag: {"<status> <content type>": count}}, at most 32 a tag, the rest under "other"
    response_kinds: dict[str, dict[str, int]]
    response_totals: dict[str, dict[str, float]]  # {tag: {field: sum}}
    t0_epoch_ns: int | None
    anchor: dict[str, int]  # epoch_ns and mono_ns read together
    active_s: float
    wall_s: float
    cpu_s: float
    cpu_fraction: float
    cpu_peak_fraction: float
    rss_start_bytes: int
    rss_peak_bytes: int
    vus: int
    timer: str
    engine: str
    loop: str | None
    pid: int
    connections: NotRequired[dict[str, Any]]  # opened, open_failed, handshake_hist, ...
    # the scripted executor's extras
    problems: NotRequired[dict[str, dict[str, int]]]
    script_timings: NotRequired[dict[str, dict[str, Any]]]
    setup_s: NotRequired[float]
    # added by the shard's process when it writes the file
    scheduling: NotRequired[Scheduling]
    schema_version: NotRequired[int]
    host: NotRequired[str]
    started_at: NotRequired[str | None]
    ended_at: NotRequired[str | None]


class TagSummary(TypedDict):
    count: int  # sent
    failed: int
    dropped: int
    latency_ms: Percentiles


class DriverFacts(TypedDict):
    engine: str
    loop: str | None
    timer: str
    shards: int
    max_vus: int
    vus: int
    cpu_fraction: float
    cpu_fraction_includes_spin: bool
    cpu_peak_fraction: float
    wall_s: float
    rss_peak_bytes: int
    bytes_per_request: float
    scheduling: Scheduling | None  # the least protected shard's; None in-process (Dask, tests)


class ShardSummary(TypedDict):
    shard: int
    status: str
    scheduled: int
    dropped: int
    cpu_fraction: float
    schedule_lag_p99_ms: float | None
    pid: int | None
    host: str | None
    scheduling: Scheduling | None


class ScriptSummary(TypedDict):
    factory: str
    params: dict[str, Any]
    setup_s: float
    timing_histograms: dict[str, str]


class DriveResult(TypedDict):
    """``result.json``: one run, all shards merged.

    A scripted run adds ``script`` and, for each timing a script reported (``vu.timing``), a
    key ``<name>_ms`` (e.g. ``sign_ms``): p50, p90, p99, max, count and mean in ms.
    """

    schema_version: int
    scenario: str
    executor: str
    protocol: str  # h1 | h2
    status: str  # completed | interrupted | failed: <reason>
    scheduled: int  # = completed + failed + dropped
    planned: int | None  # open loop: requests the schedule planned
    completed: int
    failed: int
    dropped: int
    iterations: Iterations
    offered_rate: float | None  # requests/s; None for a closed loop
    achieved_rate: float  # requests sent / active_s
    duration_s: float
    active_s: float  # seconds of the schedule that ran
    error_rate: float | None  # failed / sent
    errors: dict[str, int]  # error class -> count (dropped included)
    latency_ms: Percentiles  # response time from the intended start
    service_time_ms: Percentiles  # from the send
    schedule_lag_ms: Percentiles  # send - intended
    by_tag: dict[str, TagSummary]
    histograms: dict[str, dict[str, str]]  # {tag: {status class: histoblob}}
    timing_histograms: dict[str, str]
    hdr: dict[str, Any]  # the histograms' configuration
    response_kinds: dict[str, dict[str, int]]
    response_totals: dict[str, dict[str, float]]
    problems: dict[str, dict[str, int]]  # {tag: {RFC 7807 problem type or "other": count}}
    t0_epoch_ns: int | None
    t0_utc: str | None
    started_at: str | None
    ended_at: str | None
    driver: DriverFacts
    shards: list[ShardSummary]
    checks: list[Check]
    valid: bool  # every check passed
    invalid_reasons: list[str]  # the failed checks, in words
    script: NotRequired[ScriptSummary]
    # connections opened (per client: one per VU or agent) and TCP + TLS handshake times
    connections: NotRequired[dict[str, Any]]


def iso(epoch_ns: int | None) -> str | None:
    """UTC ISO 8601 with milliseconds, or None."""
    if epoch_ns is None:
        return None
    return datetime.fromtimestamp(epoch_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _read(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WorkbenchError(f"no {what} at {path}; run the drive first") from None
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path} is not a {what}: not a JSON object")
    return data


def _check_shape(data: dict, path: Path, what: str, version: int, required: frozenset) -> None:
    found = data.get("schema_version")
    if found != version:
        raise WorkbenchError(f"{path} has schema version {found!r}; this workbench reads "
                             f"{what} version {version}: drive the run again")
    missing = sorted(required - set(data))
    if missing:
        raise WorkbenchError(f"{path} lacks {', '.join(missing)}: not a complete {what}; "
                             "drive the run again")


def load_result(run_dir: Path) -> DriveResult:
    """The ``result.json`` of a run folder, checked for its schema version and its fields."""
    path = Path(run_dir) / RESULT_FILE
    data = _read(path, "driver result")
    _check_shape(data, path, "result.json", RESULT_SCHEMA_VERSION,
                 DriveResult.__required_keys__)
    return data  # type: ignore[return-value]  # checked above


def load_shard_report(path: Path) -> ShardReport:
    """A shard's ``shard.json``, checked for its schema version and its fields."""
    data = _read(path, "shard report")
    _check_shape(data, path, "shard.json", SHARD_SCHEMA_VERSION,
                 ShardReport.__required_keys__ | {"schema_version"})
    return data  # type: ignore[return-value]


def shard_document(report: ShardReport, started_at: str | None, ended_at: str | None
                   ) -> ShardReport:
    """What a shard writes to ``shard.json``: its report, versioned, with its wall times."""
    return report | {"schema_version": SHARD_SCHEMA_VERSION, "started_at": started_at,
                     "ended_at": ended_at}  # type: ignore[return-value]


def offered_rate(spec: DriveSpec) -> float | None:
    """Requests per second the schedule offers (mean over a ramp); None for closed loop."""
    return executor_type(spec).offered_rate(spec)


def _status(reports: list[ShardReport]) -> str:
    statuses = [r["status"] for r in reports]
    for s in statuses:
        if s.startswith("failed"):
            return s
    return "interrupted" if "interrupted" in statuses else statuses[0]


def _add_nested(parts) -> dict[str, dict]:
    """``{tag: {key: number}}`` dictionaries added key by key."""
    out: dict[str, dict] = {}
    for part in parts:
        for tag, per in part.items():
            mine = out.setdefault(tag, {})
            for key, n in per.items():
                mine[key] = mine.get(key, 0) + n
    return out


def validity_checks(spec: DriveSpec, status: str, dropped: int, lag_p99_ms: float | None,
                    achieved: float, offered: float | None, cpu: float, spin: bool,
                    watchdog_at_s: float | None = None) -> tuple[list[Check], list[str]]:
    """The run's validity checks, and the reason of each failed one (see the module doc)."""
    rows: list[tuple[Check, str]] = [(
        {"check": "dropped arrivals", "measured": dropped, "limit": 0, "ok": dropped == 0},
        f"{dropped} requests dropped: all {spec.max_vus} VUs were busy")]
    if spec.open_loop:  # a closed loop's intended start is when its VU was ready
        rows.append((
            {"check": "schedule-lag p99 (ms)", "measured": lag_p99_ms,
             "limit": MAX_SCHEDULE_LAG_P99_MS,
             "ok": lag_p99_ms is None or lag_p99_ms <= MAX_SCHEDULE_LAG_P99_MS},
            f"schedule-lag p99 {lag_p99_ms or 0:.2f} ms > {MAX_SCHEDULE_LAG_P99_MS} ms"))
        if offered and status == "completed":  # else the run status says what went wrong
            rows.append((
                {"check": "achieved / offered", "measured": round(achieved / offered, 4),
                 "limit": MIN_ACHIEVED_RATIO, "ok": achieved >= MIN_ACHIEVED_RATIO * offered},
                f"achieved {achieved:.1f} req/s < {MIN_ACHIEVED_RATIO:.0%} of offered "
                f"{offered:.1f} req/s"))
    rows.append((
        # a spinning timer's CPU is the timer's, not load: driver.cpu_fraction_includes_spin
        {"check": "driver CPU (share of a core)", "measured": cpu, "limit": MAX_CPU_FRACTION,
         "ok": spin or cpu < MAX_CPU_FRACTION},
        f"driver CPU {cpu:.0%} of a core: the driver, not the target, set the pace"))
    rows.append((
        {"check": "driver real-time watchdog (s into the run)", "measured": watchdog_at_s,
         "limit": "not fired", "ok": watchdog_at_s is None},
        f"the driver computed without blocking past its watchdog {watchdog_at_s} s into the "
        "run and lost its real-time priority: its timing, not the target's, was measured"))
    rows.append((
        {"check": "run status", "measured": status, "limit": "completed",
         "ok": status == "completed"},
        f"run {status} before its schedule ended"))
    return [c for c, _ in rows], [reason for c, reason in rows if not c["ok"]]


POLICY_RANK = {"fifo": 2, "nice": 1, "normal": 0}


def least_protected(states: list[Scheduling | None]) -> Scheduling | None:
    """The weakest scheduling any shard ran under (None when no shard recorded one)."""
    known = [s for s in states if s]
    return min(known, key=lambda s: POLICY_RANK.get(s["policy"], 0), default=None)


def watchdog_fired_at(reports: list[ShardReport]) -> float | None:
    """The earliest moment of the run (s from its start) a shard's watchdog fired, or None;
    before the start it only lowered the policy the run was measured under."""
    fired = [w["fired_at_s"] for r in reports
             if (w := (r.get("scheduling") or {}).get("watchdog"))
             and w["fired_at_s"] is not None and w["fired_at_s"] >= 0]
    return min(fired, default=None)


def merge_reports(spec: DriveSpec, reports: list[ShardReport], started_at: str | None = None,
                  ended_at: str | None = None) -> DriveResult:
    """The result of a run from its shards' reports (one report: a single-process run)."""
    status = _status(reports)
    total = {k: sum(r[k] for r in reports)
             for k in ("scheduled", "completed", "failed", "dropped")}
    if total["scheduled"] != total["completed"] + total["failed"] + total["dropped"]:
        raise AssertionError(f"driver bug: scheduled != completed + failed + dropped: {total}")
    tags = sorted({t.tag for t in spec.templates})

    histograms: dict[str, dict[str, str]] = {}
    per_tag_hist = {tag: hdr.new() for tag in tags}
    for tag in tags:
        for klass in hdr.STATUS_CLASSES:
            blobs = [r["histograms"].get(tag, {}).get(klass) for r in reports]
            blobs = [b for b in blobs if b]
            if blobs:
                merged = hdr.merge(blobs)
                histograms.setdefault(tag, {})[klass] = hdr.encode(merged)
                per_tag_hist[tag].add(merged)
    timing = {name: hdr.merge(r["timing_histograms"][name] for r in reports)
              for name in ("response", "service_time", "schedule_lag")}

    errors: dict[str, int] = {}
    by_tag: dict[str, TagSummary] = {}
    for tag in tags:
        counts: dict[str, int] = {}
        for r in reports:
            for cls, n in r["counts"].get(tag, {}).items():
                counts[cls] = counts.get(cls, 0) + n
        dropped = counts.get("dropped", 0)
        sent = sum(counts.values()) - dropped
        by_tag[tag] = {"count": sent, "failed": sent - counts.get("", 0), "dropped": dropped,
                       "latency_ms": hdr.percentiles_ms(per_tag_hist[tag])}
        for cls, n in counts.items():
            if cls:
                errors[cls] = errors.get(cls, 0) + n
    errors = {c: errors[c] for c in ERROR_CLASSES if errors.get(c)}

    active_s = max((r["active_s"] for r in reports), default=0.0)
    sent = total["completed"] + total["failed"]
    achieved = sent / active_s if active_s > 0 else 0.0
    offered = offered_rate(spec)
    lag_ms = hdr.percentiles_ms(timing["schedule_lag"], (50, 99))
    cpu = max(r["cpu_fraction"] for r in reports)
    spin = any(r["timer"] == "spin" for r in reports)
    checks, reasons = validity_checks(spec, status, total["dropped"], lag_ms["p99"], achieved,
                                      offered, cpu, spin, watchdog_fired_at(reports))
    planned = [r["planned"] for r in reports] if spec.open_loop else None
    t0 = min((r["t0_epoch_ns"] for r in reports if r["t0_epoch_ns"]), default=None)
    first = reports[0]
    result: DriveResult = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "scenario": spec.scenario,
        "executor": spec.executor,
        "protocol": spec.protocol,
        "status": status,
        "scheduled": total["scheduled"],
        "planned": sum(planned) if planned is not None else None,
        "completed": total["completed"],
        "failed": total["failed"],
        "dropped": total["dropped"],
        "iterations": {"scheduled": sum(r["iterations"]["scheduled"] for r in reports),
                       "dropped": sum(r["iterations"]["dropped"] for r in reports)},
        "offered_rate": offered,
        "achieved_rate": achieved,
        "duration_s": spec.run_s,
        "active_s": active_s,
        "error_rate": total["failed"] / sent if sent else None,
        "errors": errors,
        "latency_ms": hdr.percentiles_ms(timing["response"]),
        "service_time_ms": hdr.percentiles_ms(timing["service_time"], (50, 99)),
        "schedule_lag_ms": lag_ms,
        "by_tag": by_tag,
        "histograms": histograms,
        "timing_histograms": {k: hdr.encode(v) for k, v in timing.items()},
        "hdr": hdr.CONFIG,
        "response_kinds": _add_nested(r["response_kinds"] for r in reports),
        "response_totals": _add_nested(r["response_totals"] for r in reports),
        "problems": _add_nested(r.get("problems", {}) for r in reports),
        "t0_epoch_ns": t0,
        "t0_utc": iso(t0),
        "started_at": started_at,
        "ended_at": ended_at,
        "driver": {
            "engine": first["engine"], "loop": first["loop"], "timer": first["timer"],
            "shards": len(reports), "max_vus": spec.max_vus, "vus": spec.vus,
            "cpu_fraction": cpu,
            "cpu_fraction_includes_spin": spin,
            "cpu_peak_fraction": max(r["cpu_peak_fraction"] for r in reports),
            "wall_s": max(r["wall_s"] for r in reports),
            "rss_peak_bytes": max(r["rss_peak_bytes"] for r in reports),
            "bytes_per_request": max(
                (r["rss_peak_bytes"] - r["rss_start_bytes"]) / r["recorded"]
                if r["recorded"] else 0.0 for r in reports),
            "scheduling": least_protected([r.get("scheduling") for r in reports]),
        },
        "shards": [{
            "shard": r["shard"], "status": r["status"], "scheduled": r["scheduled"],
            "dropped": r["dropped"], "cpu_fraction": r["cpu_fraction"],
            "schedule_lag_p99_ms": hdr.percentiles_ms(
                hdr.decode(r["timing_histograms"]["schedule_lag"]), (99,))["p99"],
            "pid": r.get("pid"), "host": r.get("host"), "scheduling": r.get("scheduling"),
        } for r in reports],
        "checks": checks,
        "valid": not reasons,
        "invalid_reasons": reasons,
    }
    return result | _script_summary(spec, reports) | _connections(reports)  # type: ignore


def _connections(reports: list[ShardReport]) -> dict:
    """Connections opened by every shard, failures to open, handshake percentiles (ms)."""
    parts = [r["connections"] for r in reports if r.get("connections")]
    if not parts:
        return {}
    hist = hdr.merge(p["handshake_hist"] for p in parts)
    return {"connections": {
        "per_client": any(p["per_client"] for p in parts),
        "clients": sum(p["clients"] for p in parts),
        "opened": sum(p["opened"] for p in parts),
        "open_failed": sum(p["open_failed"] for p in parts),
        "handshake_ms": hdr.percentiles_ms(hist, (50, 90, 99)),
        "handshake_hist": hdr.encode(hist)}}


def _script_summary(spec: DriveSpec, reports: list[ShardReport]) -> dict:
    """A scripted run's extras: ``script`` (factory, setup time, timing histograms) and one
    ``<name>_ms`` summary per client-side timing (e.g. ``sign_ms``), merged over shards."""
    if not spec.script:
        return {}
    out: dict = {}
    histograms = {}
    for name in sorted({n for r in reports for n in r.get("script_timings", {})}):
        parts = [r["script_timings"][name] for r in reports if name in r.get("script_timings", {})]
        merged = hdr.merge(p["hist"] for p in parts)
        count = sum(p["count"] for p in parts)
        histograms[name] = hdr.encode(merged)
        mean = sum(p["sum_ns"] for p in parts) / count / 1e6 if count else None
        out[f"{name}_ms"] = hdr.percentiles_ms(merged, (50, 90, 99)) | {"count": count,
                                                                        "mean": mean}
    out["script"] = {"factory": spec.script, "params": spec.script_params,
                     "setup_s": max(r.get("setup_s", 0.0) for r in reports),
                     "timing_histograms": histograms}
    return out
