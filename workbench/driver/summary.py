"""The run's result: shard reports merged (histograms added, never percentiles averaged).

Percentiles come from the merged HDR histograms (microsecond values, 3 significant digits: each
reported value is within 0.1 % of a recorded one). Exact per-request values stay in
``requests.parquet`` for the analysis.

Validity: the run measured the driver, not the target, when any of these holds (DESIGN.md):
an arrival was dropped; schedule-lag p99 above 2 ms; achieved below 95 % of offered; a driver
process busy 90 % of a core or more over the run (an honest signal: the timerfd timer does not
spin, see ``timer.py``); the run did not complete.
"""

from __future__ import annotations

from datetime import UTC, datetime

from workbench import hdr
from workbench.driver import schedule
from workbench.driver.outcomes import ERROR_CLASSES
from workbench.driver.spec import DriveSpec

MAX_SCHEDULE_LAG_P99_MS = 2.0
MIN_ACHIEVED_RATIO = 0.95
MAX_CPU_FRACTION = 0.90


def iso(epoch_ns: int | None) -> str | None:
    if epoch_ns is None:
        return None
    return datetime.fromtimestamp(epoch_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def offered_rate(spec: DriveSpec) -> float | None:
    """Requests per second the schedule offers (mean over a ramp); None for closed loop."""
    if not spec.open_loop:
        return None
    if spec.executor == "constant-arrival-rate":
        return spec.rate * spec.steps
    return schedule.planned_arrivals(spec) * spec.steps / spec.run_s


def _status(reports: list[dict]) -> str:
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


def summarize(spec: DriveSpec, reports: list[dict], started_at: str | None = None,
              ended_at: str | None = None) -> dict:
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
    by_tag = {}
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

    kinds = _add_nested(r["response_kinds"] for r in reports)
    totals = _add_nested(r["response_totals"] for r in reports)
    problems = _add_nested(r.get("problems", {}) for r in reports)
    script = _script_summary(spec, reports)

    active_s = max((r["active_s"] for r in reports), default=0.0)
    sent = total["completed"] + total["failed"]
    achieved = sent / active_s if active_s > 0 else 0.0
    offered = offered_rate(spec)
    lag_ms = hdr.percentiles_ms(timing["schedule_lag"], (50, 99))
    cpu = max(r["cpu_fraction"] for r in reports)
    spin = any(r["timer"] == "spin" for r in reports)
    reasons = []
    if total["dropped"]:
        reasons.append(f"{total['dropped']} requests dropped: all {spec.max_vus} VUs were busy")
    if spec.open_loop and lag_ms["p99"] is not None and lag_ms["p99"] > MAX_SCHEDULE_LAG_P99_MS:
        reasons.append(f"schedule-lag p99 {lag_ms['p99']:.2f} ms > {MAX_SCHEDULE_LAG_P99_MS} ms")
    if (offered and status == "completed" and achieved < MIN_ACHIEVED_RATIO * offered):
        reasons.append(f"achieved {achieved:.1f} req/s < {MIN_ACHIEVED_RATIO:.0%} of offered "
                       f"{offered:.1f} req/s")
    if not spin and cpu >= MAX_CPU_FRACTION:
        reasons.append(f"driver CPU {cpu:.0%} of a core: the driver, not the target, set the pace")
    if status != "completed":
        reasons.append(f"run {status} before its schedule ended")
    planned = ([r["planned"] for r in reports] if spec.open_loop else None)
    t0 = min((r["t0_epoch_ns"] for r in reports if r["t0_epoch_ns"]), default=None)
    first = reports[0]
    return {
        "scenario": spec.scenario,
        "executor": spec.executor,
        "protocol": spec.protocol,
        "status": status,
        "scheduled": total["scheduled"],
        "planned": sum(planned) if planned is not None else None,
        "completed": total["completed"],
        "failed": total["failed"],
        "dropped": total["dropped"],
        "iterations": {k: sum(r["iterations"][k] for r in reports)
                       for k in ("scheduled", "dropped")},
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
        "response_kinds": kinds,
        "response_totals": totals,
        "problems": problems,
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
        },
        "shards": [{
            "shard": r["shard"], "status": r["status"], "scheduled": r["scheduled"],
            "dropped": r["dropped"], "cpu_fraction": r["cpu_fraction"],
            "schedule_lag_p99_ms": hdr.percentiles_ms(
                hdr.decode(r["timing_histograms"]["schedule_lag"]), (99,))["p99"],
            "pid": r.get("pid"), "host": r.get("host"),
        } for r in reports],
        "valid": not reasons,
        "invalid_reasons": reasons,
    } | script


def _script_summary(spec: DriveSpec, reports: list[dict]) -> dict:
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
