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
    """``--threshold`` values in k6 syntax: ``p(99)<200`` (on ``http_req_duration``) or
    ``METRIC:EXPR`` such as ``http_req_failed:rate<0.01`` or
    ``http_req_duration{endpoint:heartbeat}:p(95)<100``."""
    spec: dict[str, list[str]] = {}
    for value in values:
        metric, _, expr = value.rpartition(":")  # an expression never holds a colon
        if not metric:
            metric = _DURATION_METRIC
        spec.setdefault(metric.strip(), []).append(expr.strip())
    try:
        return analysis.parse_thresholds(spec)
    except WorkbenchError as exc:
        raise WorkbenchError(f"--threshold: {exc}") from None


def step_spec(spec: DriveSpec, load: float, options: SearchOptions) -> DriveSpec:
    """``spec`` at one step's load for ``options.step_s`` seconds: an open loop at ``load``
    requests/s (iterations/s = load / requests per iteration), a closed loop at ``load`` VUs."""
    if options.unit == VUS:
        if spec.open_loop:
            raise WorkbenchError("a virtual-user capacity search needs a closed-loop scenario")
        return replace(spec, vus=int(load), duration_s=options.step_s)
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

