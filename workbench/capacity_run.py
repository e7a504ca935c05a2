"""Capacity search against a real target: each step one driver run, judged, and the result file.

:mod:`workbench.capacity` decides from :class:`~workbench.capacity.Step` values; this module
makes them: step k drives the spec at one load into ``<out>/steps/<kk>_<load>/`` (a complete run
folder: ``spec.json``, ``requests.parquet``, ``result.json``) and :func:`judge` turns it into a
step. ``capacity.json`` (:func:`write_capacity`) is rewritten after every step, so an
interrupted search keeps every step it measured.

Which signs are whose (:func:`judge`):

- **the target's** (the step fails, the search brackets below it): a threshold broken on the
  step's requests; errors over the limit; arrivals dropped because every VU waited on the
  target; achieved throughput under 95 % of the offered rate.
- **the driver's** (the step is *driver bound*: the search stops and reports a lower bound
  only): its CPU at 90 % of a core or more, or its schedule-lag p99 over 2 ms (the validity
  limits of :mod:`workbench.driver.result`). When the driver is CPU bound, drops and a short
  achieved rate are its own, not the target's. A latency threshold broken while the driver was
  late counts against the target only when it breaks on the service time too (from the send,
  without the driver's lateness): a late driver adds its lag to every response time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench import analysis, capacity, jsonio
from workbench.analysis import Threshold
from workbench.capacity import CAPACITY_FILE, RATE, VUS, Capacity, SearchOptions, Step
from workbench.driver.result import (
    MAX_CPU_FRACTION,
    MAX_SCHEDULE_LAG_P99_MS,
    MIN_ACHIEVED_RATIO,
    DriveResult,
    load_result,
)
from workbench.driver.spec import DriveSpec
from workbench.errors import WorkbenchError

STEPS_DIR = "steps"
FIGURES = ("hockey_stick.png", "throughput.png")  # beside capacity.json
DEFAULT_MAX_ERROR_RATE = 0.01  # errors over 1 % of sent requests fail a step
_DURATION_METRIC = "http_req_duration"


def parse_threshold_options(values: list[str]) -> list[Threshold]:
    """``--threshold`` values (:func:`workbench.analysis.threshold_options`), parsed."""
    try:
        return analysis.parse_thresholds(analysis.threshold_options(values))
    except WorkbenchError as exc:
        raise WorkbenchError(f"--threshold: {exc}") from None


def step_spec(spec: DriveSpec, load: float, options: SearchOptions) -> DriveSpec:
    """``spec`` at one step's load for ``options.step_s`` seconds: an open loop at ``load``
    requests/s (iterations/s = load / requests per iteration), a closed loop at ``load`` VUs."""
    if options.unit == VUS:
        if spec.open_loop:
            raise WorkbenchError("a virtual-user capacity search needs a closed-loop scenario")
        return replace(spec, vus=int(load), max_vus=int(load), duration_s=options.step_s)
    if spec.executor != "constant-arrival-rate":
        raise WorkbenchError(f"a rate capacity search drives constant-arrival-rate steps; this "
                             f"spec's executor is {spec.executor}")
    return replace(spec, rate=load / spec.steps, duration_s=options.step_s)


def _driver_signs(result: DriveResult) -> tuple[list[str], bool]:
    """What says the driver, not the target, set the pace; and whether its CPU was the limit."""
    signs = []
    cpu = result["driver"]["cpu_fraction"]
    cpu_bound = not result["driver"]["cpu_fraction_includes_spin"] and cpu >= MAX_CPU_FRACTION
    if cpu_bound:
        signs.append(f"driver CPU {cpu:.0%} of a core")
    lag = result["schedule_lag_ms"]["p99"]
    if result["offered_rate"] is not None and lag is not None and lag > MAX_SCHEDULE_LAG_P99_MS:
        signs.append(f"driver schedule-lag p99 {lag:.2f} ms > {MAX_SCHEDULE_LAG_P99_MS:g} ms")
    return signs, cpu_bound


def judge(run_dir: Path, load: float, thresholds: list[Threshold],
          max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE) -> Step:
    """One step's decision from its run folder (see the module doc for whose sign is whose)."""
    result = load_result(run_dir)
    requests = analysis.load_requests(run_dir)
    driver, cpu_bound = _driver_signs(result)
    target: list[str] = []
    verdicts = analysis.evaluate_thresholds(requests, thresholds)
    if driver:  # the same thresholds on the service time: what the target alone took
        service = analysis.evaluate_thresholds(
            requests.assign(latency_ms=requests["service_ms"]), thresholds)
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
    if not cpu_bound:  # a CPU-bound driver drops and falls short on its own account
        if result["dropped"]:
            target.append(f"{result['dropped']} arrivals dropped (all "
                          f"{result['driver']['max_vus']} VUs waiting on the target)")
        offered, achieved = result["offered_rate"], result["achieved_rate"]
        if offered and achieved < MIN_ACHIEVED_RATIO * offered:
            target.append(f"achieved {achieved:.1f} req/s < {MIN_ACHIEVED_RATIO:.0%} of "
                          f"offered {offered:.1f}")
    lat = result["latency_ms"]
    served = requests[~requests["dropped"] & ~requests["failed"]]
    span_s = ((served["end_ns"].max() - requests["intended_ns"].min()) / 1e9
              if len(served) else 0.0)
    return Step(load=load, achieved_rate=result["achieved_rate"], p50=lat["p50"],
                p95=lat["p95"], p99=lat["p99"], passed=not target and not driver,
                valid=not driver, failed=tuple(target or driver),
                driver_bound=bool(driver) and not target,
                requests=result["completed"] + result["failed"], errors=result["failed"],
                run_dir=str(run_dir),
                throughput=len(served) / span_s if span_s > 0 else None)


def step_dir_name(index: int, load: float, unit: str) -> str:
    """``03_400rps`` or ``02_8vus``: the steps sort in the order they ran."""
    suffix = "vus" if unit == VUS else "rps"
    return f"{index:02d}_{load:g}{suffix}"


def capacity_document(result: Capacity, context: Mapping[str, Any]) -> dict:
    """``capacity.json``: the search (:meth:`Capacity.to_dict`), its sentence and context."""
    return result.to_dict() | {"sentence": result.sentence(), **context}


def write_capacity(out: Path, result: Capacity, context: Mapping[str, Any]) -> Path:
    """Write ``<out>/capacity.json``; returns its path."""
    path = Path(out) / CAPACITY_FILE
    jsonio.write_json(path, capacity_document(result, context))
    return path


def search_steps(spec: DriveSpec, out: Path, thresholds: list[Threshold],
                 options: SearchOptions, *, max_error_rate: float | None =
                 DEFAULT_MAX_ERROR_RATE, context: Mapping[str, Any] | None = None,
                 env: dict[str, str] | None = None, echo: Callable[[str], None] = print,
                 shards: int | None = None, reset: Callable[[], None] | None = None,
                 drive: Callable[..., Any] | None = None) -> Capacity:
    """Search ``spec``'s capacity, each step a run in ``<out>/steps/``; write capacity.json.

    ``reset`` runs before every step after the first (fixtures the scenario changes).
    ``drive`` is :func:`workbench.driver.drive` unless a test passes another.
    """
    if drive is None:
        from workbench.driver import drive
    options.validate()
    step_spec(spec, options.start, options).validate()  # bad input stops before any load
    out = Path(out)
    context = dict(context or {})
    numbers = itertools.count(1)
    done: list[Step] = []

    def run_step(load: float) -> Step:
        n = next(numbers)
        if reset is not None and n > 1:
            reset()
        run_dir = out / STEPS_DIR / step_dir_name(n, load, options.unit)
        drive(step_spec(spec, load, options), run_dir, env=env, echo=lambda line: None,
              shards=shards)
        step = judge(run_dir, load, thresholds, max_error_rate)
        done.append(step)
        partial = Capacity(options.unit, "in progress", None, (None, None), None, options,
                           list(done))
        write_capacity(out, partial, context)  # an interrupted search keeps its steps
        return step

    result = capacity.search(run_step, options, echo=echo)
    write_capacity(out, result, context)
    write_figures(out, capacity_document(result, context), thresholds)
    return result


def latency_limits(thresholds: list[Threshold]) -> list[tuple[str, float]]:
    """The thresholds a hockey stick can draw: percentiles of the response time, in ms."""
    return [(f"{t.metric} {t.expression}", t.limit) for t in thresholds
            if t.column == "latency_ms" and t.agg in ("p", "avg", "med", "max")]


def write_figures(out: Path, doc: Mapping[str, Any], thresholds: list[Threshold]) -> list[Path]:
    """The hockey stick and throughput figures of a capacity document, as PNG in ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; a notebook shows them with its own backend
    import matplotlib.pyplot as plt

    from workbench import plots

    name = doc.get("scenario") or "drive"
    target, date = doc.get("target_label") or doc.get("target_url") or "", doc.get("date", "")
    figures = (plots.hockey_stick(dict(doc), latency_limits(thresholds), name, target, date),
               plots.capacity_throughput(dict(doc), name, target, date))
    paths = []
    for fig, file in zip(figures, FIGURES, strict=True):
        fig.savefig(Path(out) / file, dpi=110)
        plt.close(fig)
        paths.append(Path(out) / file)
    return paths


def unit_label(unit: str) -> str:
    return "requests/s" if unit == RATE else "virtual users"



# -- a scenario's capacity, through papermill ---------------------------------------------------

NOTEBOOK = "capacity.ipynb"
HEARTBEAT_INTERVAL_S = 60.0  # certctl's agents heartbeat once a minute
FLEET_SCENARIOS = {"agent_storm"}  # scenarios whose request rate means a fleet of agents


def fleet_line(scenario: str, result: Capacity) -> str | None:
    """What the capacity means: the scenario's own line (``capacity_meaning``), or for
    agent_storm the fleet a heartbeat rate means (N req/s x 60 s interval)."""
    from workbench import scenarios

    low = result.interval[0]
    if low is None or result.unit != RATE:
        return None
    meaning = scenarios.get(scenario).capacity_meaning
    if meaning is not None:
        return meaning(low, result.verdict == capacity.KNEE)
    if scenario not in FLEET_SCENARIOS:
        return None
    agents = low * HEARTBEAT_INTERVAL_S
    bound = "" if result.verdict == capacity.KNEE else "at least "
    return (f"fleet: {bound}{agents:,.0f} agents at certctl's {HEARTBEAT_INTERVAL_S:.0f} s "
            f"heartbeat interval ({low:,.0f} heartbeats/s)")


class ScenarioCapacity:
    """A scenario's capacity search, one method per notebook cell: ``seed``, ``search``,
    ``steps``, ``figures``, ``conclusion``. Preflight is the :class:`workbench.run.Run`'s (once,
    read from ``preflight.json``); fixtures are seeded once and reset between steps when the
    scenario changes state (it declares a ``fixture_reset``). The thresholds are the
    scenario's own (or the ones given); an open-loop scenario searches over request rate, a
    closed-loop one (acme_burst) over virtual users."""

    def __init__(self, scenario: str, params: Mapping | None = None,
                 thresholds: Mapping | None = None, target_url: str | None = None,
                 ca_file: str | None = None, insecure: bool = False,
                 run_dir: str | Path | None = None, profile: str = "smoke",
                 options: Mapping | None = None) -> None:
        from workbench.run import Run

        self.run = Run(scenario, params, thresholds, target_url, ca_file, insecure, run_dir,
                       profile)
        self.options = scenario_options(self.run.scenario, self.run.params, options or {})
        self.options.validate()
        self.result: Capacity | None = None

    def __repr__(self) -> str:
        return f"capacity search of {self.run!r}\n{self.options}"

    def spec(self) -> DriveSpec:
        from workbench import driver
        from workbench.run import _DRIVER_TOKEN_ENV

        r = self.run
        return driver.DriveSpec(
            base_url=r.target.url, templates=r.scenario.templates(r.params),
            **r.scenario.executor_settings(r.params), ca_file=r.target.ca_file,
            insecure=r.target.insecure, token_env=_DRIVER_TOKEN_ENV, scenario=r.scenario.name)

    def seed(self) -> dict:
        """The scenario's fixtures, once for the whole search."""
        return self.run.seed()

    def _reset(self) -> None:
        r = self.run
        if r.scenario.fixture_reset is not None and r.target.dsn:
            r.scenario.reset(r.target.dsn, r.params)

    def search(self) -> str:
        """Run the steps (each printed as it is judged); returns the capacity sentence."""
        from workbench import calibration
        from workbench.run import _DRIVER_TOKEN_ENV

        r = self.run
        started_at = _now()
        # the machine before the first step and after the last: once a search, not per step
        before = calibration.measure(r.target.dsn)
        context = {"kind": "scenario", "scenario": r.scenario.name, "run_id": r.run_id,
                   "profile": r.profile, "parameters": r.params,
                   "thresholds": r.threshold_spec, "target_url": r.target.url,
                   "target": {k: r.identity.get(k) for k in ("kind", "version", "commit")},
                   "target_label": r.title()[1], "date": _now()}
        self.result = search_steps(
            self.spec(), r.dir, r.thresholds, self.options, context=context,
            env={_DRIVER_TOKEN_ENV: r._token}, echo=lambda line: print(line, flush=True),
            reset=self._reset)
        write_capacity(r.dir, self.result, context | {
            "fleet": fleet_line(r.scenario.name, self.result)})
        machine = calibration.section(before, calibration.measure(r.target.dsn))
        self.write_record(started_at, machine)
        print(f"machine calibration: {calibration.describe([{'calibration': machine}])}",
              flush=True)
        return self.conclusion()

    def write_record(self, started_at: str, calibration: dict | None = None) -> Path:
        """``capacity-record.json``: the search as a baseline-like record, for
        ``workbench baseline commit``; ``calibration`` is the machine's, read around it."""
        import json

        from workbench import baseline, capacity_record, machine
        from workbench.paths import project_root
        from workbench.run import commit_date

        r = self.run
        target = {k: r.identity.get(k) for k in ("url", "kind", "version", "commit",
                                                 "modified")}
        target["commit_date"] = commit_date(r.identity.get("commit"))
        doc = json.loads((r.dir / CAPACITY_FILE).read_text())
        record = capacity_record.build(doc, {
            "run_id": r.run_id, "scenario": r.scenario.name, "profile": r.profile,
            "parameters": r.params, "target": target,
            "workbench": baseline.workbench_revision(project_root()),
            "machine": machine.facts(), "software": machine.software(),
            "run": {"started_at": started_at, "ended_at": _now()},
            **({"calibration": calibration} if calibration else {})})
        path = r.dir / capacity_record.CAPACITY_RECORD_FILE
        jsonio.write_json(path, record)
        return path

    def conclusion(self) -> str:
        """``capacity: N req/s ...`` and, for agent_storm, the fleet it means."""
        if self.result is None:
            raise WorkbenchError("search() has not run")
        fleet = fleet_line(self.run.scenario.name, self.result)
        return self.result.sentence() + (f"\n{fleet}" if fleet else "")

    def steps(self):
        """Every step: load, achieved and served rates, p50/p95/p99, passed, valid, why."""
        import pandas as pd

        if self.result is None:
            raise WorkbenchError("search() has not run")
        doc = self.result.to_dict()
        return pd.DataFrame([{"load": s["load"], "achieved_rate": s["achieved_rate"],
                              "served": s["throughput"], "p50": s["p50"], "p95": s["p95"],
                              "p99": s["p99"], "passed": s["passed"], "valid": s["valid"],
                              "again": s["confirmation"], "failed": "; ".join(s["failed"])}
                             for s in doc["steps"]])

    def figures(self):
        """The hockey stick and the throughput figure (also written as PNG in the run)."""
        import json

        from IPython.display import Image, display

        doc = json.loads((self.run.dir / CAPACITY_FILE).read_text())
        paths = write_figures(self.run.dir, doc, self.run.thresholds)
        for path in paths:
            display(Image(filename=str(path)))
        return [str(p) for p in paths]


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


PARAMETERS = {"scenario": "agent_storm", "profile": "smoke", "target_url": None,
              "ca_file": None, "insecure": False, "run_dir": None, "params": {},
              "thresholds": None, "options": {}}


def notebook():
    """The capacity notebook: a ``parameters`` cell, then one workbench call per cell."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = "\n".join(f"{k} = {v!r}" for k, v in PARAMETERS.items())
    cells = [
        nbformat.v4.new_markdown_cell(
            "# Capacity search\n\nSteps of rising load against the scenario, each judged by "
            "its thresholds, its error limit and the saturation signs; then bisection between "
            "the last passing and the first failing step. A driver-bound step is reported as "
            "such, never as the target's capacity."),
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from workbench.capacity_run import ScenarioCapacity\n\n"
            "cap = ScenarioCapacity(scenario, params, thresholds, target_url, ca_file, insecure,"
            "\n                       run_dir, profile, options)\ncap"),
        nbformat.v4.new_code_cell("cap.seed()"),
        nbformat.v4.new_code_cell("sentence = cap.search()  # each step printed as judged"),
        nbformat.v4.new_markdown_cell("## Steps"),
        nbformat.v4.new_code_cell("cap.steps()"),
        nbformat.v4.new_markdown_cell("## Latency and throughput against load"),
        nbformat.v4.new_code_cell("cap.figures()"),
        nbformat.v4.new_code_cell("print(cap.conclusion())"),
    ]
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: the committed file never churns
        cell["id"] = f"capacity-{i:02d}"
    return nb


CEILING_FACTOR = 64.0  # a scenario's default ceiling: its profile's load times this


def scenario_options(scenario, params: Mapping, given: Mapping) -> SearchOptions:
    """Search options for a scenario: the flags given, else from its profile (start at the
    profile's rate or VUs, ceiling 64 times that); closed loop searches over VUs."""
    closed = scenario.executor == "constant-vus"
    profile_load = (float(params["vus"]) if closed
                    else float(params["rate"]) * scenario.steps)
    start = given.get("start") or profile_load
    options = {"ceiling": start * CEILING_FACTOR, **given, "start": start,
               "unit": VUS if closed else RATE}
    result = SearchOptions(**options)
    result.validate()
    return result


def execute(scenario: str, profile: str, target_url: str | None, ca_file: str | None,
            insecure: bool, overrides: Mapping, options: Mapping,
            strict: bool = False) -> tuple[Path, int, str | None]:
    """``workbench run SCENARIO --find-capacity``: preflight once, then the capacity notebook
    through papermill into a new run folder, and its HTML report. Returns the run folder, the
    exit code and the conclusion (None when the notebook failed)."""
    from workbench import run

    _, _, thresholds, run_dir = run.prepare(
        scenario, profile, overrides, target_url, ca_file, insecure, strict,
        label=f"{scenario}_capacity",
        check=lambda spec, params: scenario_options(spec, params, options))  # before any load
    out_nb = run_dir / NOTEBOOK
    code = run.execute_notebook(NOTEBOOK, out_nb, {
        "scenario": scenario, "profile": profile, "target_url": target_url, "ca_file": ca_file,
        "insecure": insecure, "run_dir": str(run_dir), "params": overrides,
        "thresholds": thresholds, "options": dict(options)})
    conclusion = None
    if (run_dir / CAPACITY_FILE).exists() and code == 0:
        import json

        doc = json.loads((run_dir / CAPACITY_FILE).read_text())
        conclusion = doc.get("sentence")
        fleet = doc.get("fleet")
        if fleet:
            conclusion += f"\n{fleet}"
    return run_dir, code, conclusion
