"""What a short run costs outside its timed phase, part by part, for one tree or several.

Runs, for each tree (interleaved when several, ``--repeats`` times):

- ``drive``: ``workbench drive URL --rate 1000 --duration 8`` against a loopback server
  (``servers.py``), the issue's measurement (then: 17.8 s wall, 10.4 s CPU; vegeta 8 s, ~1.3 s);
- ``run``: ``workbench run agent_storm --profile smoke -p duration_s 3`` on the tree's own
  embedded target (``workbench target up`` in a temporary state folder);
- ``all``: ``workbench run all --profile smoke`` on that target (then: 163 s for five
  scenarios of a few seconds each).

Each command runs with ``tracer/`` on ``PYTHONPATH`` (``tracer/sitecustomize.py``), which times
named functions in every process of it (the CLI, the kernel, the driver) by name, so a tree
without this benchmark (the code before a change) is timed the same way. Prints, per command,
every part: start-up (interpreter and imports before ``main``), preflight, seeding, kernel
start, calibration (what it adds beyond the driver's start, which the reading before the load
overlaps), the driver's start and finish around the timed phase, analysis, figures, record,
report, exit, and what is left (``other``); then wall and CPU time (this process's children,
the target's PostgreSQL excluded), the overhead (wall less the timed phase) and the aims:
``drive`` at most 2 s, ``run all`` at most 5 s a scenario (its table is per scenario).

    .venv/bin/python benchmarks/bench_overhead.py                       # this tree
    .venv/bin/python benchmarks/bench_overhead.py --tree /work/wt/before --tree .
    .venv/bin/python benchmarks/bench_overhead.py --python OTHER/.venv/bin/python --only drive

Timings on a machine shared with other work say little; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bars import Bar, print_bars  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
TRACER = HERE / "tracer"
COMMANDS = ("drive", "run", "all")
DRIVE_AIM_S = 2.0  # overhead of one `workbench drive`
SCENARIO_AIM_S = 5.0  # overhead per scenario of `workbench run all`


@dataclass(frozen=True)
class Tree:
    label: str
    python: Path
    workbench: Path  # the console script beside it


def tree_of(python: Path, label: str | None = None) -> Tree:
    script = python.parent / "workbench"
    if not script.exists():
        raise SystemExit(f"error: no workbench script beside {python}; `make install` there")
    root = subprocess.run([str(python), "-c", "from workbench.paths import project_root; "
                           "print(project_root())"], capture_output=True, text=True, check=True)
    return Tree(label or Path(root.stdout.strip()).name, python, script)


@dataclass
class Traced:
    """One command's trace: wall and CPU, the traced calls, the timed phases it drove."""

    wall_s: float
    cpu_s: float
    launched: float
    ended: float
    calls: list[dict]
    timed_s: float
    scenarios: int
    code: int

    def total(self, *names: str, pid: int | None = None) -> float:
        """Seconds inside any call of ``names`` (nested calls counted once)."""
        spans = sorted((c["start"], c["end"]) for c in self.calls if c["name"] in names
                       and (pid is None or c["pid"] == pid) and c["start"] is not None)
        total, reach = 0.0, float("-inf")
        for start, end in spans:
            total += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        return total

    def alone(self, names: tuple[str, ...], beside: tuple[str, ...]) -> float:
        """Seconds inside ``names`` but outside every call of ``beside`` (the time they add)."""
        return self.total(*names, *beside) - self.total(*beside)

    def first(self, name: str) -> dict | None:
        return next((c for c in self.calls if c["name"] == name), None)


def _timed_phases(runs: Path) -> tuple[float, int]:
    """Seconds of load in every run folder (result.json's start instant ``t0_epoch_ns`` to
    ``ended_at``; ``started_at`` is the driver process's start, before its warm-up and its
    wait for the start line, which are overhead), and runs."""
    total, count = 0.0, 0
    for result in runs.rglob("result.json"):
        data = json.loads(result.read_text())
        if data.get("t0_epoch_ns") and data.get("ended_at"):
            total += (datetime.fromisoformat(data["ended_at"]).timestamp()
                      - data["t0_epoch_ns"] / 1e9)
            count += 1
    return total, count


def run_traced(tree: Tree, argv: list[str], work: Path, env: dict) -> Traced:
    """``workbench ARGV`` of ``tree`` under the tracer, its runs under ``work/runs``."""
    trace = work / "trace.jsonl"
    env = env | {"WORKBENCH_TRACE": str(trace), "WORKBENCH_RUNS_DIR": str(work / "runs"),
                 "PYTHONPATH": str(TRACER)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    with (work / "stderr.log").open("wb") as log:
        done = subprocess.run([str(tree.workbench), *argv], env=env, cwd=work,
                              stdout=subprocess.DEVNULL, stderr=log)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    calls = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() \
        else []
    timed, scenarios = _timed_phases(work / "runs")
    return Traced(wall_s=ended - launched, cpu_s=(after.ru_utime - before.ru_utime)
                  + (after.ru_stime - before.ru_stime), launched=launched, ended=ended,
                  calls=calls, timed_s=timed, scenarios=scenarios, code=done.returncode)


K = "workbench."
CELL = "cell:"


def parts(t: Traced) -> dict[str, float]:
    """The command's wall time cut into parts (seconds); they add up to the wall time."""
    main = t.first(K + "cli.main")
    if main is None:
        return {"(no trace: did the command start?)": t.wall_s}
    cli = main["pid"]
    timed = t.timed_s
    # the driver's call, and what runs beside its start-up (the calibration before the load,
    # the telemetry's start): counted once, in the driver's part
    drive = (K + "driver.launch.drive",)
    driver = t.total(*drive)
    calibration = t.alone((K + "report.calibration.measure",), drive)
    telemetry = t.alone((K + "run.scenario.Run.start_telemetry",
                         K + "run.scenario.Run.stop_telemetry"), drive)
    cells = defaultdict(float)
    for c in t.calls:
        if c["name"].startswith(CELL):
            cells[c["name"][len(CELL):]] += c["end"] - c["start"]
    out = {"start-up: interpreter, imports before main": main["start"] - t.launched}
    if cells:  # a scenario run through papermill
        suite_seed = t.total(K + "scenarios.Scenario.seed", pid=cli)
        out |= {
            "preflight": t.total(K + "run.launcher.prepare", K + "target.preflight.preflight",
                                 K + "target.preflight.check_database", pid=cli),
            "seeding": cells.pop("seed", 0.0) + suite_seed,
            "kernel start": t.total("nbclient.client.NotebookClient.start_new_kernel",
                                    "nbclient.client.NotebookClient.start_new_kernel_client",
                                    K + "run.kernel.Kernel.start", K + "run.kernel.Kernel.prepare"),
            "notebook: imports and Run()": cells.pop("target", 0.0),
            "calibration, beyond the driver's start": calibration,
            "telemetry sampler start and stop, beyond it": telemetry,
            "driver, outside the timed phase": driver - timed,
            "TIMED PHASE": timed,
            "drive step, the rest": cells.pop("drive", 0.0) - calibration - telemetry - driver,
            "analysis tables": cells.pop("summary", 0.0) + cells.pop("notes", 0.0),
            "figures": cells.pop("figures", 0.0),
            "record and exports": cells.pop("record", 0.0),
            "verdict and thresholds": cells.pop("verdict", 0.0) + cells.pop("thresholds", 0.0),
            "other cells": sum(cells.values()),
            "kernel shut-down": t.total("nbclient.client.NotebookClient._cleanup_kernel",
                                        K + "run.kernel.Kernel.stop"),
            "papermill: read, parameterize, write": t.total(
                "papermill.iorw.load_notebook_node", "papermill.iorw.write_ipynb",
                "papermill.parameterize.parameterize_notebook"),
            "HTML report": t.total(K + "run.launcher.render_html"),
            "combined report": t.total(K + "run.suite.combined_summary",
                                       K + "run.suite.write_report"),
        }
    else:  # workbench drive: no notebook
        measure, imports = (K + "report.calibration.measure",), (K + "cli._import_report_path",)
        within = {what: t.total(*names) - t.alone(names, drive)  # inside the driver's call
                  for what, names in (("calibration", measure), ("imports", imports))}
        out |= {
            "calibration (both readings)": t.total(*measure),
            "imports while the driver starts": within["imports"],
            "driver, outside the timed phase and the above": driver - timed - sum(within.values()),
            "TIMED PHASE": timed,
            "target identification": t.total(K + "run.adhoc.identify"),
            "analysis and record": t.total(K + "run.adhoc.build_record"),
            "figures and HTML report": t.total(K + "run.adhoc.report_html"),
            "exports (junit, hgrm, hlog)": t.total(K + "report.exports.write_all"),
        }
    out["exit"] = t.ended - main["end"]
    out["other"] = t.wall_s - sum(out.values())
    return out


def _target(tree: Tree, action: str, env: dict, port: int | None = None) -> None:
    argv = [str(tree.workbench), "target", action] + (["--port", str(port)] if port else [])
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {tree.label}: target {action} failed:\n{done.stderr[-2000:]}")


def measure(trees: list[Tree], commands: list[str], repeats: int, rate: float,
            duration_s: float, run_duration_s: float, scenario: str, keep: Path | None
            ) -> dict[tuple[str, str], list[Traced]]:
    """Every command of every tree, interleaved, ``repeats`` times."""
    top = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    results: dict[tuple[str, str], list[Traced]] = defaultdict(list)
    envs = {t.label: os.environ | {"WORKBENCH_STATE_DIR": str(top / t.label / "state")}
            for t in trees}
    server = None
    try:
        if "drive" in commands:
            port = free_port()
            server = subprocess.Popen([sys.executable, str(HERE / "servers.py"), "--port",
                                       str(port)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            url = f"http://127.0.0.1:{port}/"
        if {"run", "all"} & set(commands):
            for t in trees:
                _target(t, "up", envs[t.label], free_port())
        for k in range(repeats):
            for t in trees:
                for command in commands:
                    work = top / t.label / f"{command}_{k}"
                    work.mkdir(parents=True)
                    argv = {"drive": ["drive", url if "drive" in commands else "",
                                      "--rate", f"{rate:g}", "--duration", f"{duration_s:g}",
                                      "--out", str(work / "runs" / "drive")],
                            "run": ["run", scenario, "--profile", "smoke", "-p", "duration_s",
                                    f"{run_duration_s:g}"],
                            "all": ["run", "all", "--profile", "smoke"]}[command]
                    traced = run_traced(t, argv, work, envs[t.label])
                    print(f"[{t.label}] {command} #{k + 1}: {traced.wall_s:.1f} s wall, "
                          f"{traced.cpu_s:.1f} s CPU, exit {traced.code}", file=sys.stderr,
                          flush=True)
                    results[(t.label, command)].append(traced)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait()
        if {"run", "all"} & set(commands):
            for t in trees:
                _target(t, "down", envs[t.label])
        if keep is None:
            shutil.rmtree(top, ignore_errors=True)
    return results


def per(command: str, r: Traced) -> int:
    """What a command's figures are divided by: ``run all``'s scenarios, else 1."""
    return max(1, r.scenarios) if command == "all" else 1


def report(results: dict[tuple[str, str], list[Traced]], trees: list[Tree],
           commands: list[str]) -> list[Bar]:
    """A table per command (medians over repeats, one column per tree), and the aims.
    ``run all``'s table is per scenario: each part divided by the scenarios it ran."""
    bars: list[Bar] = []
    for command in commands:
        columns = [(t.label, results[(t.label, command)]) for t in trees]
        table: dict[str, dict[str, float]] = defaultdict(dict)
        for label, runs in columns:
            for name in dict.fromkeys(n for r in runs for n in parts(r)):
                table[name][label] = statistics.median(parts(r).get(name, 0.0) / per(command, r)
                                                       for r in runs)
            summary = {
                "= scenarios": statistics.median(r.scenarios for r in runs),
                "= wall": statistics.median(r.wall_s / per(command, r) for r in runs),
                "= CPU (this command's processes)": statistics.median(r.cpu_s / per(command, r)
                                                                      for r in runs),
                "= overhead (wall - timed phase)": statistics.median(
                    (r.wall_s - r.timed_s) / per(command, r) for r in runs),
                # the machine's calibration (issue 19) is a reading it must take, on a quiet
                # machine; what the command costs beside it, for the aim set without it
                "= overhead less the calibration": statistics.median(
                    (r.wall_s - r.timed_s - sum(v for k, v in parts(r).items()
                                                if k.startswith("calibration")))
                    / per(command, r) for r in runs),
            }
            for name, value in summary.items():
                table[name][label] = value
            aim = DRIVE_AIM_S if command == "drive" else SCENARIO_AIM_S
            unit = "run" if command == "drive" else "scenario"
            bars.append((f"{label}: {command} overhead per {unit} (s)",
                         summary["= overhead (wall - timed phase)"], aim, "<="))
        width = max(len(name) for name in table)
        each = " per scenario" if command == "all" else ""
        print(f"\n{command}: seconds{each} (median of {len(columns[0][1])})")
        print(f"{'part':<{width}}" + "".join(f"  {label:>12}" for label, _ in columns))
        for name, row in table.items():
            print(f"{name:<{width}}" + "".join(f"  {row.get(label, 0.0):>12.2f}"
                                                for label, _ in columns))
    return bars


def bench(quick: bool = False) -> list[Bar]:
    """This tree's overhead (``benchmarks/run.py --only overhead``); ``quick``: drive and one
    scenario, shorter."""
    trees = [tree_of(Path(sys.executable).absolute())]
    commands = ["drive", "run"] if quick else list(COMMANDS)
    results = measure(trees, commands, 1, 1000.0, 3.0 if quick else 8.0, 3.0, "agent_storm",
                      None)
    return report(results, trees, commands)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[], type=Path,
                   help="a checkout with its own .venv (repeatable; default: this one)")
    p.add_argument("--python", action="append", default=[], type=Path,
                   help="a venv's python whose workbench to time (repeatable)")
    p.add_argument("--only", default=",".join(COMMANDS), help="drive,run,all")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--rate", type=float, default=1000.0, help="drive: requests/s")
    p.add_argument("--duration", type=float, default=8.0, help="drive: seconds")
    p.add_argument("--scenario", default="agent_storm", help="run: the scenario")
    p.add_argument("--run-duration", type=float, default=3.0, help="run: duration_s")
    p.add_argument("--keep", type=Path, help="keep traces and runs in this folder")
    args = p.parse_args(argv)
    commands = [c.strip() for c in args.only.split(",") if c.strip()]
    if unknown := set(commands) - set(COMMANDS):
        p.error(f"--only takes {','.join(COMMANDS)}, not {','.join(sorted(unknown))}")
    pythons = [(tree / ".venv" / "bin" / "python", tree.resolve().name) for tree in args.tree]
    pythons += [(python, None) for python in args.python]
    trees = [tree_of(python.absolute(), label) for python, label in pythons] or [
        tree_of(Path(sys.executable).absolute())]
    if len({t.label for t in trees}) < len(trees):
        trees = [Tree(f"{t.label}#{i + 1}", t.python, t.workbench) for i, t in enumerate(trees)]
    results = measure(trees, commands, args.repeats, args.rate, args.duration,
                      args.run_duration, args.scenario, args.keep)
    return 1 if print_bars(report(results, trees, commands)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
