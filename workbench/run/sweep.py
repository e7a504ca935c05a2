"""``workbench run SCENARIO --fixture-sizes 10000,100000,1000000``: one run per fixture size.

"Production-sized Postgres" becomes a curve: the scenario runs at each size of its fixture
(its ``size_param``), each run a complete run with its own folder, record and report, and the
sweep folder (``runs/<stamp>_sweep_<scenario>_<id>/``) holds ``sweep.json`` (one row per size:
the fixture's recorded size, percentiles of every request, rate, validity, exit code, run
folder) and ``latency_vs_fixture_size.png``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from workbench import exitcodes, jsonio, scenarios
from workbench.paths import runs_dir
from workbench.report import plots
from workbench.run import launcher
from workbench.run.kernel import Kernel, for_terminal
from workbench.run.scenario import new_run_id

SWEEP_FILE, FIGURE_FILE = "sweep.json", "latency_vs_fixture_size.png"
SCHEMA_VERSION = 1
COLUMNS = ("size", "fixture_rows", "requests", "achieved_rps", "error_rate", "p50", "p95", "p99",
           "max", "valid", "passed", "exit_code", "run_dir")


def _row(size: int, run_dir: Path, code: int) -> dict:
    row: dict = {"size": size, "exit_code": code, "run_dir": str(run_dir)}
    try:
        record = json.loads((run_dir / "record.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return row
    every = record["endpoints"].get("all") or next(iter(record["endpoints"].values()), {})
    sizes = record["fixtures"]["sizes"]
    return row | {"fixture_rows": sum(v for v in sizes.values() if isinstance(v, int)) or size,
                  "requests": every.get("requests"), "achieved_rps": every.get("achieved_rps"),
                  "error_rate": every.get("error_rate"),
                  **{k: every.get(k) for k in ("p50", "p95", "p99", "max")},
                  "valid": record["validity"]["valid"], "passed": record["passed"]}


def run_sweep(scenario: str, profile: str, sizes: Sequence[int], target_url: str | None = None,
              ca_file: str | None = None, insecure: bool = False,
              overrides: Mapping | None = None, strict: bool = False,
              notebook_kernel: Kernel | None = None) -> tuple[Path, int]:
    """Run ``scenario`` once per fixture size (in one kernel: ``notebook_kernel``, or one
    started here); returns the sweep folder and the worst exit
    code (:mod:`workbench.exitcodes`; 0: every run passed)."""
    if notebook_kernel is None:
        with for_terminal() as own:
            return run_sweep(scenario, profile, sizes, target_url, ca_file, insecure, overrides,
                             strict, own)
    runs = scenarios.plan_sizes(scenario, profile, sizes, dict(overrides or {}))
    sweep_dir = runs_dir() / new_run_id(f"sweep_{scenario}")
    sweep_dir.mkdir(parents=True)
    rows, worst = [], 0
    for size, params in zip(sizes, runs, strict=True):
        print(f"[sweep] {scenario} at {scenarios.get(scenario).size_param}={size:,}",
              file=sys.stderr, flush=True)
        run_dir, code = launcher.execute(scenario, profile, target_url, ca_file, insecure, params,
                                         strict=strict, kernel=notebook_kernel)
        rows.append(_row(size, run_dir, code))
        worst = exitcodes.worst((worst, code))
        write(sweep_dir, scenario, profile, rows)  # a failure later keeps the sizes done
    return sweep_dir, worst


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS)).set_index("size")


def write(sweep_dir: Path, scenario: str, profile: str, rows: list[dict]) -> None:
    """``sweep.json`` and the latency-against-fixture-size figure."""
    jsonio.write_json(sweep_dir / SWEEP_FILE, {"schema_version": SCHEMA_VERSION,
                                               "scenario": scenario, "profile": profile,
                                               "runs": rows})
    frame = table(rows)
    fig = plots.latency_vs_fixture_size(frame, scenario)
    fig.savefig(sweep_dir / FIGURE_FILE, dpi=110)
    plt.close(fig)


def print_summary(sweep_dir: Path) -> None:
    sweep = json.loads((sweep_dir / SWEEP_FILE).read_text())
    frame = table(sweep["runs"])
    print(f"\n{sweep['scenario']} ({sweep['profile']}) across fixture sizes:")
    print(frame[["fixture_rows", "requests", "p50", "p95", "p99", "valid", "passed"]]
          .to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"  figure: {sweep_dir / FIGURE_FILE}\n  sweep:  {sweep_dir / SWEEP_FILE}")
