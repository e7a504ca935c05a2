"""The capacity search's accuracy against servers of known capacity (issue #11).

    .venv/bin/python benchmarks/bench_capacity.py [--quick]

Each server is ``benchmarks/servers.py --slots K --delay fixed:H`` (K requests held at once for
H ms each, the rest queued: at most K / H req/s), under real-time priority on the last allowed
core; the driver protects itself and pins to the first (``workbench.driver.priority``). For
each, ``workbench drive URL --find-capacity --threshold 'p(99)<H+100'`` runs the whole search
as a user would, and the table sets its answer beside the truth two ways: the nominal K / H
and the served throughput measured at the saturated steps (responses per second while the
queue was never empty: what the server really did, hold overheads included). The bar: the
answer within 15 % of the nominal capacity. The ramp starts at a third of the capacity so that
no ramp step lands on it (starting at a quarter, doubling, would hit it exactly and flatter the
search); the answer then comes from the bisection.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bars import Bar, fmt, print_bars  # noqa: E402
from workbench.ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ((4, 20.0), (20, 50.0), (10, 10.0))  # (slots, hold ms): 200, 400, 1,000 req/s
TOLERANCE = 0.15


def search(slots: int, hold_ms: float, step_s: float, out: Path) -> dict:
    """One whole search against one slot server; capacity.json plus wall time."""
    cpu = sorted(os.sched_getaffinity(0))[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "servers.py"),
                               "--port", str(port), "--slots", str(slots), "--delay",
                               f"fixed:{hold_ms:g}", "--realtime", "--cpu", str(cpu)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        nominal = slots / (hold_ms / 1000.0)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"http://127.0.0.1:{port}/",
             "--find-capacity", "--threshold", f"p(99)<{hold_ms + 100:g}",
             "--start", f"{nominal / 3:.4g}", "--ceiling", f"{nominal * 8:g}",
             "--step-duration", f"{step_s:g}", "--tolerance", "0.05", "--shards", "1",
             "--vus", "1000", "--out", str(out)], capture_output=True, text=True)
        wall = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    if done.returncode != 0:
        raise SystemExit(f"the search failed: {done.stderr}")
    doc = json.loads((out / "capacity.json").read_text())
    served = [s["throughput"] for s in doc["steps"]
              if s["offered_rate"] >= 1.3 * nominal and s["throughput"]]
    return {"slots": slots, "hold_ms": hold_ms, "nominal": nominal,
            "served": max(served) if served else None, "found": doc["max_sustainable_rate"],
            "verdict": doc["verdict"], "steps": len(doc["steps"]), "wall_s": wall,
            "sentence": doc["sentence"]}


def bench(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        return [search(k, h, 2.0 if quick else 5.0, Path(tmp) / f"{k}x{h:g}")
                for k, h in SERVERS]


def print_table(rows: list[dict]) -> None:
    print("\ncapacity search against known-capacity servers (K slots x H ms hold)")
    print(f"{'server':>12}  {'K/H req/s':>10}  {'served':>10}  {'found':>10}  {'error':>7}"
          f"  {'steps':>5}  {'wall s':>7}  verdict")
    for r in rows:
        error = (r["found"] / r["nominal"] - 1) if r["found"] else float("nan")
        print(f"{r['slots']:>4} x {r['hold_ms']:>3g} ms  {fmt(r['nominal'])}  "
              f"{fmt(r['served'])}  {fmt(r['found'])}  {error:>+7.1%}  {r['steps']:>5}  "
              f"{r['wall_s']:>7.1f}  {r['verdict']}")
    for r in rows:
        print(f"  {r['slots']} x {r['hold_ms']:g} ms: {r['sentence']}")


def bars(rows: list[dict]) -> list[Bar]:
    return [(f"capacity search error, {r['slots']} x {r['hold_ms']:g} ms (|found/K/H - 1|)",
             abs(r["found"] / r["nominal"] - 1) if r["found"] else float("nan"), TOLERANCE,
             "<=") for r in rows]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 s steps: a smoke test only")
    rows = bench(p.parse_args().quick)
    print_table(rows)
    return 1 if print_bars(bars(rows)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
