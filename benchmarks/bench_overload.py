"""What an overloaded open loop costs the driver: dropping must cost next to nothing (#20).

    .venv/bin/python benchmarks/bench_overload.py [--quick] [--python OTHER/.venv/bin/python]
    .venv/bin/python benchmarks/run.py --only overload

Against Debian's nginx (HTTP/1.1, one worker, answering ``ok``, started as a user starts it:
not pinned, normal priority):

1. **closed loop**, 400 virtual users (``constant-vus``), one driver process pinned to
   ``DRIVER_CPU``: the most one driver process serves nginx;
2. **overloaded open loop**, ``drive --rate 60000 --vus 400 --shards 1``: far more arrivals
   than 400 users can send, so most are dropped;
3. the same **as issue #20 ran it**, ``drive --rate 60000 --vus 400`` (shards as the rate asks:
   one per core here, each at real-time priority beside nginx). Before drops were counted in
   bulk each process woke once per arrival and took its core to drop them, and nginx waited:
   1,851 req/s achieved, p50 145 ms, where nginx serves tens of thousands per core (on the
   loaded development host, 10 s runs: 837 and 1,559 req/s, p50 388 and 263 ms, before;
   7,175 and 8,635 req/s, p50 50 and 45 ms, after: not figures, the host was busy).

The bar: the one-process overloaded loop achieves at least 80 % of the closed loop's rate
(dropping costs next to nothing). Beside each, how a capacity step would judge it
(:func:`workbench.capacity.runner.judge`): a driver at its core is *driver bound*, not a knee.
``--python`` runs the drives with another checkout's interpreter (its editable install), so
one command gives the figures before and after a change: ``--python /path/to/main/.venv/bin/
python``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver, bench_http2, tools  # noqa: E402
from benchmarks.bars import Bar, fmt, print_bars  # noqa: E402
from workbench.capacity import runner  # noqa: E402

VUS, OVERLOAD_RATE = 400, 60_000.0
RATIO_TARGET = 0.80
def drive(python: str, url: str, out: Path, *flags: str) -> dict:
    """``workbench drive`` by ``python`` (it places its own processes); its result.json."""
    argv = [python, "-m", "workbench.cli", "drive", f"{url}/", "--out", str(out), *flags]
    done = subprocess.run(argv, capture_output=True, text=True)
    if not (out / "result.json").exists():
        raise SystemExit(f"the drive failed: {done.stderr[-2000:]}")
    return json.loads((out / "result.json").read_text())


def bench(python: str = sys.executable, quick: bool = False) -> dict:
    run_s = 4.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp_name:
        tmp = Path(tmp_name)
        # nginx as a user starts it: not pinned, at normal priority (issue #20's set-up)
        with bench_http2.NginxH2(tmp, tls=False, server_cpu=None) as nginx:
            closed = _closed_loop(nginx.url, tmp / "closed-loop", run_s)
            runs = {}
            for name, flags in (("one process", ("--shards", "1")), ("as shipped", ())):
                out = tmp / name.replace(" ", "-")
                result = drive(python, nginx.url, out, "--rate", f"{OVERLOAD_RATE:g}",
                               "--duration", f"{run_s:g}", "--vus", str(VUS), *flags)
                runs[name] = (result, runner.judge(
                    out, OVERLOAD_RATE, runner.parse_threshold_options(["p(99)<1000"])))
    return {"python": python, "closed": closed, "runs": runs,
            "ratio": runs["one process"][0]["achieved_rate"] / closed["achieved_rate"]}


def _closed_loop(url: str, out: Path, run_s: float) -> dict:
    """This checkout's driver as a closed loop of VUS users (it drops nothing, so the
    change under test does not touch it): the rate the overloaded loop is held to."""
    from workbench import jsonio
    from workbench.driver import DriveSpec, RequestTemplate

    spec = DriveSpec(url, (RequestTemplate("GET", "/", "adhoc"),), executor="constant-vus",
                     vus=VUS, max_vus=VUS, duration_s=run_s)
    out.mkdir(parents=True)
    jsonio.write_json(out / "spec.json", spec.document())
    argv = tools.pinned([sys.executable, "-m", "workbench.driver", str(out / "spec.json"),
                         "--out", str(out)], bench_driver.DRIVER_CPU)
    subprocess.run(argv, check=True, capture_output=True)
    return json.loads((out / "result.json").read_text())


def print_table(r: dict) -> None:
    print(f"\noverloaded open loop against nginx (HTTP/1.1), {VUS} VUs; drives by "
          f"{r['python']}")
    print(f"{'run':>34}  {'shards':>6}  {'achieved/s':>10}  {'p50 ms':>10}  {'p99 ms':>10}  "
          f"{'dropped':>10}  {'CPU':>5}  {'lag p99':>8}  as a capacity step (p(99)<1000)")
    rows = [(f"closed loop, {VUS} VUs", r["closed"], None)]
    rows += [(f"{OVERLOAD_RATE:,.0f}/s, {name}", res, step)
             for name, (res, step) in r["runs"].items()]
    for name, res, step in rows:
        lat, lag = res["latency_ms"], res["schedule_lag_ms"]["p99"]
        judged = "-" if step is None else (
            "driver bound" if step.driver_bound else "pass" if step.passed else "FAIL"
        ) + (f": {step.failed[0]}" if step is not None and step.failed else "")
        print(f"{name:>34}  {res['driver']['shards']:>6}  {fmt(res['achieved_rate'])}  "
              f"{fmt(lat['p50'])}  {fmt(lat['p99'])}  {fmt(res['dropped'])}  "
              f"{res['driver']['cpu_fraction']:>5.0%}  "
              f"{'-' if lag is None else f'{lag:.3f}':>8}  {judged}")


def bars(r: dict) -> list[Bar]:
    return [("overloaded open loop / closed loop, achieved req/s", r["ratio"], RATIO_TARGET,
             ">=")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 s runs: a smoke test only")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter whose workbench drives (another checkout's .venv)")
    args = p.parse_args()
    result = bench(args.python, args.quick)
    print_table(result)
    return 1 if print_bars(bars(result)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
