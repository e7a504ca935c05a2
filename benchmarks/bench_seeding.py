"""Production-sized fixtures: 1,000,000 bulk certificates and 1,000,000 agents (issue #13).

    .venv/bin/python benchmarks/bench_seeding.py [--quick] [--only bulk,agents]
    flock /tmp/certctl.lock .venv/bin/python benchmarks/bench_seeding.py --dsn "$CERTCTL_DSN"

Each fixture goes through ``workbench.seed`` (the one seeding path) three times: a first load of
1,000,000 rows, a re-seed at the same size (every row reset), and a re-seed down to 10,000
(990,000 rows and their jobs deleted). Each step must finish in under 60 s. Without ``--dsn``
the steps run in a fresh embedded PostgreSQL; with it, in that database (certctl's, with its
own indexes and foreign keys), whose fixtures end at 10,000 certificates and at the agent
fleet it had before.

Beside the wall time (the bar) each step prints the PostgreSQL server's CPU seconds (all its
processes, when it runs on this host) and the load average: the machine is shared, and wall
minus CPU is time the server waited for a core or the disk. ``--quick`` uses 120,000 rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench import scenarios, seed  # noqa: E402
from workbench.target import embedded  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402
from workbench.telemetry.sources import libpq_conninfo  # noqa: E402

FULL_SIZE, QUICK_SIZE, SMALL_SIZE = 1_000_000, 120_000, 10_000
BAR_S = 60.0
FIXTURES = ("bulk", "agents")


def _postmaster(dsn: str) -> psutil.Process | None:
    """The PostgreSQL server's main process, when it runs on this host."""
    try:
        with psycopg.connect(libpq_conninfo(dsn)) as conn:
            backend = psutil.Process(conn.info.backend_pid)
            parent = backend.parent()
        return parent if parent is not None and parent.name().startswith("postgres") else None
    except (psycopg.Error, psutil.Error):
        return None


def _server_cpu_s(postmaster: psutil.Process | None) -> float:
    """CPU seconds of the server so far: its live processes plus the children it reaped.

    Waits (up to 10 s) until no child is a zombie: a backend that has exited but is not yet
    reaped is in neither sum, and its CPU would land in the next step's account.
    """
    if postmaster is None:
        return float("nan")
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        children = postmaster.children()
        if not any(_zombie(c) for c in children):
            break
        time.sleep(0.05)
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in children:
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue  # ended meanwhile: counted among the reaped
        total += t.user + t.system
    return total


def _zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(libpq_conninfo(dsn)) as conn:
        return conn.execute(sql).fetchone()[0]


def run_steps(dsn: str, fixture: str, size: int, first_label: str) -> list[dict]:
    """First load (or growth), re-seed, shrink to 10,000 of one fixture; one dict per step."""
    seed_fn = scenarios.get("bulk_renewal" if fixture == "bulk" else "agent_storm").seed_size
    postmaster = _postmaster(dsn)
    rows = []
    for label, n in ((f"{first_label} {size:,}", size), (f"re-seed at {size:,}", size),
                     (f"re-seed down to {SMALL_SIZE:,}", SMALL_SIZE)):
        cpu0 = _server_cpu_s(postmaster)
        report = seed_fn(dsn, n)
        cpu = _server_cpu_s(postmaster) - cpu0
        count = report["certificates" if fixture == "bulk" else "agents"]
        rows.append({"fixture": fixture, "step": label, "size": n, "rows": count,
                     "seconds": report["seconds"], "server_cpu_s": cpu,
                     "load1": os.getloadavg()[0]})
    return rows


def bench(quick: bool = False, dsn: str | None = None,
          fixtures: tuple[str, ...] = FIXTURES) -> list[dict]:
    """Every step of every fixture; into a fresh embedded target unless ``dsn`` is given."""
    size = QUICK_SIZE if quick else FULL_SIZE
    if dsn is not None:
        fleet_before = _count(dsn, "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'")
        rows = []
        try:
            for fixture in fixtures:
                rows += run_steps(dsn, fixture, size, "grow to")
        finally:
            if "agents" in fixtures and fleet_before:
                # the fleet other runs expect
                scenarios.get("agent_storm").seed_size(dsn, fleet_before)
        return rows
    with tempfile.TemporaryDirectory() as state:
        info = embedded.up(Path(state), port=free_port())
        try:
            return [row for fixture in fixtures
                    for row in run_steps(info.dsn, fixture, size, "first load")]
        finally:
            embedded.down(Path(state))


def print_table(rows: list[dict], where: str) -> None:
    print(f"\nSeeding at production size into {where} (wall s is the bar; server CPU s is"
          " PostgreSQL's work; load1 the machine's 1-min load average after the step)")
    print(f"{'fixture':<8} {'step':<26} {'rows':>10} {'wall s':>8} {'server CPU s':>13}"
          f" {'load1':>6}")
    for r in rows:
        print(f"{r['fixture']:<8} {r['step']:<26} {r['rows']:>10,} {r['seconds']:>8.1f}"
              f" {r['server_cpu_s']:>13.1f} {r['load1']:>6.2f}")


def bars(rows: list[dict]) -> list[tuple[str, float, float, str]]:
    out = []
    for r in rows:
        out.append((f"seed {r['fixture']}, {r['step']} (s)", r["seconds"], BAR_S, "<="))
        out.append((f"seed {r['fixture']} {r['step']}: rows left", float(r["rows"]),
                    float(r["size"]), "=="))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} rows: a smoke test")
    p.add_argument("--dsn", help="seed this database instead of a fresh embedded one")
    p.add_argument("--only", default=",".join(FIXTURES), help="bulk, agents or both")
    args = p.parse_args(argv)
    fixtures = tuple(f for f in args.only.split(",") if f)
    if set(fixtures) - set(FIXTURES):
        p.error(f"--only takes {', '.join(FIXTURES)}")
    rows = bench(args.quick, args.dsn, fixtures)
    print_table(rows, seed.redact_dsn(args.dsn) if args.dsn else "a fresh embedded PostgreSQL")
    missed = [name for name, value, limit, op in bars(rows)
              if not (value <= limit if op == "<=" else value == limit)]
    for name in missed:
        print(f"MISSED: {name}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
