"""Benchmarks with targets, side by side in one run (absolute times on a shared box are noisy).

    .venv/bin/python benchmarks/run.py [--only capacity,accuracy,stall,memory,seeding,analysis,
                                               acme_orders,http2,fixtures,telemetry,
                                               priority,capacity-search,overload,fleet,
                                               calibration,connectors,overhead]
                                       [--quick]        (or: make benchmarks)

Sections (details in each module's docstring):

- capacity, accuracy, stall: the driver's bars (``bench_driver.py``); external tools are found
  or installed by ``tools.py``, or their column says why not;
- memory: bytes per request of ``workbench drive`` at 5,000 req/s, 4 s against 24 s, for the
  driver and the whole command (``bench_memory.py``, which also compares two checkouts and
  runs a 10-minute soak: ``--python``, ``--long``);
- seeding: 5,000 agents through SQLAlchemy into a fresh embedded PostgreSQL, first load and
  re-seed; target under 2 s each;
- analysis: a 1,000,000-request run analysed (``bench_analysis.py``);
- acme_orders: signed ACME orders per driver core and the signing cost per request, ES256
  against RS256 and EdDSA (``bench_acme_orders.py``);
- http2: HTTP/2 capacity per driver core beside vegeta's, on nginx, and the codec choice
  (``bench_http2.py``);
- fixtures: 1,000,000 bulk certificates and 1,000,000 agents: first load, re-seed, re-seed
  down to 10,000, each under 60 s (``bench_seeding.py``);
- telemetry: the sampler's CPU per sample per source (``bench_telemetry.py``);
- priority: ``workbench drive`` at 1,000 req/s against a 5 ms server while a busy loop holds
  every core, with the driver's own protection off and on, interleaved (``bench_driver.py``);
- capacity-search: ``drive --find-capacity --repeat-search 3`` against slot servers of known
  capacity K / H, each answer's error beside the truth measured at saturation
  (``bench_capacity.py``);
- overload: an open loop at 60,000 arrivals/s on 400 VUs against nginx, one driver process:
  what dropping costs, against a closed loop of the same VUs (``bench_overload.py``);
- fleet: agents one driver core holds at certctl's real intervals (a connection each, h2),
  against a constant-arrival-rate control, and memory per connection (``bench_fleet.py``);
- calibration: the machine calibration's own spread over records minutes apart, quiet and
  beside a busy loop on every core, how many same-machine pairs compare, and its cost
  (``bench_calibration.py``).
- connectors: each connector target installed, a new TLS connection per request: the
  workbench beside vegeta (keep-alive off) at one rate, and ``openssl s_time``'s handshakes/s
  (``bench_connectors.py``).
- overhead: what a short ``workbench drive``, ``workbench run`` and ``run all`` cost outside
  their timed phase, part by part; aims 2 s a drive, 5 s a scenario (``bench_overhead.py``,
  which also times another tree: ``--tree DIR``).

Prints one table per section and a verdict per bar; exits 1 when a bar is missed.
``--quick`` shortens every window (a smoke test of the benchmarks themselves, not a measure).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver  # noqa: E402
from benchmarks.bars import Bar, print_bars  # noqa: E402
from workbench import scenarios  # noqa: E402
from workbench.target import embedded  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402

SEED_TARGET_S = 2.0
SECTIONS = ("capacity", "accuracy", "stall", "memory", "seeding", "analysis", "acme_orders",
            "http2", "fixtures", "telemetry", "priority", "capacity-search", "overload",
            "fleet", "calibration", "connectors", "overhead")


def bench_seeding(repeats: int = 3) -> list[Bar]:
    with tempfile.TemporaryDirectory() as state:
        info = embedded.up(Path(state), port=free_port())
        try:
            storm = scenarios.get("agent_storm")
            fleet = storm.params_for("smoke", {"fleet_size": 5000})
            first = storm.seed(info.dsn, fleet)["seconds"]
            again = [storm.seed(info.dsn, fleet)["seconds"] for _ in range(repeats)]
        finally:
            embedded.down(Path(state))
    return [("seed 5,000 agents, first load (s)", first, SEED_TARGET_S, "<="),
            ("seed 5,000 agents, re-seed median (s)", statistics.median(again), SEED_TARGET_S,
             "<=")]


def bench_analysis_rows(quick: bool) -> list[Bar]:
    from benchmarks import bench_analysis

    rows = bench_analysis.bench(n=100_000 if quick else bench_analysis.REQUESTS,
                                repeats=1 if quick else 3)
    return [(name, value, limit, "<=") for name, value, limit in rows]


def print_capacity(rows: list[dict]) -> None:
    print(f"\nCapacity: closed loop, {bench_driver.CONNECTIONS} connections, tiny responses; "
          f"client on CPU {bench_driver.DRIVER_CPU}, server on CPU {bench_driver.SERVER_CPU}")
    print(f"{'client':<28} {'req/s':>10} {'cores':>6} {'req/s/core':>11} {'ours/it':>8}"
          f" {'server':>7}  version / note")
    for r in rows:
        if "skipped" in r:
            print(f"{r['client']:<28} {'skipped':>10}  {r['skipped']}")
            continue
        print(f"{r['client']:<28} {r['rps']:>10,.0f} {r['cores']:>6.2f} {r['per_core']:>11,.0f}"
              f" {r['ours_over_it']:>8.2f} {r['server_cores']:>7.2f}  {r['version'][:40]}")


def print_accuracy(rows: list[dict]) -> None:
    print("\nAccuracy: open loop vs exact injected delay; truth = the server's measured holds"
          " (nominal in brackets); ms.\nisolated = driver and server also under SCHED_FIFO;"
          " plain = as the shared machine gives it")
    print(f"{'mode':<8} {'rate':>6} {'delay':<27} {'p50':>7} {'truth':>16} {'p99':>7} {'truth':>16}"
          f" {'lag p50':>8} {'lag p99':>8} {'drops':>5} {'cpu':>5}")
    for r in rows:
        print(f"{r['mode']:<8} {r['rate']:>6,} {r['delay']:<27} {r['p50']:>7.3f}"
              f" {r['truth_p50']:>7.3f} [{r['nominal_p50']:>6.2f}] {r['p99']:>7.3f}"
              f" {r['truth_p99']:>7.3f} [{r['nominal_p99']:>6.2f}] {r['lag_p50']:>8.3f}"
              f" {r['lag_p99']:>8.3f} {r['dropped']:>5} {r['cpu']:>5.2f}")


def print_stall(r: dict) -> None:
    print("\nCoordinated omission: 1,000 req/s for 10 s, server silent for 2 s from 4 s in")
    print(f"  open loop p99 {r['p99']:.1f} ms, expected from the schedule {r['expected_p99']:.1f}"
          f" ms; {r['share_in_stall']:.1%} of {r['open_loop_requests']:,} arrivals fell in the"
          f" stall; schedule-lag p99 {r['lag_p99']:.3f} ms")
    print(f"  closed loop (2 VUs) through the same stall: p99 {r['closed_loop_p99']:.1f} ms over"
          f" {r['closed_loop_requests']:,} requests (the omission open loop corrects)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections ({', '.join(SECTIONS)})")
    p.add_argument("--quick", action="store_true", help="short windows: a smoke test only")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    q = args.quick
    bars: list[Bar] = []
    capacity = None
    if "capacity" in chosen:
        capacity = bench_driver.bench_capacity(*((1.0, 2.0) if q else ()))
        print_capacity(capacity)
        bars += bench_driver.capacity_bars(capacity)
    if "accuracy" in chosen:
        rows = bench_driver.bench_accuracy(duration_s=3.0 if q else 10.0)
        print_accuracy(rows)
        bars += bench_driver.accuracy_bars(rows)
    if "stall" in chosen:
        stall = bench_driver.bench_stall(**({"duration_s": 7.0, "stall_after_s": 2.0}
                                            if q else {}))
        print_stall(stall)
        bars += bench_driver.stall_bars(stall)
    if "memory" in chosen:
        from benchmarks import bench_memory

        memory = bench_memory.bench([sys.executable])
        bench_memory.print_table(memory)
        bars += bench_memory.bars(memory)
    if "seeding" in chosen:
        bars += bench_seeding(1 if q else 3)
    if "analysis" in chosen:
        bars += bench_analysis_rows(q)
    if "acme_orders" in chosen:
        from benchmarks import bench_acme_orders

        orders = bench_acme_orders.bench(q)
        bench_acme_orders.print_tables(orders)
        bars += bench_acme_orders.bars(orders)
    if "fleet" in chosen:
        from benchmarks import bench_fleet

        bench_fleet.print_fleet(bench_fleet.bench_fleet(
            *((bench_fleet.QUICK_SIZES, 20.0) if q else ())))
    if "http2" in chosen:
        from benchmarks import bench_http2

        codec = bench_http2.bench_codec(10_000 if q else 50_000)
        bench_http2.print_codec(codec)
        bars += bench_http2.codec_bars(codec)
        rows = bench_http2.bench_capacity(*((1.0, 2.0) if q else ()))
        bench_http2.print_capacity(rows)
        bars += bench_http2.capacity_bars(rows)
    if "fixtures" in chosen:
        from benchmarks import bench_seeding as production_fixtures  # bench_seeding: 5,000 agents

        fixtures = production_fixtures.bench(q)
        production_fixtures.print_table(fixtures, "a fresh embedded PostgreSQL")
        bars += production_fixtures.bars(fixtures)
    if "telemetry" in chosen:
        from benchmarks import bench_telemetry

        costs = bench_telemetry.bench(q)
        bench_telemetry.print_table(costs)
        bars += bench_telemetry.bars(costs)
    if "priority" in chosen:
        rows = bench_driver.bench_priority(duration_s=5.0 if q else 20.0, repeats=1 if q else 2)
        bench_driver.print_priority(rows)
        bars += bench_driver.priority_bars(rows)
    if "capacity-search" in chosen:
        from benchmarks import bench_capacity

        searches = bench_capacity.bench(q)
        bench_capacity.print_table(searches)
        bars += bench_capacity.bars(searches)
    if "overload" in chosen:
        from benchmarks import bench_overload

        overload = bench_overload.bench(quick=q)
        bench_overload.print_table(overload)
        bars += bench_overload.bars(overload)
    if "calibration" in chosen:
        from benchmarks import bench_calibration

        rows = bench_calibration.bench(*((4, 1.0, 1.0) if q else ()))
        bench_calibration.print_table(rows)
        bars += bench_calibration.bars(rows)
    if "connectors" in chosen:
        from benchmarks import bench_connectors

        bench_connectors.print_table(bench_connectors.bench(q))
    if "overhead" in chosen:
        from benchmarks import bench_overhead

        bars += bench_overhead.bench(q)
    return 1 if bars and print_bars(bars) else 0  # some sections print tables only


if __name__ == "__main__":
    raise SystemExit(main())
