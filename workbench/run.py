"""A run: one scenario against one target, from preflight to the baseline record.

The notebook builds a :class:`Run` and calls one method per cell; ``workbench run`` executes that
notebook with papermill into ``runs/<run-id>/`` and renders the HTML report. Every file in the
run directory is free of secrets: the token reaches the driver process through its environment.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from workbench import analysis, baseline, driver, machine, preflight, record, scenarios, seed
from workbench.errors import WorkbenchError
from workbench.jsonio import write_json
from workbench.paths import notebooks_dir, project_root, runs_dir

_DRIVER_TOKEN_ENV = "WORKBENCH_DRIVER_TOKEN"


def new_run_id(scenario: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{scenario}_{secrets.token_hex(4)}"


params_hash = record.params_hash  # kept for callers of the old name


class Run:
    """Preflight, seed, drive and record one scenario; each step is one notebook cell."""

    def __init__(self, scenario: str, params: dict, thresholds: dict,
                 target_url: str | None = None, ca_file: str | None = None,
                 insecure: bool = False, run_dir: str | Path | None = None,
                 profile: str | None = None, seed_fixtures: bool = True) -> None:
        self.scenario = scenarios.get(scenario)
        scenarios.validate_params(params)
        self.params = dict(params)
        self.thresholds = analysis.parse_thresholds(thresholds)
        self.threshold_spec = thresholds
        self.profile = profile
        self.seed_fixtures = seed_fixtures  # False: `workbench run all` seeded already
        self.target = preflight.resolve_target(target_url, ca_file, insecure)
        self._token = preflight.token_for(self.target)
        self.identity = preflight.preflight(self.target, self._token,
                                            **self.scenario.preflight_args(self.params))
        self.dir = Path(run_dir) if run_dir else runs_dir() / new_run_id(scenario)
        self.run_id = self.dir.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fixtures: dict = {}
        self.result: dict | None = None
        self._requests: pd.DataFrame | None = None

    def __repr__(self) -> str:  # shown in the notebook: nothing secret in it
        return (f"Run({self.scenario.name}, {self.run_id}, target={self.target.url} "
                f"[{self.target.kind} {self.identity['version']} {self.identity['commit']}])")

    def seed(self) -> dict:
        if not self.target.dsn:
            raise WorkbenchError(f"no database to seed: export {preflight.DSN_ENV}=<DSN> "
                                 "for the target's database")
        if self.seed_fixtures or self.scenario.reset is None:
            self.fixtures = self.scenario.seed(self.target.dsn, self.params)
        else:  # seeded once by `workbench run all`: only undo what earlier runs changed
            self.fixtures = self.scenario.reset(self.target.dsn, self.params)
        return self.fixtures

    def drive(self) -> dict:
        spec = driver.DriveSpec(
            base_url=self.target.url, templates=self.scenario.templates(self.params),
            **self.scenario.executor_settings(self.params),
            ca_file=self.target.ca_file, insecure=self.target.insecure,
            token_env=_DRIVER_TOKEN_ENV, scenario=self.scenario.name)
        self.result = driver.drive(spec, self.dir, env={_DRIVER_TOKEN_ENV: self._token},
                                   echo=lambda line: print(line, flush=True))
        return self.result

    def requests(self) -> pd.DataFrame:
        """This run's requests (``requests.parquet`` with derived columns), read once."""
        if self._requests is None:
            self._requests = analysis.load_requests(self.dir)
        return self._requests

    def analyse(self, window_s: float | None = None) -> analysis.Analysis:
        """Percentiles with intervals, load, errors, windows and validity of this run."""
        if self.result is None:
            raise WorkbenchError("drive() has not run; nothing to analyse")
        return analysis.analyse(self.requests(), self.scenario.name,
                                self.result.get("offered_rate"),  # None: closed loop
                                float(self.params["duration_s"]),
                                window_s, reported=self.result)

    def title(self) -> tuple[str, str, str]:
        """Scenario, target label and date for figure titles."""
        target = f"{self.target.kind} {self.identity['version']} @ {self.target.url}"
        date = (self.result or {}).get("started_at", "")[:16].replace("T", " ") + " UTC"
        return self.scenario.name, target, date

    def record(self, result: analysis.Analysis | pd.DataFrame | None,
               verdicts: pd.DataFrame) -> dict:
        """Write ``record.json``: this run's baseline record (schema version 1), once.

        ``result`` is this run's :class:`~workbench.analysis.Analysis` (an older notebook's
        summary frame, or None, has it computed here). The database facts are read from the
        target's database now, with the password never leaving the DSN.
        """
        if self.result is None:
            raise WorkbenchError("drive() has not run; nothing to record")
        if not isinstance(result, analysis.Analysis):
            result = self.analyse()
        r = self.result
        target = {k: self.identity.get(k) for k in ("url", "kind", "version", "commit",
                                                    "modified", "dsn")}
        target["commit_date"] = commit_date(self.identity.get("commit"))
        software = machine.software()
        software["packages"] |= _versions(("scipy", "hdrhistogram", "matplotlib"))
        context = {
            "run_id": self.run_id,
            "scenario": self.scenario.name,
            "profile": self.profile,
            "parameters": self.params,
            "target": target,
            "workbench": baseline.workbench_revision(project_root()),
            "run": {"started_at": r["started_at"], "ended_at": r["ended_at"],
                    "status": r["status"]},
            "machine": machine.facts(),
            "software": software,
            "database": database_facts(self.target.dsn),
            "fixtures": {"sizes": self.scenario.fixtures(self.params), "seeded": self.fixtures},
            "load": {k: r.get(k) for k in ("offered_rate", "achieved_rate", "duration_s",
                                           "scheduled", "completed", "failed", "dropped",
                                           "error_rate")}
                    | {"max_vus": int(self.params.get("max_vus", 200)),
                       "engine": (r.get("driver") or {}).get("engine")},
        }
        rec = record.build(context, result, self.requests(), verdicts, reported=r)
        write_json(self.dir / record.RECORD_FILE, rec, exclusive=True)
        return rec


def _versions(names: tuple[str, ...]) -> dict:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


def commit_date(commit: str | None) -> str | None:
    """The committer date (ISO 8601) of the measured commit, when a local clone knows it.

    Looked up in the workbench's own repository (the stand-in's commit is the workbench's) and
    in ``CERTCTL_REPO`` (a clone of certctl) when set; None when neither has it.
    """
    if not commit or not _SHA.fullmatch(commit):
        return None
    for repo in (project_root(), os.environ.get("CERTCTL_REPO")):
        if not repo:
            continue
        out = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%cI",
                              f"{commit}^{{commit}}"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


DB_SETTINGS = ("shared_buffers", "max_connections", "synchronous_commit")


def database_facts(dsn: str | None) -> dict | None:
    """``server_version`` and key settings read from the target's database, or None without one.

    Read-only (``SHOW``), so a remote database is fine; an unreachable one is recorded as such
    rather than failing the run that already happened. The DSN itself is never recorded here.
    """
    if not dsn:
        return None
    import sqlalchemy as sa

    try:
        engine = seed.engine_for(dsn, allow_remote=True)
        try:
            with engine.connect() as conn:
                facts = {name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                         for name in ("server_version", *DB_SETTINGS)}
        finally:
            engine.dispose()
    except (WorkbenchError, sa.exc.SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return {"server_version": None, "settings": {}, "error": seed.redact_dsn(reason)
                if "://" in reason else reason}
    return {"server_version": facts.pop("server_version"), "settings": facts}


# Set by `workbench run` itself, never by -p: they locate the target and the run.
_RESERVED_PARAMS = ("target_url", "ca_file", "insecure", "profile", "run_dir", "seed_fixtures")


def scenario_params(spec: scenarios.Scenario, profile: str, overrides: dict | None) -> dict:
    """A profile's parameters with the overrides, validated."""
    params = scenarios.profile_params(spec, profile) | (overrides or {})
    scenarios.validate_params(params)
    return params


def check_overrides(spec: scenarios.Scenario, overrides: dict) -> None:
    """Refuse an override the scenario's notebook does not take, naming the ones it does."""
    import papermill

    takes = [n for n in papermill.inspect_notebook(str(notebooks_dir() / spec.notebook))
             if n not in _RESERVED_PARAMS]
    unknown = sorted(set(overrides) - set(takes))
    if unknown:
        raise WorkbenchError(f"{spec.name} takes no parameter {', '.join(unknown)}; it takes "
                             f"{', '.join(takes)}")
    if "thresholds" in overrides:
        analysis.parse_thresholds(overrides["thresholds"])


def execute(scenario: str, profile: str, target_url: str | None = None,
            ca_file: str | None = None, insecure: bool = False,
            overrides: dict | None = None, strict: bool = False,
            seed_fixtures: bool = True, warn: bool = True) -> tuple[Path, int]:
    """Run a scenario's notebook through papermill, then render the HTML report.

    Returns the run directory and an exit code: 0 passed, 1 thresholds breached or run failed.
    Bad input and an unfit target are refused before the notebook starts; certctl's traps are
    printed as warnings first (refused with ``strict``). ``seed_fixtures=False`` only resets
    fixtures an earlier run changed (``workbench run all`` seeds once).
    """
    import papermill

    spec = scenarios.get(scenario)
    check_overrides(spec, overrides or {})
    params = scenario_params(spec, profile, overrides)
    target = preflight.resolve_target(target_url, ca_file, insecure)
    identity = preflight.preflight(target, preflight.token_for(target), strict=strict,
                                   **spec.preflight_args(params))  # fail fast, before papermill
    for warning in identity["warnings"] if warn else ():
        print(f"warning: {warning}", file=sys.stderr)
    if spec.seed is not scenarios.no_fixture:
        preflight.check_database(target, parents="fixture_parents" in spec.traps)
    run_dir = runs_dir() / new_run_id(scenario)
    run_dir.mkdir(parents=True)
    out_nb = run_dir / spec.notebook
    started = time.monotonic()
    code = 0
    try:
        papermill.execute_notebook(
            str(notebooks_dir() / spec.notebook), str(out_nb),
            parameters={"target_url": target_url, "ca_file": ca_file, "insecure": insecure,
                        "profile": profile, "run_dir": str(run_dir),
                        "seed_fixtures": seed_fixtures, **params},
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
