"""A run: one scenario against one target, from preflight to the baseline record.

The scenario's notebook builds a :class:`Run` and calls one method per step: ``seed``,
``drive``, ``notes``, ``summary``, ``figures``, ``record``, ``check_thresholds``. The Run holds
everything in between (identity, parameters, fixtures, the driver's result, the requests frame,
the analysis, the verdicts), so the notebook holds nothing but parameters. It lives inside the
notebook kernel; ``workbench run`` (:func:`workbench.run.launcher.execute`) preflights, then has
papermill execute that notebook into ``runs/<run-id>/`` and renders the HTML report. Every file
in the run folder is free of secrets: the token reaches the driver process through its
environment (:meth:`Run.driver_env`).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import driver, scenarios, seed, telemetry
from workbench.analyse import analysis
from workbench.driver.launch import LiveLine
from workbench.errors import TargetExited, WorkbenchError
from workbench.jsonio import write_json
from workbench.paths import runs_dir
from workbench.report import calibration, reporting, view
from workbench.report.notebook import Facts, Figures, Tables
from workbench.run.kernel import TARGET_PID_ENV
from workbench.target import preflight
from workbench.telemetry import prometheus

PREFLIGHT_FILE = "preflight.json"  # what preflight found, so a run checks its target once
PREFLIGHT_SCHEMA_VERSION = 1
_DRIVER_TOKEN_ENV = "WORKBENCH_DRIVER_TOKEN"
# What the driver did, as the drive step shows it (the whole result is Run.result).
OUTCOME = ("executor", "status", "scheduled", "completed", "failed", "dropped", "iterations",
           "offered_rate", "achieved_rate", "error_rate", "valid", "invalid_reasons")


def new_run_id(scenario: str) -> str:
    """``<UTC stamp>_<scenario>_<8 hex>``: sortable by start, unique without coordination."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{scenario}_{secrets.token_hex(4)}"


def write_preflight(run_dir: Path, scenario: str, params: Mapping, identity: Mapping) -> None:
    """``preflight.json``: the identity preflight found for this run's scenario and parameters.
    The identity holds no secret (its DSN has no password)."""
    write_json(run_dir / PREFLIGHT_FILE, {
        "schema_version": PREFLIGHT_SCHEMA_VERSION, "scenario": scenario,
        "parameters": dict(params), "identity": dict(identity)})


def read_preflight(run_dir: Path, scenario: str, params: Mapping, url: str) -> dict | None:
    """The identity in ``run_dir``'s ``preflight.json`` if it was found for this scenario,
    these parameters and this target; None otherwise (then the run checks again)."""
    try:
        saved = json.loads((run_dir / PREFLIGHT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    identity = saved.get("identity") or {}
    fits = (saved.get("schema_version") == PREFLIGHT_SCHEMA_VERSION
            and saved.get("scenario") == scenario and saved.get("parameters") == dict(params)
            and identity.get("url") == url)
    return identity if fits else None


class Run:
    """One scenario against one target: preflight on creation, then one method per step.

    ``params`` override the named ``profile``'s values; a run whose parameters differ from it is
    recorded as ``custom`` with the differences. ``thresholds`` default to the scenario's.
    ``target``: a target resolved already (an instance ``workbench ab`` started), in place of
    ``target_url``, ``ca_file`` and ``insecure``.
    """

    def __init__(self, scenario: str, params: Mapping | None = None,
                 thresholds: Mapping | None = None, target_url: str | None = None,
                 ca_file: str | None = None, insecure: bool = False,
                 run_dir: str | Path | None = None, profile: str = "smoke",
                 seed_fixtures: bool = True, target: preflight.Target | None = None) -> None:
        self.scenario = scenarios.get(scenario)
        self.params = self.scenario.params_for(profile, params)
        facts = self.scenario.profile_of(profile, self.params)
        self.profile: str = facts["profile"]  # the profile named, or "custom"
        self.profile_base: str = facts["profile_base"]
        self.profile_differs: dict = facts["profile_differs"]
        self.threshold_spec = (self.scenario.default_thresholds(self.params)
                               if thresholds is None else dict(thresholds))
        self.thresholds = analysis.parse_thresholds(self.threshold_spec)
        self.seed_fixtures = seed_fixtures  # False: `workbench run all` seeded already
        self.target = target or self.scenario.target(self.params, target_url, ca_file, insecure)
        self._token = self.scenario.token(self.target)
        self.dir = Path(run_dir) if run_dir else runs_dir() / new_run_id(scenario)
        self.run_id = self.dir.name
        self.identity = read_preflight(self.dir, self.scenario.name, self.params,
                                       self.target.url) or self._preflight()
        self.fixtures: dict = {}
        self.result: dict | None = None  # the driver's result.json
        self.baseline: dict | None = None  # record.json, once written
        self._requests: analysis.Requests | None = None
        self._analysis: analysis.Analysis | None = None
        self._verdicts: pd.DataFrame | None = None
        self.target_pid = target_pid_from_env() or (
            self.target.started.pid if self.target.started else None)
        self.scrapes = prometheus.from_env()  # --scrape: Prometheus targets of the telemetry
        self.target_exit: str | None = None  # why the run failed: its server exited mid-run
        self._sampler: telemetry.TelemetrySampler | None = None
        self.telemetry_sidecar: dict | None = None  # telemetry.json, once the sampler stopped
        self._telemetry: pd.DataFrame | None = None
        self.drain: dict | None = None  # the backlog drain after the timed phase, if any
        self.calibration: dict | None = None  # the machine measured around the timed phase
        self.tables: dict | None = None  # the target database's tables as the load found them
        self._drain_curve: pd.DataFrame | None = None

    def _preflight(self) -> dict:
        """Check the target now (a notebook run by hand) and leave ``preflight.json``."""
        identity = self.scenario.check_target(self.target, self._token, self.params)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_preflight(self.dir, self.scenario.name, self.params, identity)
        return identity

    def __repr__(self) -> str:  # shown in the notebook: nothing secret in it
        head = (f"Run({self.scenario.name}, {self.run_id}, profile {self.profile}, "
                f"target={self.target.url} [{self.identity['kind']} {self.identity['version']} "
                f"{self.identity['commit']}])")
        return "\n".join([head, *(f"warning: {w}" for w in self.identity["warnings"])])

    def seed(self, params: Mapping | None = None) -> pd.Series:
        """Create this scenario's fixtures, or (after ``workbench run all`` seeded them) undo
        what earlier runs changed; returns what was seeded and how fast. ``params``: other
        parameters than the run's (a capacity step's, its fixture sized to its load)."""
        if not self.scenario.needs_database:
            return Facts(self.fixtures, name="seeded", dtype=object)
        if not self.target.dsn:
            raise WorkbenchError(f"no database to seed: export {preflight.DSN_ENV}=<DSN> "
                                 "for the target's database")
        load = self.scenario.seed if self.seed_fixtures else self.scenario.reset
        self.fixtures = load(self.target.dsn, self.params if params is None else params)
        return Facts(self.fixtures, name="seeded", dtype=object)

    def drive(self) -> pd.Series:
        """Drive the load in the driver's own process; returns what it did (:data:`OUTCOME`)
        and the machine's calibration, read before the driver starts and after the timed phase
        (and the drain), outside the telemetry's window."""
        spec = self.drive_spec()
        live = LiveLine()  # one updating line here; nothing of it in the report

        self.tables = table_sizes(self.target.dsn)  # what the load found, before it wrote
        self.calibration = calibration.section(calibration.measure(self.target.dsn), None)

        def before_load() -> None:  # while the driver's processes start
            self.start_telemetry()

        try:
            try:
                self.result = driver.drive(spec, self.dir,
                                           env=self.driver_env(), echo=live,
                                           while_starting=before_load)
            finally:
                live.close()
            self.target_exit = preflight.exit_report(self.target)
            if self.target_exit:  # measured to the end and recorded; the run fails at its end
                print(f"error: {self.target_exit}", file=sys.stderr)
            elif self.scenario.backlog and self.scenario.backlog.timeout_s(self.params) > 0:
                self.drain = self.drain_backlog(self.scenario.backlog.timeout_s(self.params))
        finally:
            self.stop_telemetry()
        self.calibration = calibration.section(self.calibration["before"],
                                               calibration.measure(self.target.dsn))
        self._requests = self._analysis = self._verdicts = None  # of an earlier drive
        self._telemetry = None
        return Facts({k: self.result[k] for k in OUTCOME if k in self.result}
                     | {"calibration": calibration.describe([{"calibration": self.calibration}])},
                     name=self.scenario.name, dtype=object)

    def drive_spec(self, params: Mapping | None = None) -> driver.DriveSpec:
        """What the driver is to drive against this run's target: the scenario at the run's
        parameters, or at ``params`` (a capacity step's). The token is not in it: the driver
        reads it from :meth:`driver_env`."""
        params = self.params if params is None else params
        return driver.DriveSpec(
            base_url=self.target.url, templates=self.scenario.templates(params),
            **self.scenario.executor_settings(params),
            ca_file=self.target.ca_file, insecure=self.target.insecure,
            token_env=_DRIVER_TOKEN_ENV, scenario=self.scenario.name)

    def driver_env(self) -> dict[str, str]:
        """The environment the driver's processes get beside :meth:`drive_spec`: the token,
        never written to a file."""
        return {_DRIVER_TOKEN_ENV: self._token}

    def start_telemetry(self) -> None:
        """Start sampling the server side (PostgreSQL, certctl's jobs, host, target process)
        into this run's folder. A sampler that cannot start is a warning, never a failed run."""
        if self._sampler is not None and self._sampler.running:
            return
        try:
            self._sampler = telemetry.TelemetrySampler(
                self.dir, dsn=self.target.dsn, target_url=self.target.url,
                target_pid=self.target_pid, scrapes=self._scrape_targets()).start()
            if self._sampler.error:
                print(f"warning: telemetry: {self._sampler.error}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - telemetry never breaks the run it watches
            self._sampler = None
            print(f"warning: telemetry not sampled: {type(exc).__name__}: {exc}",
                  file=sys.stderr)

    def _scrape_targets(self) -> list[dict]:
        """The ``--scrape`` targets, ``certctl`` as the target's own metrics endpoint (with its
        token and TLS settings; the token goes to the target it is already sent to)."""
        return [{"name": s["name"], "url": self.target.url.rstrip("/") + prometheus.CERTCTL_PATH,
                 "token": self._token, "ca_file": self.target.ca_file,
                 "insecure": self.target.insecure} if s["url"] == prometheus.CERTCTL else s
                for s in self.scrapes]

    def stop_telemetry(self) -> dict | None:
        """Stop the sampler (``telemetry.parquet`` and ``telemetry.json`` are then written);
        returns the sidecar, or None when nothing was sampled."""
        if self._sampler is None:
            return self.telemetry_sidecar
        sampler, self._sampler = self._sampler, None
        try:
            self.telemetry_sidecar = sampler.stop()
        except Exception as exc:  # noqa: BLE001 - the run's own results matter more
            print(f"warning: telemetry did not stop cleanly: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self.telemetry_sidecar = telemetry.read_sidecar(self.dir)
        return self.telemetry_sidecar

    def telemetry(self) -> pd.DataFrame | None:
        """This run's telemetry samples (long format), or None when none were taken."""
        if self._telemetry is None:
            try:
                self._telemetry = telemetry.load_telemetry(self.dir)
            except WorkbenchError:
                return None
        return self._telemetry

    def telemetry_windows(self) -> pd.DataFrame | None:
        """Per-window mean/min/max of every telemetry metric, on the latency windows' edges."""
        samples = self.telemetry()
        if samples is None or samples.empty or not len(self.requests()):
            return None
        analysed = self.analyse()
        n_windows = int(np.ceil(float(self.params["duration_s"]) / analysed.window_s))
        return telemetry.telemetry_windows(samples, self.requests().t0_ns,
                                           analysed.window_s, n_windows)

    def telemetry_section(self) -> dict | None:
        """The record's ``telemetry``: per-window summaries and what each source did."""
        sidecar = self.telemetry_sidecar or telemetry.read_sidecar(self.dir)
        if sidecar is None:
            return None if self.drain is None else {"window_s": None, "sources": {},
                                                    "drain": self.drain, "sampler": None}
        windows = self.telemetry_windows()
        scraped = [name for name, s in (sidecar.get("sources") or {}).items()
                   if s.get("kind") == "prometheus"]
        section = (telemetry.record_summary(windows, self.analyse().window_s, scraped)
                   if windows is not None else {"window_s": None, "sources": {}})
        section["drain"] = self.drain
        section["sampler"] = {
            "status": sidecar.get("status"), "interval_s": sidecar.get("interval_s"),
            "ticks": sidecar.get("ticks"), "late_ticks": sidecar.get("late_ticks"),
            "sources": {name: {k: s.get(k) for k in ("enabled", "reason", "samples", "failed")}
                        | {k: s[k] for k in ("kind", "url") if k in s}  # a scrape's, no token
                        for name, s in (sidecar.get("sources") or {}).items()}}
        return section

    def drain_backlog(self, timeout_s: float) -> dict:
        """After the timed phase: sample the jobs of the scenario's backlog until none is left
        to drain or ``timeout_s`` passes; what was enqueued, drained per second, time to drain
        and what that means for this target (its :class:`~workbench.scenarios.Backlog`)."""
        backlog = self.scenario.backlog
        if backlog is None:
            raise WorkbenchError(f"{self.scenario.name} leaves no backlog to drain")
        out: dict = {"timeout_s": timeout_s, "enqueued": backlog.enqueued(self.result or {}),
                     "waited": False, "drained": None, "seconds": None, "drained_per_s": None,
                     "backlog_at_start": None, "backlog_at_end": None, "curve": None}
        if not self.target.dsn:
            return out | {"meaning": "no database DSN: the backlog could not be read"}
        try:
            source = telemetry.JobsSource(self.target.dsn, certificate_like=backlog.jobs_like)
            try:
                sampled = source.sample()
            finally:
                source.close()
            counts = {k.removeprefix("jobs."): int(v) for k, v in sampled.items()
                      if k != "jobs.total"}
            wait, meaning = backlog.plan(self.target.kind, counts)
            out |= {"jobs_at_start": counts, "meaning": meaning}
            if not wait:
                return out
            left = sum(counts.get(s, 0) for s in backlog.statuses)
            print(f"[drain] waiting up to {timeout_s:g} s for {left} "
                  f"{'/'.join(backlog.statuses)} jobs", flush=True)
            drain = telemetry.wait_for_drain(self.target.dsn, timeout_s, interval_s=1.0,
                                             statuses=backlog.statuses,
                                             certificate_like=backlog.jobs_like)
        except Exception as exc:  # noqa: BLE001 - the timed phase's results are kept
            return out | {"meaning": f"the drain could not be sampled: {type(exc).__name__}: "
                                     f"{seed.redact_dsn(str(exc)) if '://' in str(exc) else exc}"}
        self._drain_curve = drain.samples
        curve = drain.samples
        return out | {
            "waited": True, "drained": drain.drained, "seconds": round(drain.seconds, 3),
            "drained_per_s": drain.drained_per_s, "backlog_at_start": drain.initial_backlog,
            "backlog_at_end": drain.final_backlog, "failures": drain.failures,
            "curve": None if curve.empty else {
                "t_s": [round(float(t), 3) for t in curve["elapsed_s"]],
                "backlog": [int(b) for b in curve["backlog"]]}}

    def _driven(self) -> dict:
        if self.result is None:
            raise WorkbenchError("drive() has not run; nothing to analyse")
        return self.result

    def requests(self) -> analysis.Requests:
        """This run's requests, streamed from ``requests.parquet`` a row group at a time
        (:func:`workbench.analyse.analysis.load_requests` gives them as one frame)."""
        self._driven()
        if self._requests is None:
            self._requests = analysis.open_requests(self.dir)
        return self._requests

    def analyse(self) -> analysis.Analysis:
        """Percentiles with intervals, load, errors, windows and validity of this run, once."""
        if self._analysis is None:
            result = self._driven()
            self._analysis = analysis.analyse(self.requests(), self.scenario.name,
                                              result.get("offered_rate"),  # None: closed loop
                                              float(self.params["duration_s"]),
                                              reported=result)
        return self._analysis

    def notes(self) -> Tables:
        """The scenario's own tables, from what the responses said (bulk totals, 429 kinds,
        ACME problems, client costs)."""
        result = self._driven()
        return Tables({note.title: note.table(result) for note in self.scenario.notes})

    def measured(self) -> reporting.Measured:
        """What this run measured, as the report path reads it
        (:mod:`workbench.report.reporting`)."""
        result = self._driven()
        return reporting.Measured(
            result, self.requests(), self.analyse(), self.verdicts(), self.title(),
            warnings=self.scenario.warnings(result), warnings_title=self.scenario.warnings_title,
            telemetry=self.telemetry(), drain=self.drain, drain_curve=self._drain_curve)

    def summary(self) -> Tables:
        """Latency percentiles, load, errors, validity, the driver's own timing, windows
        (:func:`workbench.report.reporting.tables`)."""
        return Tables(reporting.tables(self.measured()))

    def title(self) -> tuple[str, str, str]:
        """Scenario, target label and date for figure titles."""
        return reporting.title(self.scenario.name, self.identity | {"url": self.target.url},
                               (self.result or {}).get("started_at"))

    def figures(self) -> Figures:
        """Latency by percentile, its distribution, latency over time, throughput and errors,
        and the telemetry and drain when the run has them (:data:`workbench.report.reporting
        .FIGURES`)."""
        return reporting.figures(self.measured())

    def verdicts(self) -> pd.DataFrame:
        """One row per threshold: metric, expression, measured value, ok."""
        if self._verdicts is None:
            self._verdicts = analysis.evaluate_thresholds(self.requests(), self.thresholds)
        return self._verdicts

    def record(self) -> pd.Series:
        """Write ``record.json``, this run's baseline record, once, and its CI-native exports.

        The database facts are read from the target's database now, with the password never
        leaving the DSN. Beside the record go ``junit.xml``, ``latency.hgrm``, ``latency.hlog``
        and, in GitHub Actions, the step summary (:func:`workbench.report.exports.write_all`).
        Returns where it went and its verdicts; the record is ``baseline``.
        """
        r, m = self._driven(), self.measured()
        context = reporting.record_context(
            self.run_id, self.scenario.name, self.params,
            reporting.target_facts(self.identity, ("url", "kind", "version", "commit",
                                                   "modified", "dsn")),
            r, self.scenario.executor_settings(self.params)["max_vus"],
            profile={"profile": self.profile, "profile_base": self.profile_base,
                     "profile_differs": self.profile_differs},
            run={"target_exit": self.target_exit},
            database=database_facts(self.target.dsn, self.tables),
            fixtures={"sizes": self.scenario.fixture_sizes(self.params),
                      "seeded": self.fixtures, "warnings": m.warnings},
            telemetry=self.telemetry_section(), calibration=self.calibration)
        rec = reporting.record(m, context)
        rec["passed"] = rec["passed"] and not self.target_exit  # its server died: a failed run
        path = reporting.write(self.dir, rec, m, exclusive=True)
        self.baseline = rec
        return Facts({"record": str(path), "profile": rec["profile"],
                      "valid": rec["validity"]["valid"], "passed": rec["passed"]},
                     name=self.run_id, dtype=object)

    def verdict(self) -> view.Verdict:
        """The verdict a report opens on: passed or breached, valid or invalid and why, target,
        load, and per endpoint p50/p95/p99 against the thresholds. Needs :meth:`record`."""
        if self.baseline is None:
            raise WorkbenchError("record() has not run; the verdict is read from the record")
        return view.Verdict(self.baseline)

    def check_thresholds(self) -> pd.DataFrame:
        """The threshold verdicts; a breach raises
        :class:`~workbench.analyse.analysis.ThresholdBreach` (after showing the table), so
        papermill, ``workbench run`` and CI exit non-zero. Call it after :meth:`record`, so a
        breached run keeps its record. A run whose target (started by the workbench) exited mid-run
        raises with the tail of its log, whatever the thresholds say
        (:class:`~workbench.errors.TargetExited`)."""
        verdicts = self.verdicts()
        if not verdicts["ok"].all() or self.target_exit:
            from IPython.display import display

            display(verdicts)  # the raise below ends the cell before it could show them
            if self.target_exit:
                raise TargetExited(self.target_exit)
            analysis.assert_thresholds(verdicts)
        return verdicts


def target_pid_from_env() -> int | None:
    """The target's process id from ``WORKBENCH_TARGET_PID`` (``--target-pid``), or None."""
    text = os.environ.get(TARGET_PID_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise WorkbenchError(f"{TARGET_PID_ENV} must be a process id, got {text!r}")
    return int(text)


DB_SETTINGS = ("shared_buffers", "max_connections", "synchronous_commit")


TABLE_SIZES = """
SELECT c.relname, coalesce(s.n_live_tup, greatest(c.reltuples, 0)::bigint),
       coalesce(s.n_dead_tup, 0), pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname"""


def table_sizes(dsn: str | None) -> dict | None:
    """Every table of the target database's ``public`` schema (certctl's): live and dead rows
    (the statistics collector's counts: estimates, which may trail an open session's last
    seconds of writes; a ``count(*)`` of millions of rows would cost each run seconds) and
    bytes with its indexes and TOAST, or None without
    a database or when it cannot be read. A load's latency depends on them: certctl's
    ``audit_events`` gains a row a request and was seen at 3.6 million rows, 1.5 GB, and dead
    rows left by a reseed are vacuumed during the next load; :func:`workbench.compare.runs`
    names the tables two sides' databases differ in."""
    if not dsn:
        return None
    import sqlalchemy as sa

    try:
        engine = seed.engine_for(dsn, allow_remote=True)  # read-only
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(TABLE_SIZES)).all()
        finally:
            engine.dispose()
    except (WorkbenchError, sa.exc.SQLAlchemyError):
        return None
    return {name: {"rows": int(live), "dead_rows": int(dead), "bytes": int(size)}
            for name, live, dead, size in rows}


def database_facts(dsn: str | None, tables: Mapping | None = None) -> dict | None:
    """``server_version`` and key settings read from the target's database, or None without one;
    ``tables``: its tables as the load found them (:func:`table_sizes`, read before the load).

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
    return {"server_version": facts.pop("server_version"), "settings": facts,
            "tables_before_load": dict(tables) if tables else None}
