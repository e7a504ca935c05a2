"""Memory per request of `workbench drive`: the driver process and the whole command.

    .venv/bin/python benchmarks/bench_memory.py [--python PY ...] [--rounds N] [--long]
    .venv/bin/python benchmarks/run.py --only memory            (the short pair, one round)

``workbench drive URL --rate 5000`` against ``servers.py`` (pinned to CPU 1), for 4 s and for
24 s: the driver's peak RSS (``result.json``'s ``driver.rss_peak_bytes``, sampled each second
of the run) and the whole command's (the largest ``ru_maxrss`` of any of its processes, as
``/usr/bin/time`` reports it: the parent, which analyses ``requests.parquet`` and writes the
record, the exports and the report). Bytes per request = (peak at 24 s - peak at 4 s) /
(requests at 24 s - requests at 4 s): what one more request costs, start-up set aside.
``--long`` adds a 10-minute run at 5,000 req/s (3M requests) with its peaks.

``--python`` names the interpreter of a checkout's virtualenv (default: this one's); given
several, each round runs them in turn, the order reversed every other round (ABBA), so two
builds are compared on one host under the same conditions. Each drive runs in a scratch
folder as its working directory, so the interpreter imports its own checkout's workbench.
Memory figures barely depend on CPU load, but a loaded host may drop arrivals (counted,
still one row each); the table says how many were sent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bars import Bar  # noqa: E402
from benchmarks.bench_driver import BenchServer  # noqa: E402

RATE = 5000.0
SHORT_S, LONG_S, SOAK_S = 4.0, 24.0, 600.0
# The driver's RSS moves by +-3 MiB from second to second (a chunk in the writer, connection
# buffers): a peak over 100,000 more requests can differ by ~30 B/request with nothing growing.
BYTES_TARGET = 64.0  # per request, driver and whole command: flat, up to that noise
SOAK_GROWTH_TARGET_MIB = 16.0  # the soak's peaks (driver, whole command) over the 24 s run's


def drive(python: str, url: str, duration_s: float, work: Path, rate: float = RATE) -> dict:
    """One ``workbench drive`` of ``duration_s``; the driver's and the command's peak RSS."""
    work.mkdir(parents=True)
    out = work / "run"
    argv = [python, "-m", "workbench.cli", "drive", url + "/", "--rate", str(rate),
            "--duration", str(duration_s), "--vus", "400", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with open(work / "stderr.txt", "w+") as stderr:  # a file: a pipe nobody reads could fill
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr.seek(0)
        err = stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if not (out / "result.json").exists():
        raise RuntimeError(f"{python}: drive failed ({proc.returncode}): {err[-500:]}")
    result = json.loads((out / "result.json").read_text())
    return {"python": python, "duration_s": duration_s, "exit": proc.returncode,
            "scheduled": result["scheduled"], "sent": result["completed"] + result["failed"],
            "dropped": result["dropped"],
            "driver_kib": result["driver"]["rss_peak_bytes"] / 1024,
            "command_kib": float(usage.ru_maxrss)}  # Linux: KiB


def per_request(short: dict, long: dict) -> dict:
    """Bytes one more request costs, driver and whole command."""
    n = long["scheduled"] - short["scheduled"]
    return {k: (long[f"{k}_kib"] - short[f"{k}_kib"]) * 1024 / n if n > 0 else float("nan")
            for k in ("driver", "command")}


def bench(pythons: list[str], rounds: int = 1, soak: bool = False) -> list[dict]:
    """Every interpreter at SHORT_S and LONG_S per round (ABBA order), then the soak."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        with BenchServer(tmp) as server:
            n = 0
            for r in range(rounds):
                for python in pythons if r % 2 == 0 else pythons[::-1]:
                    short = drive(python, server.url, SHORT_S, tmp / f"{n}-short")
                    long = drive(python, server.url, LONG_S, tmp / f"{n}-long")
                    rows.append({"round": r, "python": python, "short": short, "long": long,
                                 "bytes": per_request(short, long)})
                    n += 1
            if soak:
                for python in pythons:
                    rows.append({"round": "soak", "python": python,
                                 "soak": drive(python, server.url, SOAK_S, tmp / f"{n}-soak")})
                    n += 1
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nMemory: workbench drive at {RATE:,.0f} req/s, {SHORT_S:g} s against {LONG_S:g} s "
          "(peak RSS in KiB; bytes per request = slope between the two)")
    print(f"{'round':>5} {'python':<36} {'sent 4 s':>9} {'sent 24 s':>10} {'driver 4 s':>11}"
          f" {'driver 24 s':>12} {'cmd 4 s':>9} {'cmd 24 s':>9} {'drv B/req':>10}"
          f" {'cmd B/req':>10}")
    for row in rows:
        if "soak" in row:
            s = row["soak"]
            print(f"soak: {row['python']}: {s['duration_s']:g} s, {s['sent']:,} sent "
                  f"({s['dropped']:,} dropped): driver peak {s['driver_kib']:,.0f} KiB, "
                  f"whole command {s['command_kib']:,.0f} KiB")
            continue
        a, b, per = row["short"], row["long"], row["bytes"]
        print(f"{row['round']:>5} {row['python'][-36:]:<36} {a['sent']:>9,} {b['sent']:>10,}"
              f" {a['driver_kib']:>11,.0f} {b['driver_kib']:>12,.0f} {a['command_kib']:>9,.0f}"
              f" {b['command_kib']:>9,.0f} {per['driver']:>10.1f} {per['command']:>10.1f}")


def bars(rows: list[dict]) -> list[Bar]:
    """This checkout's bars: bytes per request, and the soak's growth when it ran."""
    own = [r for r in rows if r["python"] == sys.executable]
    out: list[Bar] = []
    for r in own:
        if "bytes" in r:
            out += [("memory: driver bytes per request (4 s -> 24 s)", r["bytes"]["driver"],
                     BYTES_TARGET, "<="),
                    ("memory: whole command bytes per request (4 s -> 24 s)",
                     r["bytes"]["command"], BYTES_TARGET, "<=")]
    soak = [r["soak"] for r in own if "soak" in r]
    long = [r["long"] for r in own if "long" in r]
    if soak and long:
        for key, what in (("driver", "driver"), ("command", "whole command")):
            out.append((f"memory: {what} peak after {SOAK_S / 60:g} min over the 24 s run's "
                        "(MiB)", (soak[0][f"{key}_kib"] - max(x[f"{key}_kib"] for x in long))
                        / 1024, SOAK_GROWTH_TARGET_MIB, "<="))
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bars import print_bars

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", action="append",
                   help="a checkout's interpreter (repeat to compare; default: this one)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of the short pair (ABBA)")
    p.add_argument("--long", action="store_true",
                   help=f"also a {SOAK_S / 60:g}-minute run at {RATE:,.0f} req/s per interpreter")
    args = p.parse_args(argv)
    rows = bench(args.python or [sys.executable], args.rounds, args.long)
    print_table(rows)
    found = bars(rows)
    return 1 if found and print_bars(found) else 0


if __name__ == "__main__":
    raise SystemExit(main())
