"""Benchmarks with targets, side by side in one run (absolute times on a shared box are noisy).

    .venv/bin/python benchmarks/run.py        (or: make benchmarks)

1. Seeding: 5,000 agents through SQLAlchemy into a fresh embedded PostgreSQL, first load and
   re-seed; target under 2 s each.
2. Driver schedule accuracy: open loop against a loopback server answering after a fixed 10 ms;
   schedule-lag p99 and the error of the measured p50/p99 against the injected delay.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loopback import LoopbackServer, free_port  # noqa: E402
from workbench import seed, target  # noqa: E402
from workbench.driver import DriveSpec, RequestTemplate, drive  # noqa: E402

SEED_TARGET_S = 2.0
LAG_TARGET_MS = 1.0


def bench_seeding(repeats: int = 3) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as state:
        info = target.up(Path(state), port=free_port())
        try:
            first = seed.seed_agent_fleet(info.dsn, 5000)["seconds"]
            again = [seed.seed_agent_fleet(info.dsn, 5000)["seconds"] for _ in range(repeats)]
        finally:
            target.down(Path(state))
    return [("seed 5,000 agents, first load (s)", first, SEED_TARGET_S),
            ("seed 5,000 agents, re-seed median (s)", statistics.median(again), SEED_TARGET_S)]


def bench_driver(rate: float, duration: float = 5.0) -> list[tuple[str, float, float]]:
    with LoopbackServer() as srv, tempfile.TemporaryDirectory() as out:
        spec = DriveSpec(base_url=srv.url, templates=(RequestTemplate("GET", "/delay?ms=10", "d"),),
                         rate=rate, duration_s=duration)
        r = drive(spec, Path(out), echo=lambda _: None)
    return [
        (f"{rate:g} req/s: schedule-lag p99 (ms)", r["schedule_lag_ms"]["p99"], LAG_TARGET_MS),
        (f"{rate:g} req/s: |p50 - 10 ms| (ms)", abs(r["latency_ms"]["p50"] - 10), 1.0),
        (f"{rate:g} req/s: |p99 - 10 ms| (ms)", abs(r["latency_ms"]["p99"] - 10), 1.0),
        (f"{rate:g} req/s: dropped", r["dropped"], 0),
    ]


def main() -> int:
    rows = bench_seeding() + bench_driver(167) + bench_driver(1000)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'benchmark':<{width}}  {'measured':>10}  {'target':>8}  verdict")
    failed = 0
    for name, value, limit in rows:
        ok = value <= limit
        failed += not ok
        print(f"{name:<{width}}  {value:>10.3f}  {limit:>8g}  {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
