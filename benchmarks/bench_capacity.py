"""The capacity search's accuracy and repeatability against servers of known capacity.

    .venv/bin/python benchmarks/bench_capacity.py [--quick] [--searches 3]
    .venv/bin/python benchmarks/run.py --only capacity-search

Each server is ``benchmarks/servers.py --slots K --delay fixed:H`` (K requests held at once for
H ms each, the rest queued: at most K / H req/s), at real-time priority on its own core
(``SERVER_CPU``); the driver protects itself and pins to the other.

**The truth**, measured before the searches, beside the nominal K / H: a closed loop of 4 K
virtual users (the workbench driver, ``constant-vus``, nothing between a response and the next
request) keeps every slot busy; the server's own response counter over a 10 s window after a
3 s warm-up, per second, is what it serves at saturation, hold overheads and its loop's own
cost included. The counter is the server's, so the client's timing does not enter it; the
client only has to keep more than K requests waiting, which 4 K virtual users do.

**The searches**: ``workbench drive URL --find-capacity --threshold 'p(99)<H+100'
--repeat-search N`` (default 3), as a user would run it: each search ramps from a third of the
truth (so no ramp step lands on it), bisects to 5 %, and repeats both ends of its bracket.
The table prints every search's answer against the measured truth, their median and spread.
The bar (issue #20): every answer within 10 % of the measured truth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver  # noqa: E402
from benchmarks.bars import Bar, fmt, print_bars  # noqa: E402
from workbench.driver import DriveSpec, RequestTemplate  # noqa: E402

SERVERS = ((4, 20.0), (40, 20.0))  # (slots, hold ms): 200 and 2,000 req/s nominal
QUICK_SERVERS = ((4, 20.0),)
TOLERANCE = 0.10
WARMUP_S, WINDOW_S = 3.0, 10.0


def saturation(server: bench_driver.BenchServer, slots: int, out: Path,
               warmup_s: float = WARMUP_S, window_s: float = WINDOW_S) -> float:
    """Responses/s the server gives a closed loop of 4 x ``slots`` users (its counter)."""
    vus = 4 * slots
    spec = DriveSpec(server.url, (RequestTemplate("GET", "/", "get"),),
                     executor="constant-vus", vus=vus, max_vus=vus,
                     duration_s=warmup_s + window_s + 2.0)
    out.mkdir(parents=True)
    argv = bench_driver._driver_argv(spec, out, realtime=True)
    return bench_driver.measure_closed_loop(argv, server, warmup_s, window_s)["rps"]


def search(slots: int, hold_ms: float, step_s: float, searches: int, tmp: Path) -> dict:
    """The measured truth of one slot server, then ``searches`` whole searches of it."""
    with bench_driver.BenchServer(tmp, delay=f"fixed:{hold_ms:g}", realtime=True,
                                  slots=slots) as server:
        truth = saturation(server, slots, tmp / f"saturation-{slots}x{hold_ms:g}")
        out = tmp / f"search-{slots}x{hold_ms:g}"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"{server.url}/",
             "--find-capacity", "--threshold", f"p(99)<{hold_ms + 100:g}",
             "--start", f"{truth / 3:.4g}", "--ceiling", f"{truth * 8:.4g}",
             "--step-duration", f"{step_s:g}", "--tolerance", "0.05",
             "--repeat-search", str(searches), "--shards", "1", "--vus", str(20 * slots),
             "--out", str(out)], capture_output=True, text=True)
        wall = time.monotonic() - started
    if not (out / "capacity.json").exists():
        raise SystemExit(f"the search failed: {done.stderr[-2000:]}")
    doc = json.loads((out / "capacity.json").read_text())
    found = doc["searches"] or [doc]  # one search: the document is its only summary
    # a bound (driver bound, not reached) is no answer: its error is NaN, and misses the bar
    answers = [s["max_sustainable"] if s["verdict"] == "knee" else None for s in found]
    return {"slots": slots, "hold_ms": hold_ms, "nominal": slots / (hold_ms / 1000.0),
            "truth": truth, "answers": answers, "verdicts": [s["verdict"] for s in found],
            "median": doc["max_sustainable"] if doc["verdict"] == "knee" else None,
            "spread": (doc["answers"] or {}).get("spread"), "steps": len(doc["steps"]),
            "wall_s": wall, "sentence": doc["sentence"], "spread_line": doc.get("spread")}


def bench(quick: bool = False, searches: int = 3) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        return [search(k, h, 2.0 if quick else 5.0, searches, Path(tmp))
                for k, h in (QUICK_SERVERS if quick else SERVERS)]


def _error(answer: float | None, truth: float) -> float:
    return answer / truth - 1 if answer else float("nan")


def print_table(rows: list[dict]) -> None:
    print("\ncapacity search against known-capacity servers (K slots x H ms hold); truth: the "
          "server's own count of responses/s under a closed loop of 4 K users")
    print(f"{'server':>12}  {'K/H req/s':>10}  {'truth':>10}  {'search':>6}  {'answer':>10}"
          f"  {'error':>7}  verdict")
    for r in rows:
        for i, (answer, verdict) in enumerate(zip(r["answers"], r["verdicts"], strict=True)):
            label = f"{r['slots']} x {r['hold_ms']:g} ms" if i == 0 else ""
            print(f"{label:>12}  {fmt(r['nominal'])}  {fmt(r['truth'])}  {i + 1:>6}  "
                  f"{fmt(answer)}  {_error(answer, r['truth']):>+7.1%}  {verdict}")
        spread = "-" if r["spread"] is None else f"{r['spread']:.1%}"
        print(f"{'':>12}  {'':>10}  {'':>10}  {'median':>6}  {fmt(r['median'])}  "
              f"{_error(r['median'], r['truth']):>+7.1%}  spread {spread}, {r['steps']} "
              f"steps, {r['wall_s']:.0f} s")
    for r in rows:
        print(f"  {r['slots']} x {r['hold_ms']:g} ms: {r['sentence']}")
        if r["spread_line"]:
            print(f"    {r['spread_line']}")


def bars(rows: list[dict]) -> list[Bar]:
    return [(f"capacity search {i + 1} error, {r['slots']} x {r['hold_ms']:g} ms "
             "(|answer/truth - 1|)", abs(_error(answer, r["truth"])), TOLERANCE, "<=")
            for r in rows for i, answer in enumerate(r["answers"])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one server, 2 s steps: a smoke test")
    p.add_argument("--searches", type=int, default=3, help="whole searches per server")
    args = p.parse_args()
    rows = bench(args.quick, args.searches)
    print_table(rows)
    return 1 if print_bars(bars(rows)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
