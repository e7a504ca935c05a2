"""Calibration's own spread: can two records of one machine, minutes apart, be compared?

Takes ``records`` calibrations as a run takes them (a reading, a pause standing for the timed
phase, a reading: :func:`workbench.report.calibration.section`), spaced apart, alternately on a
quiet machine and with a busy loop on every core at normal priority (a neighbour). Prints, per
figure, its spread over the records (each against their median) and, over every pair of
records, the share that :func:`workbench.report.calibration.judge` finds comparable at the default
10 % tolerance, quiet with quiet, busy with busy and quiet with busy; and what a record's two
readings cost.

    .venv/bin/python benchmarks/bench_calibration.py [--records 12] [--gap 5] [--spacing 10]
                                                     [--dsn postgresql+psycopg://...]
    .venv/bin/python benchmarks/run.py --only calibration
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bars import Bar, print_bars  # noqa: E402
from workbench.report import calibration  # noqa: E402

SHOWN = ("cpu_ms", "loopback_ms", "cpu_median_ms", "loopback_p50_ms", "loopback_p99_ms",
         "commit_p50_ms", "commit_p99_ms")
SAME_MACHINE_SHARE = 0.95  # of quiet record pairs judged comparable
COST_S = 3.0  # a record's two readings together


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def record(gap_s: float, dsn: str | None, busy: bool) -> dict:
    """One record's calibration: a reading, ``gap_s`` of nothing, a reading."""
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(multiprocessing.cpu_count() if busy else 0)]
    for p in spinners:
        p.start()
    try:
        before = calibration.measure(dsn)
        time.sleep(gap_s)
        after = calibration.measure(dsn)
    finally:
        stop.set()
        for p in spinners:
            p.join()
    return {"run_id": f"{'busy' if busy else 'quiet'}-{time.time():.0f}",
            "calibration": calibration.section(before, after), "busy": busy}


def bench(records: int = 12, gap_s: float = 5.0, spacing_s: float = 10.0,
          dsn: str | None = None, neighbour: bool = True) -> list[dict]:
    out = []
    for i in range(records):
        out.append(record(gap_s, dsn, busy=neighbour and i % 2 == 1))
        print(f"  record {i + 1}/{records} ({'busy' if out[-1]['busy'] else 'quiet'}): "
              f"{calibration.describe(out[-1:])}", flush=True)
        if i + 1 < records:
            time.sleep(spacing_s)
    return out


def comparable_share(a: list[dict], b: list[dict] | None = None) -> tuple[float, float]:
    """Share of record pairs judged comparable, and the worst compared ratio among them."""
    pairs = (itertools.combinations(a, 2) if b is None else itertools.product(a, b))
    judged, worst = [], 1.0
    for x, y in pairs:
        ratios, reason = calibration.judge([x], [y])
        judged.append(reason is None)
        worst = max([worst, *(max(r, 1 / r) for r in ratios.values())])
    return (float(np.mean(judged)) if judged else float("nan")), worst


def print_table(rows: list[dict]) -> None:
    print("\nCalibration spread: each record = reading, pause, reading; figures in ms")
    print(f"{'figure':<18} {'mode':<6} {'median':>9} {'min/med':>8} {'max/med':>8} "
          f"{'sd(log)':>8}")
    for key in SHOWN:
        for busy in (False, True):
            values = [calibration.figures(r).get(key) for r in rows if r["busy"] == busy]
            values = np.array([v for v in values if v is not None])
            if not values.size:
                continue
            med = float(np.median(values))
            print(f"{key:<18} {'busy' if busy else 'quiet':<6} {med:>9.4f} "
                  f"{values.min() / med:>8.3f} {values.max() / med:>8.3f} "
                  f"{np.log(values).std():>8.3f}")
    quiet = [r for r in rows if not r["busy"]]
    busy = [r for r in rows if r["busy"]]
    print(f"\ncompared ({', '.join(calibration.COMPARED)}), tolerance "
          f"{calibration.TOLERANCE:.0%}: pairs judged comparable, worst ratio")
    for name, share in (("quiet with quiet", comparable_share(quiet)),
                        ("busy with busy", comparable_share(busy)),
                        ("quiet with busy", comparable_share(quiet, busy))):
        print(f"  {name:<18} {share[0]:>6.0%}   worst {share[1]:.3f}")
    costs = [calibration.cost_s(r["calibration"]) for r in rows]
    print(f"cost of a record's two readings: median {statistics.median(costs):.2f} s, "
          f"max {max(costs):.2f} s")


def bars(rows: list[dict]) -> list[Bar]:
    quiet = [r for r in rows if not r["busy"]]
    costs = [calibration.cost_s(r["calibration"]) for r in rows]
    return [("calibration: quiet record pairs judged comparable (share)",
             comparable_share(quiet)[0], SAME_MACHINE_SHARE, ">="),
            ("calibration: a record's two readings, median (s)", statistics.median(costs),
             COST_S, "<=")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=12)
    p.add_argument("--gap", type=float, default=5.0, help="seconds between a record's readings")
    p.add_argument("--spacing", type=float, default=10.0, help="seconds between records")
    p.add_argument("--dsn", help="a database for the commit figures (none: not measured)")
    p.add_argument("--no-neighbour", action="store_true",
                   help="never start the busy loops (a machine busy enough already)")
    args = p.parse_args(argv)
    rows = bench(args.records, args.gap, args.spacing, args.dsn, not args.no_neighbour)
    print_table(rows)
    return 1 if print_bars(bars(rows)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
