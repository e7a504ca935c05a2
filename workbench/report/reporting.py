"""One report path: a run's standard tables, figures and record context, and the reporters.

A scenario's :class:`~workbench.run.scenario.Run`, an ad-hoc ``workbench drive``
(:mod:`workbench.run.adhoc`) and a capacity search each hand what a run measured (:class:`Measured`:
the driver's result, the requests, their analysis and verdicts, and what only some runs have:
telemetry, a backlog drain, a scenario's warnings) to this module, which builds everything a reader
sees from it:

* :data:`FIGURES`: the standard figures, one function each (``Measured -> Figure | None``, None
  when a run has nothing to draw); a new figure is one function and one line in the list, and
  shows in a scenario's notebook and report, and in a drive's report;
* :data:`CAPACITY_FIGURES`: a capacity search's figures (the hockey stick, throughput), the
  same way, from its ``capacity.json``;
* :func:`tables`: the standard tables (latency, connection phases, load, errors, validity, the
  driver's timing, windows, the drain);
* :func:`record_context`: what a record holds beside the analysis (identity, parameters, the
  target, the machine and software, the load), and :func:`record` the record itself.

The reporters write them out, as vegeta's reporters read its results: :func:`write` the record
(``record.json``) and the exports over it (:func:`workbench.report.exports.write_all`: JUnit, the
step summary, ``.hgrm``, ``.hlog``), :func:`html_page` a report page without a notebook (a
drive's); a scenario's notebook shows :func:`tables` and :func:`figures` in its cells and
becomes ``report.html`` (:func:`workbench.report.notebook.report_cells`); ``cli.print_summary``
words a run folder for a terminal.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.analyse import analysis
from workbench.compare import baseline
from workbench.jsonio import write_json
from workbench.paths import project_root
from workbench.report import exports, machine, view
from workbench.report import record as records
from workbench.report.notebook import Figures, Tables

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.html"
# What the driver did, in a record's ``load`` (with the VUs and the engine)
LOAD_FACTS = ("offered_rate", "achieved_rate", "duration_s", "scheduled", "completed", "failed",
              "dropped", "error_rate")


@dataclass(frozen=True)
class Measured:
    """What one run measured, as the report path reads it. ``title``: scenario, target label
    and date for figure titles (:func:`title`)."""

    result: Mapping  # the driver's result.json
    requests: analysis.Requests
    analysed: analysis.Analysis
    verdicts: pd.DataFrame
    title: tuple[str, str, str]
    warnings: Sequence[str] = ()  # what the scenario says is wrong with the run
    warnings_title: str = "Warnings"
    telemetry: pd.DataFrame | None = None  # the server side's samples, long format
    drain: Mapping | None = None  # the backlog drain after the timed phase
    drain_curve: pd.DataFrame | None = None


def title(scenario: str, target: Mapping, started_at: str | None) -> tuple[str, str, str]:
    """Scenario, target label and date, as every figure is titled."""
    label = f"{target.get('kind')} {target.get('version') or ''} @ {target.get('url')}"
    return scenario, label, (started_at or "")[:16].replace("T", " ") + " UTC"


# --- figures -------------------------------------------------------------------------------------
# Each takes what a run measured and returns its figure, or None when the run has nothing to
# draw. The plotting stack is imported in each: a command that draws nothing never loads it.


def latency_by_percentile(m: Measured) -> Figure:
    from workbench.report import plots

    return plots.percentile_plot(m.requests, *m.title)


def latency_distribution(m: Measured) -> Figure:
    from workbench.report import plots

    return plots.cdf_plot(m.requests, *m.title)


def latency_over_time(m: Measured) -> Figure:
    from workbench.report import plots

    return plots.latency_over_time(m.requests, *m.title)


def throughput_and_errors(m: Measured) -> Figure:
    from workbench.report import plots

    return plots.throughput_and_errors(m.requests, *m.title,
                                       offered_rate=m.result.get("offered_rate"))


def latency_and_telemetry(m: Measured) -> Figure | None:
    from workbench.report import plots

    if m.telemetry is None or m.telemetry.empty:
        return None
    return plots.latency_and_telemetry(m.requests, m.telemetry, *m.title,
                                       seconds=m.analysed.window_s)


def backlog_drain(m: Measured) -> Figure | None:
    from workbench.report import plots

    if m.drain_curve is None or m.drain_curve.empty:
        return None
    return plots.drain_curve(m.drain_curve, *m.title)


FIGURES: list[Callable[[Measured], Figure | None]] = [
    latency_by_percentile,
    latency_distribution,
    latency_over_time,
    throughput_and_errors,
    latency_and_telemetry,
    backlog_drain,
]


def figures(m: Measured) -> Figures:
    """Every standard figure a run has (:data:`FIGURES`), in order, closed for pyplot: shown
    once, by the list, not again by a notebook's inline backend."""
    import matplotlib.pyplot as plt

    drawn = Figures(figure for draw in FIGURES if (figure := draw(m)) is not None)
    for figure in drawn:
        plt.close(figure)
    return drawn


# A capacity search's figures, from its ``capacity.json``, the latency limits its steps were
# judged by (label, ms) and the title; saved beside it under the names they are listed by.


def hockey_stick(doc: Mapping, limits: Sequence[tuple[str, float]],
                 title: tuple[str, str, str]) -> Figure:
    from workbench.report import plots

    return plots.hockey_stick(dict(doc), limits, *title)


def capacity_throughput(doc: Mapping, limits: Sequence[tuple[str, float]],
                        title: tuple[str, str, str]) -> Figure:
    from workbench.report import plots

    return plots.capacity_throughput(dict(doc), *title)


CAPACITY_FIGURES: dict[str, Callable[..., Figure]] = {
    "hockey_stick.png": hockey_stick,
    "throughput.png": capacity_throughput,
}


# --- tables --------------------------------------------------------------------------------------


def tables(m: Measured) -> dict[str, pd.DataFrame | pd.Series]:
    """The standard tables, titled: the scenario's warnings, latency percentiles, connection
    phases, load, errors, validity, the driver's own timing, windows, the backlog drain."""
    analysed, result = m.analysed, m.result
    timing = {k: result[k] for k in ("service_time_ms", "schedule_lag_ms")
              if any(v is not None for v in (result.get(k) or {}).values())}
    return {
        **({m.warnings_title: pd.Series(list(m.warnings), name="warning", dtype=object)}
           if m.warnings else {}),
        "Latency by endpoint and status class (ms)": analysed.percentiles,
        **({"Connection phases by endpoint (ms)": timed}
           if (timed := analysis.phases(m.requests)) is not None else {}),
        "Offered against achieved load": analysed.load,
        "Errors by class": analysed.errors,
        "Validity": analysed.validity,
        "Service time and schedule lag (ms)": pd.DataFrame(timing).T,
        "Driver": pd.Series(result.get("driver") or {}, dtype=object),
        "Per-window percentiles and rates": analysed.windows,
        **({"Backlog drain after the timed phase": pd.Series(
            {k: v for k, v in m.drain.items() if k != "curve"}, dtype=object)}
           if m.drain else {}),
    }


# --- the record ----------------------------------------------------------------------------------


def environment() -> dict:
    """Where a run was measured: the workbench's revision, the machine, the software."""
    return {"workbench": baseline.workbench_revision(project_root()),
            "machine": machine.facts(), "software": machine.software()}


def target_facts(identity: Mapping, keys: Sequence[str]) -> dict:
    """The target as a record holds it: ``keys`` of what preflight found, and the measured
    commit's date when a local clone knows it."""
    return {k: identity.get(k) for k in keys} | {"commit_date": commit_date(identity.get("commit"))}


def record_context(run_id: str, scenario: str, parameters: Mapping, target: Mapping,
                   result: Mapping, max_vus: int | None, *, profile: Mapping | None = None,
                   run: Mapping | None = None, database: Mapping | None = None,
                   fixtures: Mapping | None = None, telemetry: Mapping | None = None,
                   calibration: Mapping | None = None) -> dict:
    """What a run's record holds beside its analysis (:func:`workbench.report.record.build`).
    ``profile``: its ``profile``, ``profile_base`` and ``profile_differs`` (none for a drive);
    ``run``: facts about the run beside its start, end and status."""
    return {
        "run_id": run_id, "scenario": scenario,
        **(profile or {"profile": None, "profile_base": None, "profile_differs": {}}),
        "parameters": parameters, "target": dict(target), **environment(),
        "run": {k: result[k] for k in ("started_at", "ended_at", "status")} | dict(run or {}),
        "database": database, "fixtures": fixtures or {"sizes": {}, "seeded": {}},
        "load": {k: result.get(k) for k in LOAD_FACTS}
                | {"max_vus": max_vus, "engine": (result.get("driver") or {}).get("engine")},
        "telemetry": telemetry, "calibration": calibration,
    }


def record(m: Measured, context: Mapping) -> dict:
    """The run's record from what it measured and its context."""
    return records.build(context, m.analysed, m.requests, m.verdicts, reported=dict(m.result))


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


# --- reporters -----------------------------------------------------------------------------------


def write(out_dir: Path, rec: Mapping, m: Measured, *, exclusive: bool = False) -> Path:
    """Write ``record.json`` (``exclusive``: once, never over another) and the exports over it
    (:func:`workbench.report.exports.write_all`); returns the record's path."""
    path = Path(out_dir) / records.RECORD_FILE
    write_json(path, rec, exclusive=exclusive)
    exports.write_all(out_dir, rec, m.requests, m.verdicts)
    return path


def html_page(heading: str, rec: Mapping, m: Measured,
              extra: Mapping[str, pd.DataFrame | pd.Series] | None = None) -> str:
    """A report page without a notebook: the verdict, the figures, then the details tables
    (the standard ones, then ``extra``)."""
    images = "".join(view.png_html(png) for png in view.pngs(
        [functools.partial(draw, m) for draw in FIGURES]))
    details = Tables({**tables(m), **(extra or {})})
    return view.page(heading, [view.Section("", view.Verdict(rec)._repr_html_()),
                                 view.Section("Figures", images),
                                 view.Section("Details", details._repr_html_())])
