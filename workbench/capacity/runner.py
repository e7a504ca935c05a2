"""Capacity search against a real target: each step one driver run, judged, and the result file.

:mod:`workbench.capacity.search` decides from :class:`~workbench.capacity.search.Step` values; this
module makes them: step k drives the spec at one load into ``<out>/steps/<kk>_<load>/`` (a complete
run folder: ``spec.json``, ``requests.parquet``, ``result.json``) and :func:`judge` turns it into a
step. ``capacity.json`` (:func:`write_capacity`) is rewritten after every step, so an
interrupted search keeps every step it measured.

Which signs are whose (:func:`judge`):

- **the target's** (the step fails, the search brackets below it): a threshold broken on the
  step's requests; errors over the limit; arrivals dropped because every VU waited on the
  target; achieved throughput under 95 % of the offered rate.
- **the driver's** (the step is *driver bound*: it runs again, with more driver processes
  under ``--auto-shard``, else the search stops and reports a lower bound only), judged by
  the driver's effect on the step rather than by a plain run's strict validity rule: its CPU
  at 90 % of a core or more; a schedule-lag p99 material to the threshold under test (above
  2 % of the tightest latency limit, or of the step's own p99 without one; never under the
  plain run's 2 ms); or arrivals dropped while its CPU peaked near a core (the drops, and a
  short achieved rate, are then its own). A latency threshold broken while the driver was late
  counts against the target only when it breaks on the service time less the lag p99 too (from
  the send, without the driver's lateness; less the lag, as a driver kept off its core reads
  responses as late as it sends): a late driver adds its lag to every response time. Each
  step records the rule that judged it (``driver_rule``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench import exitcodes, jsonio
from workbench.analyse import analysis
from workbench.analyse.analysis import Threshold
from workbench.capacity import search
from workbench.capacity.search import (
    AGENTS,
    CAPACITY_FILE,
    VUS,
    Capacity,
    SearchOptions,
    Step,
    describe_fixture,
)
from workbench.driver.result import (
    MAX_CPU_FRACTION,
    MAX_SCHEDULE_LAG_P99_MS,
    MIN_ACHIEVED_RATIO,
    DriveResult,
    load_result,
)
from workbench.driver.spec import DriveSpec, executor_type
from workbench.errors import WorkbenchError
from workbench.report import reporting

STEPS_DIR = "steps"
FIGURES = tuple(reporting.CAPACITY_FIGURES)  # beside capacity.json
DEFAULT_MAX_ERROR_RATE = 0.01  # errors over 1 % of sent requests fail a step
LAG_SHARE = 0.02  # a capacity step's schedule lag is material above 2 % of what judges it
_DURATION_METRIC = "http_req_duration"


def parse_threshold_options(values: list[str]) -> list[Threshold]:
    """``--threshold`` values (:func:`workbench.analyse.analysis.threshold_options`), parsed."""
    try:
        return analysis.parse_thresholds(analysis.threshold_options(values))
    except WorkbenchError as exc:
        raise WorkbenchError(f"--threshold: {exc}") from None


def step_spec(spec: DriveSpec, load: float, unit: str, step_s: float) -> DriveSpec:
    """``spec`` at one step's load for ``step_s`` seconds, as its executor raises the load:
    a constant arrival rate at ``load`` requests/s (iterations/s = load / requests per
    iteration), constant VUs at ``load`` VUs."""
    kind = executor_type(spec)
    if kind.capacity_unit != unit:
        raise WorkbenchError(f"a capacity search in {unit} cannot raise the load of a "
                             f"{spec.kind} spec (it raises {kind.capacity_unit or 'none'})")
    return replace(spec, **kind.spec_at_load(spec, load), duration_s=step_s)


def exit_code(verdict: str) -> int:
    """A capacity search's exit code, for ``run`` and ``drive`` alike: 0 when it measured the
    target (a knee, or every step passing), else the breach code, as a breached threshold:
    no capacity was measured (driver bound, or the first step failed)."""
    return exitcodes.verdict(verdict in search.MEASURED)


def lag_allowance(thresholds: list[Threshold], p99: float | None) -> tuple[float, str]:
    """The schedule-lag p99 a capacity step tolerates, and its rule in words. Lag adds to
    every response time measured from the intended start, so it matters in proportion to what
    the step is judged by: the tightest latency limit, or without one the step's own p99."""
    limits = [limit for _, limit in latency_limits(thresholds)]
    if limits:
        reference, of = min(limits), f"the tightest latency limit ({min(limits):g} ms)"
    else:
        reference, of = p99 or 0.0, f"the step's p99 ({p99 or 0:.3g} ms)"
    allowed = max(MAX_SCHEDULE_LAG_P99_MS, LAG_SHARE * reference)
    return allowed, (f"capacity step: schedule-lag p99 up to {allowed:.3g} ms ({LAG_SHARE:.0%} "
                     f"of {of}, at least {MAX_SCHEDULE_LAG_P99_MS:g} ms), driver CPU under "
                     f"{MAX_CPU_FRACTION:.0%} of a core, drops the target's only while the "
                     f"driver's CPU stayed under {MAX_CPU_FRACTION:.0%}")


def _driver_signs(result: DriveResult, allowed_lag_ms: float) -> tuple[list[str], bool]:
    """What says the driver, not the target, set the pace; and whether the drops (and a short
    achieved rate) are the driver's: its CPU was the limit for the step or for a second of it."""
    signs = []
    driver = result["driver"]
    spin = driver["cpu_fraction_includes_spin"]  # a spinning timer's CPU is not load
    cpu, peak = driver["cpu_fraction"], driver.get("cpu_peak_fraction") or 0.0
    cpu_bound = not spin and cpu >= MAX_CPU_FRACTION
    if cpu_bound:
        signs.append(f"driver CPU {cpu:.0%} of a core")
    lag = result["schedule_lag_ms"]["p99"]
    if result["offered_rate"] is not None and lag is not None and lag > allowed_lag_ms:
        signs.append(f"driver schedule-lag p99 {lag:.2f} ms > {allowed_lag_ms:.3g} ms")
    busy = cpu_bound or (not spin and peak >= MAX_CPU_FRACTION)
    if busy and not cpu_bound and result["dropped"]:
        signs.append(f"{result['dropped']} arrivals dropped while the driver's CPU peaked at "
                     f"{peak:.0%} of a core")
    return signs, busy


def judge(run_dir: Path, load: float, thresholds: list[Threshold],
          max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE) -> Step:
    """One step's decision from its run folder (see the module doc for whose sign is whose)."""
    result = load_result(run_dir)
    requests = analysis.load_requests(run_dir)
    lat = result["latency_ms"]
    allowed_lag, rule = lag_allowance(thresholds, lat["p99"])
    driver, driver_drops = _driver_signs(result, allowed_lag)
    target: list[str] = []
    verdicts = analysis.evaluate_thresholds(requests, thresholds)
    if driver:  # the same thresholds on what the target alone took: the service time, less
        # the lag (a driver starved of its core reads responses as late as it sends)
        lag = result["schedule_lag_ms"]["p99"] or 0.0
        service = analysis.evaluate_thresholds(
            requests.assign(latency_ms=(requests["service_ms"] - lag).clip(lower=0.0)),
            thresholds)
    for i, row in enumerate(verdicts.itertuples()):
        if row.ok:
            continue
        if driver and thresholds[i].column == "latency_ms" and service["ok"].iloc[i]:
            continue  # the driver's lateness broke it, not the target
        measured = "no samples" if row.value != row.value else f"measured {row.value:.4g}"
        target.append(f"{row.metric} {row.threshold} ({measured})")
    rate = result["error_rate"]
    if max_error_rate is not None and rate is not None and rate > max_error_rate:
        target.append(f"error rate {rate:.2%} > {max_error_rate:.2%}")
    if result["status"] != "completed":
        target.append(f"run {result['status']}")
    if not driver_drops:  # a driver out of CPU drops and falls short on its own account
        if result["dropped"]:
            target.append(f"{result['dropped']} arrivals dropped (all "
                          f"{result['driver']['max_vus']} VUs waiting on the target)")
        offered, achieved = result["offered_rate"], result["achieved_rate"]
        if offered and achieved < MIN_ACHIEVED_RATIO * offered:
            target.append(f"achieved {achieved:.1f} req/s < {MIN_ACHIEVED_RATIO:.0%} of "
                          f"offered {offered:.1f}")
    served = requests[~requests["dropped"] & ~requests["failed"]]
    span_s = ((served["end_ns"].max() - requests["intended_ns"].min()) / 1e9
              if len(served) else 0.0)
    return Step(load=load, achieved_rate=result["achieved_rate"], p50=lat["p50"],
                p95=lat["p95"], p99=lat["p99"], passed=not target and not driver,
                valid=not driver, failed=tuple(target or driver),
                driver_bound=bool(driver) and not target,
                requests=result["completed"] + result["failed"], errors=result["failed"],
                run_dir=str(run_dir),
                throughput=len(served) / span_s if span_s > 0 else None,
                shards=result["driver"].get("shards"),
                schedule_lag_p99=result["schedule_lag_ms"]["p99"],
                driver_cpu=result["driver"]["cpu_fraction"], driver_rule=rule)


def step_dir_name(index: int, load: float, unit: str) -> str:
    """``03_400rps``, ``02_8vus`` or ``04_2000agents``: the steps sort in the order they ran."""
    suffix = {VUS: "vus", AGENTS: "agents"}.get(unit, "rps")
    return f"{index:02d}_{load:g}{suffix}"


def capacity_document(result: Capacity, context: Mapping[str, Any]) -> dict:
    """``capacity.json``: the search (:meth:`Capacity.to_dict`), its sentence and context."""
    return result.to_dict() | {"sentence": result.sentence(), **context}


def write_capacity(out: Path, result: Capacity, context: Mapping[str, Any]) -> Path:
    """Write ``<out>/capacity.json``; returns its path."""
    path = Path(out) / CAPACITY_FILE
    jsonio.write_json(path, capacity_document(result, context))
    return path


def driver_cores(base_url: str) -> int:
    """The most driver processes worth starting here: one per core this process may use,
    less one for a target on this host (a driver process on every core, at real-time
    priority, leaves the target only what they do not take)."""
    from workbench.driver.priority import target_is_local

    cores = len(os.sched_getaffinity(0))
    return max(1, cores - 1) if target_is_local(base_url) else cores


def search_steps(spec: DriveSpec | Callable[[float, float], DriveSpec], out: Path,
                 thresholds: list[Threshold], options: SearchOptions, *,
                 max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE,
                 context: Mapping[str, Any] | Callable[[Capacity], Mapping[str, Any]]
                 | None = None,
                 env: dict[str, str] | None = None, echo: Callable[[str], None] = print,
                 shards: int | None = None, auto_shard: bool = False,
                 prepare: Callable[[float, float], dict | None] | None = None,
                 drive: Callable[..., Any] | None = None) -> Capacity:
    """Search the capacity, each step a run in ``<out>/steps/``; write capacity.json.

    ``spec`` is the drive spec (each step: :func:`step_spec`) or ``spec(load, step_s)``,
    a scenario's spec at a load. ``prepare(load, step_s)`` runs before every step (the
    fixture that load needs: seeded, grown or reset) and returns what the step measured with.
    ``context`` (or ``context(result)``) goes into capacity.json beside the search.
    ``shards``: driver processes per step (None: as many as the rate needs); ``auto_shard``:
    a driver-bound step runs again with twice the processes, up to :func:`driver_cores`.
    ``drive`` is :func:`workbench.driver.drive` unless a test passes another.
    """
    if drive is None:
        from workbench.driver import drive
    options.validate()
    spec_at = spec if callable(spec) else (
        lambda load, seconds: step_spec(spec, load, options.unit, seconds))
    first = spec_at(options.first, options.step_s)
    first.validate()  # bad input stops before any load
    most = driver_cores(first.base_url)
    out = Path(out)
    numbers = itertools.count(1)
    done: list[Step] = []
    driver = {"shards": shards}

    def context_of(result: Capacity) -> Mapping[str, Any]:
        return dict((context(result) if callable(context) else context) or {})

    def run_step(load: float, step_s: float) -> Step:
        n = next(numbers)
        fixture = prepare(load, step_s) if prepare is not None else None
        run_dir = out / STEPS_DIR / step_dir_name(n, load, options.unit)
        drive(spec_at(load, step_s), run_dir, env=env, echo=lambda line: None,
              shards=driver["shards"])
        step = replace(judge(run_dir, load, thresholds, max_error_rate), fixture=fixture or None)
        done.append(step)
        partial = Capacity(options.unit, "in progress", None, (None, None), None, options,
                           list(done))
        write_capacity(out, partial, context_of(partial))  # an interrupted search keeps it
        return step

    def lift(step: Step) -> bool:
        have = step.shards or 1
        if have >= most:
            echo(f"[capacity] the driver is the limit with {have} process(es), one per core "
                 "not left to a target on this host; load from another host to go further")
            return False
        driver["shards"] = min(most, 2 * have)
        echo(f"[capacity] driver bound at {search.fmt(step.load)} {options.unit}: going on "
             f"with {driver['shards']} driver processes (--auto-shard)")
        return True

    result = search.search(run_step, options, echo=echo,
                             lift_driver=lift if auto_shard else None)
    write_capacity(out, result, context_of(result))
    write_figures(out, capacity_document(result, context_of(result)), thresholds)
    return result


def latency_limits(thresholds: list[Threshold]) -> list[tuple[str, float]]:
    """The thresholds a hockey stick can draw: percentiles of the response time, in ms."""
    return [(f"{t.metric} {t.expression}", t.limit) for t in thresholds
            if t.column == "latency_ms" and t.agg in ("p", "avg", "med", "max")]


def write_figures(out: Path, doc: Mapping[str, Any], thresholds: list[Threshold]) -> list[Path]:
    """A capacity document's figures (:data:`workbench.report.reporting.CAPACITY_FIGURES`), as PNG
    in ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; a notebook shows them with its own backend
    import matplotlib.pyplot as plt

    title = (doc.get("scenario") or "drive", doc.get("target_label") or doc.get("target_url")
             or "", doc.get("date", ""))
    paths = []
    for file, draw in reporting.CAPACITY_FIGURES.items():
        fig = draw(doc, latency_limits(thresholds), title)
        fig.savefig(Path(out) / file, dpi=110)
        plt.close(fig)
        paths.append(Path(out) / file)
    return paths



# -- a scenario's capacity, in the notebook kernel -------------------------------------------

STEPS_TITLE = "Every step, in the order it ran"
DRIVER_OPTIONS = ("shards", "auto_shard")  # how each step is driven, beside SearchOptions


def capacity_meaning(scenario, params: Mapping, result: Capacity) -> str | None:
    """What the scenario says its capacity means (a fleet, a renewal rate), in the words of its
    ``capacity_text`` hook, from the step that measured it: never a fixture larger than
    measured."""
    low, step = result.interval[0], result.answer_step()
    if scenario.capacity_text is None or low is None or step is None:
        return None
    measured = scenario.at_load(params, low, step.step_s or result.options.step_s)
    return scenario.capacity_text(measured, low, result.verdict != search.KNEE)


class ScenarioCapacity:
    """A scenario's capacity search, one method per notebook cell: ``seed``, ``search``,
    ``verdict``, ``figures``, ``steps``. Preflight is the :class:`workbench.run.scenario.Run`'s
    (once, read from ``preflight.json``). Each step runs the scenario at its load
    (:meth:`~workbench.scenarios.Scenario.at_load`) on the fixture that load needs (the
    scenario's ``sized_to_load`` hook: a fleet is seeded to the step's size, grown or shrunk
    between steps), and a fixture the scenario changes is reset between runs of one size. The
    thresholds are the scenario's own (or the ones given); the search raises the scenario's
    :attr:`~workbench.scenarios.Scenario.capacity_unit`: request rate (open loop), virtual
    users (closed loop) or agents (an agent fleet)."""

    def __init__(self, scenario: str, params: Mapping | None = None,
                 thresholds: Mapping | None = None, target_url: str | None = None,
                 ca_file: str | None = None, insecure: bool = False,
                 run_dir: str | Path | None = None, profile: str = "smoke",
                 options: Mapping | None = None) -> None:
        from workbench.run.scenario import Run

        self.run = Run(scenario, params, thresholds, target_url, ca_file, insecure, run_dir,
                       profile)
        given = dict(options or {})
        self.driver = {k: given[k] for k in DRIVER_OPTIONS if given.get(k) is not None}
        self.options = scenario_options(self.run.scenario, self.run.params, given)
        self.result: Capacity | None = None
        self._sizes: dict | None = None  # the fixture as last seeded
        self._steps = 0
        self.tables: dict | None = None  # the target database's tables as the search found it

    def __repr__(self) -> str:
        driver = ", ".join(f"{k}={v}" for k, v in self.driver.items()) or "shards as needed"
        return f"capacity search of {self.run!r}\n{self.options}\ndriver: {driver}"

    def step_params(self, load: float, step_s: float) -> dict:
        """The scenario's parameters at one step: its load, its duration, its fixture."""
        return self.run.scenario.at_load(self.run.params, load, step_s)

    def spec(self, load: float, step_s: float) -> DriveSpec:
        return self.run.drive_spec(self.step_params(load, step_s))

    def seed(self):
        """The fixture the first step needs (sized to its load by the scenario); the search
        grows or shrinks it to each later step's load."""
        params = self.step_params(self.options.first, self.options.step_s)
        facts = self.run.seed(params)
        self._sizes = self.run.scenario.fixture_sizes(params)
        return facts

    def prepare(self, load: float, step_s: float) -> dict:
        """Before a step: the fixture sized to its load (seeded when the size changes, reset
        when the scenario changes it and a step already ran), then settled; returns its
        sizes."""
        from workbench import seed

        r = self.run
        params = self.step_params(load, step_s)
        sizes = r.scenario.fixture_sizes(params)
        if r.scenario.needs_database:
            if sizes != self._sizes:
                seeded = r.seed(params)
                self._sizes = sizes
                print(f"[capacity] seeded {describe_fixture(sizes)} in "
                      f"{float(seeded.get('seconds', 0)):.1f} s", flush=True)
            elif self._steps and r.scenario.fixture_reset is not None:
                r.scenario.reset(r.target.dsn, params)
            # every step starts from a settled database, whatever the step before it left
            took = seed.settle(r.target.dsn)
            print("[capacity] settled the database: " + ", ".join(
                f"{k} {v if isinstance(v, str) else f'{v:.1f} s'}" for k, v in took.items()),
                flush=True)
        self._steps += 1
        return sizes

    def search(self) -> str:
        """Run the steps (each printed as it is judged); returns the conclusion."""
        from workbench.report import calibration

        r = self.run
        started_at = _now()
        from workbench.run.scenario import table_sizes

        # a knee moves with the database (certctl's audit_events grows a row a request): its
        # tables as the search found them, before any step wrote
        self.tables = table_sizes(r.target.dsn)
        # the machine before the first step and after the last: once a search, not per step
        before = calibration.measure(r.target.dsn)
        base = {"kind": "scenario", "scenario": r.scenario.name, "run_id": r.run_id,
                "profile": r.profile, "parameters": r.params,
                "thresholds": r.threshold_spec, "target_url": r.target.url,
                "target": {k: r.identity.get(k) for k in ("kind", "version", "commit")},
                "target_label": r.title()[1], "date": _now(), "driver": self.driver}
        self.result = search_steps(
            self.spec, r.dir, r.thresholds, self.options,
            context=lambda result: base | {
                "fleet": capacity_meaning(r.scenario, r.params, result)},
            env=r.driver_env(), echo=lambda line: print(line, flush=True),
            shards=self.driver.get("shards"), auto_shard=bool(self.driver.get("auto_shard")),
            prepare=self.prepare)
        machine = calibration.section(before, calibration.measure(r.target.dsn))
        self.write_record(started_at, machine)
        print(f"machine calibration: {calibration.describe([{'calibration': machine}])}",
              flush=True)
        return self.conclusion()

    def write_record(self, started_at: str, calibration: dict | None = None) -> Path:
        """``capacity-record.json``: the search as a baseline-like record, for
        ``workbench baseline commit``; ``calibration`` is the machine's, read around it."""
        import json

        from workbench.capacity import records

        r = self.run
        target = reporting.target_facts(r.identity, ("url", "kind", "version", "commit",
                                                     "modified"))
        doc = json.loads((r.dir / CAPACITY_FILE).read_text())
        record = records.build(doc, {
            "run_id": r.run_id, "scenario": r.scenario.name, "profile": r.profile,
            "parameters": r.params, "target": target, **reporting.environment(),
            "run": {"started_at": started_at, "ended_at": _now()},
            "database": {"tables_before_search": self.tables} if self.tables else None,
            **({"calibration": calibration} if calibration else {})})
        path = r.dir / records.CAPACITY_RECORD_FILE
        jsonio.write_json(path, record)
        return path

    def _searched(self) -> Capacity:
        if self.result is None:
            raise WorkbenchError("search() has not run")
        return self.result

    def conclusion(self) -> str:
        """``capacity: N req/s ...``, how it repeated, and what it means (the fleet)."""
        result = self._searched()
        lines = [result.sentence(), result.spread_line(),
                 capacity_meaning(self.run.scenario, self.run.params, result)]
        return "\n".join(line for line in lines if line)

    def verdict(self):
        """What the report opens on: the capacity, what fails first and at what load, the
        fixture it was measured with, how it repeated (:class:`workbench.report.view
        .CapacityVerdict`)."""
        import json

        from workbench.report.view import CapacityVerdict

        self._searched()
        return CapacityVerdict(json.loads((self.run.dir / CAPACITY_FILE).read_text()))

    def steps(self):
        """Every step: load, length, fixture, achieved and served rates, p50/p95/p99, passed,
        the driver's lag and CPU, and why a step failed (a table titled as such; its frame is
        ``steps()[STEPS_TITLE]``)."""
        import pandas as pd

        from workbench.report.notebook import Tables

        doc = self._searched().to_dict()
        several = doc["options"]["searches"] > 1
        return Tables({STEPS_TITLE: pd.DataFrame([
            {**({"search": s["search"]} if several else {}), "load": s["load"],
             "step_s": s["step_s"], "fixture": describe_fixture(s["fixture"]),
             "achieved_rate": s["achieved_rate"], "served": s["throughput"], "p50": s["p50"],
             "p95": s["p95"], "p99": s["p99"], "passed": s["passed"], "valid": s["valid"],
             "again": s["confirmation"], "lag_p99": s["schedule_lag_p99"],
             "driver_cpu": s["driver_cpu"], "shards": s["shards"],
             "failed": "; ".join(s["failed"])} for s in doc["steps"]])})

    def figures(self) -> None:
        """Show the hockey stick and the throughput figure (PNG files in the run folder)."""
        import json

        from IPython.display import Image, display

        doc = json.loads((self.run.dir / CAPACITY_FILE).read_text())
        for path in write_figures(self.run.dir, doc, self.run.thresholds):
            display(Image(filename=str(path)))


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


CEILING_FACTOR = 64.0  # a scenario's default ceiling: its profile's load times this


def scenario_options(scenario, params: Mapping, given: Mapping) -> SearchOptions:
    """Search options for a scenario: the flags given, else from its profile (start at the
    profile's load, ceiling 64 times that), in the scenario's unit; checked before any load,
    down to the fixture the ceiling's step would need."""
    given = {k: v for k, v in given.items() if k not in DRIVER_OPTIONS}
    start = given.get("start") or scenario.load_of(params)
    options = {"ceiling": start * CEILING_FACTOR, **given, "start": start,
               "unit": scenario.capacity_unit}
    result = SearchOptions(**options)
    result.validate()
    for load in (result.first, result.ceiling):
        try:
            scenario.at_load(params, load, result.longest_step_s)
        except WorkbenchError as exc:
            raise WorkbenchError(f"a capacity step at {load:g} {result.unit}: {exc}; lower "
                                 "--ceiling (or --start)") from None
    return result
