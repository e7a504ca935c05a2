"""What telemetry costs: CPU and wall time per sample, per source (issue #13).

    .venv/bin/python benchmarks/bench_telemetry.py [--quick]

The sampler process (``workbench.telemetry``, 1 sample a second) runs against a fresh embedded
target for 30 s (5 s with ``--quick``) while 50 idle client sessions sit in PostgreSQL (a
connection pool's worth for ``pg_stat_activity`` to list), twice: with 10,000 rows in certctl's
``jobs`` and with 100,000 (the ``certctl`` source counts them every second, so its cost grows
with the backlog). Printed per source: the sampler's own CPU ms per sample, the CPU ms its
queries cost PostgreSQL (its backend's ``schedstat``), and the wall ms, each per sample taken
(``certctl`` skips ticks when counting would take over 1% of the time); then the whole sampler
process's CPU per tick and as a share of one core.

The bar: client plus server CPU of all sources together at most 20 ms per sample, 2% of one
core at one sample a second, so the sampler stays out of the way of the target and the driver.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench import scenarios  # noqa: E402
from workbench.target import embedded  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402
from workbench.telemetry import TelemetrySampler  # noqa: E402
from workbench.telemetry.sources import libpq_conninfo  # noqa: E402

IDLE_SESSIONS = 50
JOB_COUNTS = (10_000, 100_000)
BAR_CPU_MS_PER_SAMPLE = 20.0


def _fill_jobs(dsn: str, jobs: int) -> None:
    """One Pending renewal job per bulk fixture certificate (what a bulk renew leaves)."""
    scenarios.get("bulk_renewal").seed_size(dsn, jobs)  # also removes the fixture's earlier jobs
    with psycopg.connect(libpq_conninfo(dsn), autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (id, type, certificate_id, status)"
                     " SELECT 'job-bench-' || id, 'Renewal', id,"
                     " (ARRAY['Pending', 'AwaitingCSR', 'Completed'])[1 + abs(hashtext(id)) % 3]"
                     " FROM managed_certificates WHERE id LIKE 'mc-loadtest-bulk-%'")
        conn.execute("VACUUM ANALYZE jobs")


def measure(info: embedded.TargetInfo, run_dir: Path, seconds: float) -> dict:
    sessions = [psycopg.connect(libpq_conninfo(info.dsn)) for _ in range(IDLE_SESSIONS)]
    try:
        sampler = TelemetrySampler(run_dir, dsn=info.dsn, target_url=info.url).start()
        time.sleep(seconds)
        return sampler.stop()
    finally:
        for conn in sessions:
            conn.close()


def bench(quick: bool = False) -> list[dict]:
    seconds = 5.0 if quick else 30.0
    rows = []
    with tempfile.TemporaryDirectory() as state:
        info = embedded.up(Path(state), port=free_port())
        try:
            for jobs in JOB_COUNTS:
                _fill_jobs(info.dsn, jobs)
                sidecar = measure(info, Path(state) / f"run-{jobs}", seconds)
                for name, log in sidecar["sources"].items():
                    cost = log.get("cost", {})
                    rows.append({"jobs": jobs, "source": name, "samples": log.get("samples", 0),
                                 "failed": log.get("failed", 0),
                                 "cpu_ms": cost.get("cpu_ms_mean", float("nan")),
                                 "server_cpu_ms": cost.get("server_cpu_ms_mean", 0.0),
                                 "server_per_tick_ms": cost.get("server_cpu_ms_total", 0.0)
                                 / max(sidecar["ticks"], 1),
                                 "skipped": log.get("skipped", 0),
                                 "wall_ms": cost.get("wall_ms_mean", float("nan")),
                                 "wall_ms_max": cost.get("wall_ms_max", float("nan"))})
                process = sidecar["process"]
                rows.append({"jobs": jobs, "source": "(sampler process)",
                             "samples": sidecar["ticks"], "failed": sidecar["late_ticks"],
                             "cpu_ms": 1e3 * process["cpu_s"] / max(sidecar["ticks"], 1),
                             "server_cpu_ms": float("nan"), "wall_ms": float("nan"),
                             "wall_ms_max": float("nan"),
                             "core_share": process["cpu_s"] / process["wall_s"]})
        finally:
            embedded.down(Path(state))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nTelemetry cost per sample (1 sample/s, {IDLE_SESSIONS} idle sessions; ms)."
          " '(sampler process)': all its CPU per tick, late ticks in the 'failed' column")
    print(f"{'jobs':>8} {'source':<18} {'samples':>7} {'skipped':>7} {'failed':>6}"
          f" {'client CPU':>10} {'server CPU':>10} {'wall':>7} {'wall max':>8}")
    for r in rows:
        share = f"  ({r['core_share']:.2%} of one core)" if "core_share" in r else ""
        print(f"{r['jobs']:>8,} {r['source']:<18} {r['samples']:>7} {r.get('skipped', 0):>7}"
              f" {r['failed']:>6} {r['cpu_ms']:>10.2f} {r['server_cpu_ms']:>10.2f}"
              f" {r['wall_ms']:>7.2f} {r['wall_ms_max']:>8.2f}{share}")


def bars(rows: list[dict]) -> list[tuple[str, float, float, str]]:
    out = []
    for jobs in sorted({r["jobs"] for r in rows}):
        mine = [r for r in rows if r["jobs"] == jobs]
        process = next(r for r in mine if r["source"] == "(sampler process)")
        server = sum(r["server_per_tick_ms"] for r in mine if r["source"] != "(sampler process)")
        out.append((f"telemetry CPU per sample, {jobs:,} jobs (ms)",
                    process["cpu_ms"] + server, BAR_CPU_MS_PER_SAMPLE, "<="))
        failed = sum(r["failed"] for r in mine if r["source"] != "(sampler process)")
        out.append((f"telemetry failed samples, {jobs:,} jobs", float(failed), 0.0, "<="))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 s per measurement: a smoke test")
    rows = bench(p.parse_args(argv).quick)
    print_table(rows)
    missed = [name for name, value, limit, _ in bars(rows) if not value <= limit]
    for name in missed:
        print(f"MISSED: {name}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
