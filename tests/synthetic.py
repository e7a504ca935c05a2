"""Synthetic runs for analysis, record and comparison tests: known latencies, real code paths.

A synthetic run is the frame the driver's ``requests.parquet`` would give, turned into a
record by the same :func:`workbench.report.record.build` that ``Run.record`` calls; only the
provenance facts (machine, target, database, calibration) are given here instead of
measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.analyse import analysis, hdr, stats
from workbench.compare.runs import WindowSet
from workbench.driver import DriveSpec, RequestTemplate
from workbench.driver.result import validity_checks
from workbench.report import calibration, record

T0 = 1_780_000_000 * 10**9  # 2026-05-28, in epoch ns


def requests_frame(latency_ms: np.ndarray, rate: float, tags: tuple[str, ...] = ("heartbeat",),
                   start_ns: int = T0) -> pd.DataFrame:
    """An open-loop run at ``rate``: arrival i at i / rate, answered after latency_ms[i]."""
    n = len(latency_ms)
    intended = start_ns + np.round(np.arange(n) * 1e9 / rate).astype(np.int64)
    end = intended + np.round(np.asarray(latency_ms) * 1e6).astype(np.int64)
    return analysis.with_derived(pd.DataFrame({
        "intended_ns": intended, "send_ns": intended + 20_000, "end_ns": end,
        "status": np.full(n, 200, np.int16), "bytes": np.full(n, 64, np.int32),
        "error": [""] * n, "tag": [tags[i % len(tags)] for i in range(n)]}))


def latencies(seed: int, scale: float, n: int) -> np.ndarray:
    """The latencies (ms) of a synthetic run: log-normal, median 2 ms x ``scale``."""
    return np.random.default_rng(seed).lognormal(np.log(2.0 * scale), 0.4, n)


def run_windows(seed: int = 0, scale: float = 1.0, duration_s: float = 30.0, rate: float = 100.0,
                window_sd: float = 0.0) -> WindowSet:
    """The per-window histograms :func:`make_record` records for the same run, without the rest.

    ``window_sd`` multiplies each window's latencies by its own log-normal factor (a level
    that drifts from window to window, as on a real, shared target); 0 keeps them i.i.d.
    """
    n = round(duration_s * rate)
    values = latencies(seed, scale, n)
    window = np.floor(np.arange(n) / rate / analysis.window_seconds(duration_s)).astype(np.int64)
    if window_sd:
        levels = np.random.default_rng([seed, 1]).lognormal(0.0, window_sd, window.max() + 1)
        values = values * levels[window]
    latency_us = np.round(values * 1e6).astype(np.int64) // 1000  # as the record rounds them
    histograms = []
    for w in np.unique(window):
        hist = hdr.new()
        hdr.record_array(hist, latency_us[window == w])
        histograms.append(stats.bucket_counts(hist))
    return WindowSet(histograms, np.zeros(len(histograms), np.int64))


def run_levels(seed: int, count: int, run_sd: float) -> np.ndarray:
    """Each run's own level: a log-normal factor of median 1 (the run-to-run random effect of
    a machine and target that drift between runs, as measured in turn 3: per-run p50 2.73 to
    3.69 ms within twelve minutes, a log-scale spread of about 0.13)."""
    return np.random.default_rng([seed, 2]).lognormal(0.0, run_sd, count)


def repeated_runs(seeds: range | list[int], scale: float = 1.0, run_sd: float = 0.15,
                  **kw) -> WindowSet:
    """Several synthetic runs as one side of a comparison: :func:`run_windows` of each seed,
    its latencies multiplied by its own level (:func:`run_levels`), tagged run 0, 1, ..."""
    seeds = list(seeds)
    levels = run_levels(seeds[0], len(seeds), run_sd)
    return combine([run_windows(seed=s, scale=scale * level, **kw)
                    for s, level in zip(seeds, levels, strict=True)])


def combine(runs: list[WindowSet]) -> WindowSet:
    """Single-run window sets as one side of several runs (run i for the i-th)."""
    return WindowSet([w for r in runs for w in r.windows],
                             np.concatenate([np.full(len(r.windows), i, np.int64)
                                             for i, r in enumerate(runs)]))


def calibration_section(speed: float = 1.0) -> dict:
    """A record's calibration from two readings of a machine ``speed`` times as slow as one
    with a 2.5 ms CPU figure and a 0.06 ms loopback round trip."""
    reading = {
        "taken_at": "2026-11-26T12:00:00+00:00", "seconds": 0.8,
        "scheduling": {"policy": "fifo", "priority": 10, "cpus": [1], "notes": []},
        "cpu": {"fastest_ms": 2.5 * speed, "median_ms": 2.6 * speed,
                "repeats_ms": [2.5 * speed, 2.6 * speed, 2.7 * speed], "work": "synthetic"},
        "loopback": {"rate": 400.0, "requests": 200, "errors": 0, "p50_ms": 0.07 * speed,
                     "p90_ms": 0.09 * speed, "p99_ms": 0.15 * speed,
                     "burst_p50_ms": [0.06 * speed, 0.07 * speed], "burst": 50,
                     "engine": "workbench-http1"},
        "postgres": {"commits": 60, "p50_ms": 1.2, "p99_ms": 4.0, "table": "x.commit_probe"},
    }
    return calibration.section(reading, reading)


def make_record(run_id: str = "20261126T120000Z_agent_storm_1a2b3c4d", *, scale: float = 1.0,
                seed: int = 0, n: int = 3000, rate: float = 100.0,
                tags: tuple[str, ...] = ("heartbeat",), machine: str = "x86_64-2c-24g-abcd1234",
                fingerprint: str = "abcd1234abcd1234", params: dict | None = None,
                fleet_size: int = 500, started_at: str = "2026-11-26T12:00:00.123+00:00",
                commit: str = "0123456789abcdef0123", commit_date: str | None = None,
                valid: bool = True, passed: bool = True, speed: float | None = 1.0) -> dict:
    """A complete record of a synthetic run: log-normal latencies (median 2 ms x ``scale``),
    on a machine that calibrated ``speed`` times as slow as the reference (None: no
    calibration)."""
    df = requests_frame(latencies(seed, scale, n), rate, tags)
    duration = n / rate
    params = params or {"rate": rate, "duration_s": duration, "fleet_size": fleet_size}
    spec = DriveSpec("https://127.0.0.1:8443", tuple(RequestTemplate("GET", f"/{t}", t)
                                                     for t in tags), rate=rate,
                     duration_s=n / rate)
    checks, reasons = validity_checks(spec, "completed", 0 if valid else 3, 0.05, rate, rate,
                                      0.1, False)  # the driver's own judgement
    reported = {"status": "completed", "protocol": "h1", "valid": valid, "invalid_reasons": reasons,
                "checks": checks, "histograms": None,
                "schedule_lag_ms": {"p50": 0.02, "p99": 0.05},
                "driver": {"cpu_fraction": 0.1, "engine": "workbench-http1"}}
    result = analysis.analyse(df, "agent_storm", rate, duration, reported=reported)
    verdicts = analysis.evaluate_thresholds(
        df, {"http_req_duration": ["p(95)<500" if passed else "p(95)<0.001"]})
    context = {
        "run_id": run_id, "scenario": "agent_storm", "profile": "smoke", "parameters": params,
        "target": {"url": "https://127.0.0.1:8443", "kind": "stand-in", "version": "standin-0.1",
                   "commit": commit, "modified": False, "commit_date": commit_date,
                   "dsn": "postgresql+psycopg://postgres@/certctl"},
        "workbench": {"git_sha": "f" * 40, "clean": True},
        "run": {"started_at": started_at, "ended_at": started_at, "status": "completed"},
        "machine": {"name": machine, "fingerprint": fingerprint, "cpu_model": "test CPU",
                    "cores": 2, "memory_gib": 24, "arch": "x86_64", "kernel": "6.1",
                    "virtualisation": "kvm"},
        "software": {"python": "3.11.9", "packages": {"numpy": "2"}},
        "database": {"server_version": "16.4", "settings": {
            "shared_buffers": "128MB", "max_connections": "100", "synchronous_commit": "on"}},
        "fixtures": {"sizes": {"agents": fleet_size}, "seeded": {"agents": fleet_size}},
        "load": {"offered_rate": rate, "achieved_rate": rate, "duration_s": duration,
                 "scheduled": n, "completed": n, "failed": 0, "dropped": 0, "error_rate": 0.0},
        "calibration": None if speed is None else calibration_section(speed),
    }
    return record.build(context, result, df, verdicts, reported=reported)
