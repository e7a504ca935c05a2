"""``workbench ab`` and ``history --bisect`` against a real certctl, repeated: do the verdicts
hold, and how long do they take? (issue 19's "done when"; a quiet machine, a certctl checkout.)

Each repeat is the command a user types (``workbench ab ...`` in a child process, its own
output folder); the table gives each one's verdict, rounds, why it stopped and its wall time,
and the bars say whether the verdicts held:

* ``aa``: the same revision on both sides, ``--times`` (10) times: never *slower* or *faster*;
* ``ab``: A against a B with a known regression (a sleep in the heartbeat handler),
  ``--times`` (3) times: *slower* every time, each within ``--minutes`` (10);
* ``bisect``: ``history --bisect GOOD BAD`` once: names ``--expect`` (the injected commit).

    .venv/bin/python benchmarks/bench_ab.py aa --src /work/src/certctl --a aad95d3 --times 10
    .venv/bin/python benchmarks/bench_ab.py ab --src /work/src/certctl-patched --a master \\
        --b bench/ab-heartbeat-sleep-300us --times 3
    .venv/bin/python benchmarks/bench_ab.py bisect --src /work/src/certctl-patched --a master \\
        --b bench/bisect-8-commits --expect bench/bisect-injected

Anything after ``--`` goes to the command (``-- --duration 30s --max-rounds 12``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bars import Bar, print_bars  # noqa: E402

SCENARIO = "agent_storm"


def run(command: list[str], out: Path) -> dict:
    """One ``workbench`` command into ``out``; its document and wall time."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *command, "--out", str(out)],
                          stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    name = "bisect.json" if "--bisect" in command else "ab.json"
    try:
        doc = json.loads((out / name).read_text())
    except (OSError, ValueError):
        doc = {}
    print(done.stdout, flush=True)
    return {"doc": doc, "seconds": seconds, "code": done.returncode, "out": str(out)}


def commit_of(src: str, rev: str) -> str:
    return subprocess.run(["git", "-C", src, "rev-parse", f"{rev}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("mode", choices=("aa", "ab", "bisect"))
    p.add_argument("--src", required=True, help="the certctl checkout")
    p.add_argument("--a", required=True, help="revision A (aa: both sides; bisect: GOOD)")
    p.add_argument("--b", help="revision B (bisect: BAD)")
    p.add_argument("--expect", help="bisect: the revision it must name")
    p.add_argument("--times", type=int, help="repeats (aa 10, ab 3)")
    p.add_argument("--minutes", type=float, default=10.0, help="ab: each within this long")
    p.add_argument("--scenario", default=SCENARIO)
    p.add_argument("--runs", help="where the output folders go (default: a temporary folder)")
    args, extra = p.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    if args.mode != "aa" and not args.b:
        p.error(f"{args.mode} needs --b")
    root = Path(args.runs or tempfile.mkdtemp(prefix=f"bench-ab-{args.mode}-"))
    if args.mode == "bisect":
        if not args.expect:
            p.error("bisect needs --expect REV (the injected commit)")
        result = run(["history", args.scenario, "--certctl-src", args.src, "--bisect", args.a,
                      args.b, *extra], root / "bisect")
        named = ((result["doc"].get("answer") or {}).get("commit")) or ""
        expected = commit_of(args.src, args.expect)
        print(f"\nbisect named {named[:12] or 'nothing'} (expected {expected[:12]}) in "
              f"{result['seconds'] / 60:.1f} min, {len(result['doc'].get('steps') or [])} "
              f"steps: {result['doc'].get('sentence')}")
        return 1 if print_bars([("bisect names the injected commit (1 = yes)",
                                 float(named == expected), 1.0, ">=")]) else 0
    b = args.a if args.mode == "aa" else args.b
    times = args.times or (10 if args.mode == "aa" else 3)
    rows = []
    for i in range(1, times + 1):
        print(f"--- {args.mode} {i}/{times}", flush=True)
        result = run(["ab", args.scenario, "--a", f"certctl:{args.a}", "--b", f"certctl:{b}",
                      "--certctl-src", args.src, *extra], root / f"{args.mode}{i:02d}")
        doc = result["doc"]
        rows.append({"verdict": doc.get("verdict", f"failed (exit {result['code']})"),
                     "rounds": len(doc.get("rounds") or []), "stopped": doc.get("stopped"),
                     "minutes": result["seconds"] / 60, "out": result["out"]})
    print(f"\n{'#':>3}  {'verdict':<18} {'rounds':>6}  {'stopped':<11} {'minutes':>7}  folder")
    for i, r in enumerate(rows, start=1):
        print(f"{i:>3}  {r['verdict']:<18} {r['rounds']:>6}  {str(r['stopped']):<11} "
              f"{r['minutes']:>7.1f}  {r['out']}")
    verdicts = [r["verdict"] for r in rows]
    minutes = [r["minutes"] for r in rows]
    print(f"median {statistics.median(minutes):.1f} min, longest {max(minutes):.1f} min")
    if args.mode == "aa":
        bars: list[Bar] = [("A/A runs saying slower or faster",
                            float(sum(v in ("slower", "faster") for v in verdicts)), 0.0, "<=")]
    else:
        bars = [("A/B runs saying slower (share)", verdicts.count("slower") / len(rows), 1.0,
                 ">="),
                ("A/B longest run (minutes)", max(minutes), args.minutes, "<=")]
    return 1 if print_bars(bars) else 0


if __name__ == "__main__":
    raise SystemExit(main())
