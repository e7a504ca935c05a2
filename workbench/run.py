"""A run: one scenario against one target, from preflight to the baseline record.

The notebook builds a :class:`Run` and calls one method per cell; ``workbench run`` executes that
notebook with papermill into ``runs/<run-id>/`` and renders the HTML report. Every file in the
run directory is free of secrets: the token reaches the driver process through its environment.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from workbench import analysis, baseline, driver, machine, preflight, scenarios
from workbench.errors import WorkbenchError
from workbench.paths import notebooks_dir, project_root, runs_dir

_DRIVER_TOKEN_ENV = "WORKBENCH_DRIVER_TOKEN"


def new_run_id(scenario: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{scenario}_{secrets.token_hex(4)}"


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


class Run:
    """Preflight, seed, drive and record one scenario; each step is one notebook cell."""

    def __init__(self, scenario: str, params: dict, thresholds: dict,
                 target_url: str | None = None, ca_file: str | None = None,
                 insecure: bool = False, run_dir: str | Path | None = None,
                 profile: str | None = None) -> None:
        self.scenario = scenarios.get(scenario)
        scenarios.validate_params(params)
        self.params = dict(params)
        self.thresholds = analysis.parse_thresholds(thresholds)
        self.threshold_spec = thresholds
        self.profile = profile
        self.target = preflight.resolve_target(target_url, ca_file, insecure)
        self._token = preflight.token_for(self.target)
        self.identity = preflight.preflight(self.target, self._token)
        self.dir = Path(run_dir) if run_dir else runs_dir() / new_run_id(scenario)
        self.run_id = self.dir.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fixtures: dict = {}
        self.result: dict | None = None

    def __repr__(self) -> str:  # shown in the notebook: nothing secret in it
        return (f"Run({self.scenario.name}, {self.run_id}, target={self.target.url} "
                f"[{self.target.kind} {self.identity['version']} {self.identity['commit']}])")

    def seed(self) -> dict:
        if not self.target.dsn:
            raise WorkbenchError(f"no database to seed: export {preflight.DSN_ENV}=<DSN> "
                                 "for the target's database")
        self.fixtures = self.scenario.seed(self.target.dsn, self.params)
        return self.fixtures

    def drive(self) -> dict:
        spec = driver.DriveSpec(
            base_url=self.target.url, templates=self.scenario.templates(self.params),
            rate=float(self.params["rate"]), duration_s=float(self.params["duration_s"]),
            max_vus=int(self.params.get("max_vus", 200)),
            timeout_s=float(self.params.get("timeout_s", 10.0)),
            ca_file=self.target.ca_file, insecure=self.target.insecure,
            token_env=_DRIVER_TOKEN_ENV, scenario=self.scenario.name)
        self.result = driver.drive(spec, self.dir, env={_DRIVER_TOKEN_ENV: self._token},
                                   echo=lambda line: print(line, flush=True))
        return self.result

    def requests(self) -> pd.DataFrame:
        return analysis.load_requests(self.dir)

    def title(self) -> tuple[str, str, str]:
        """Scenario, target label and date for figure titles."""
        target = f"{self.target.kind} {self.identity['version']} @ {self.target.url}"
        date = (self.result or {}).get("started_at", "")[:16].replace("T", " ") + " UTC"
        return self.scenario.name, target, date

    def record(self, summary: pd.DataFrame, verdicts: pd.DataFrame) -> dict:
        """Write ``record.json``: the baseline record of this run (schema version 1)."""
        if self.result is None:
            raise WorkbenchError("drive() has not run; nothing to record")
        r = self.result
        endpoints = {
            str(tag): {k: _num(row[k]) for k in
                       ("requests", "failed", "dropped", "achieved_rps", "error_rate",
                        "p50", "p90", "p95", "p99", "max")}
            for tag, row in summary.iterrows()
        }
        record = {
            "schema_version": baseline.SCHEMA_VERSION,
            "run_id": self.run_id,
            "scenario": self.scenario.name,
            "profile": self.profile,
            "parameters": self.params,
            "parameters_hash": params_hash(self.params),
            "target": {k: self.identity[k] for k in ("url", "kind", "version", "commit",
                                                     "modified", "dsn")},
            "workbench": baseline.workbench_revision(project_root()),
            "run": {"started_at": r["started_at"], "ended_at": r["ended_at"],
                    "status": r["status"]},
            "machine": machine.facts(),
            "software": machine.software(),
            "fixtures": self.scenario.fixtures(self.params) | {"seed": self.fixtures},
            "load": {k: r[k] for k in ("offered_rate", "achieved_rate", "duration_s",
                                       "scheduled", "completed", "failed", "dropped")},
            "endpoints": endpoints,
            "validity": {"valid": r["valid"], "reasons": r["invalid_reasons"],
                         "schedule_lag_ms": r["schedule_lag_ms"],
                         "driver_cpu_fraction": r["driver"]["cpu_fraction"]},
            "thresholds": [{k: _num(v) for k, v in row.items()}
                           for row in verdicts.to_dict("records")],
            "passed": bool(verdicts["ok"].all()),
        }
        baseline.write_json_atomic(self.dir / baseline.RECORD_FILE, record)
        return record


def _num(value):
    """JSON-safe scalars: numpy to Python, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def execute(scenario: str, profile: str, target_url: str | None = None,
            ca_file: str | None = None, insecure: bool = False,
            overrides: dict | None = None) -> tuple[Path, int]:
    """Run a scenario's notebook through papermill, then render the HTML report.

    Returns the run directory and an exit code: 0 passed, 1 thresholds breached or run failed.
    Bad input and an unfit target are refused before the notebook starts.
    """
    import papermill

    spec = scenarios.get(scenario)
    params = scenarios.profile_params(spec, profile) | (overrides or {})
    scenarios.validate_params(params)
    target = preflight.resolve_target(target_url, ca_file, insecure)
    preflight.preflight(target, preflight.token_for(target))  # fail fast, before papermill
    run_dir = runs_dir() / new_run_id(scenario)
    run_dir.mkdir(parents=True)
    out_nb = run_dir / spec.notebook
    started = time.monotonic()
    code = 0
    try:
        papermill.execute_notebook(
            str(notebooks_dir() / spec.notebook), str(out_nb),
            parameters={"target_url": target_url, "ca_file": ca_file, "insecure": insecure,
                        "profile": profile, "run_dir": str(run_dir), **params},
            kernel_name="python3", progress_bar=False, log_output=False,
            stdout_file=sys.stdout, stderr_file=sys.stderr, cwd=str(project_root()))
    except papermill.PapermillExecutionError as exc:
        print(f"notebook failed: {exc.ename}: {exc.evalue.splitlines()[0] if exc.evalue else ''}",
              file=sys.stderr)
        code = 1
    if out_nb.exists():
        render_html(out_nb, run_dir / "report.html")
    print(f"[workbench] {scenario} ({profile}) took {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    return run_dir, code


def render_html(notebook: Path, html: Path) -> None:
    """The executed notebook as HTML with code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body)
