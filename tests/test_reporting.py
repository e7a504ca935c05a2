"""The one report path: a figure registered once shows in a scenario run's report and in a
drive's, from one real drive against a loopback server."""

from __future__ import annotations

import shutil
from html import escape

import matplotlib.pyplot as plt
import pytest

from tests.loopback import LoopbackServer
from workbench import scenarios
from workbench.driver import DriveSpec, RequestTemplate, drive, load_result
from workbench.report import reporting
from workbench.run import adhoc
from workbench.run.scenario import Run, write_preflight
from workbench.target import preflight

EXTRA = "an extra figure, registered in one line"


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory):
    """One real drive's folder and its spec."""
    out = tmp_path_factory.mktemp("drive") / "run"
    with LoopbackServer() as srv:
        spec = DriveSpec(base_url=srv.url, rate=40, duration_s=1.0,
                         templates=(RequestTemplate("GET", "/delay?ms=1", "adhoc"),))
        drive(spec, out, echo=lambda _: None)
    return out, spec


def _extra(m: reporting.Measured) -> plt.Figure:
    figure, ax = plt.subplots()
    ax.plot([0, 1], [0, len(m.requests)])
    ax.set_title(EXTRA)
    return figure


def _scenario_run(source, spec: DriveSpec, run_dir, monkeypatch,
                  thresholds: dict | None = None) -> Run:
    """A scenario's Run over a copy of the drive's folder, its preflight already written (as
    ``workbench run`` leaves it), its result read as ``Run.drive`` leaves it."""
    shutil.copytree(source, run_dir)
    monkeypatch.setenv(preflight.TOKEN_ENV, "wb-test-token")
    params = scenarios.get("api_tier").params_for("smoke", {"duration_s": 1.0})
    identity = {"url": spec.base_url, "kind": "unknown", "version": None, "commit": None,
                "modified": None, "dsn": None, "warnings": []}
    write_preflight(run_dir, "api_tier", params, identity)
    r = Run("api_tier", {"duration_s": 1.0}, thresholds, run_dir=run_dir,
                target=preflight.Target(spec.base_url, None, False, False))
    r.result = load_result(run_dir)
    return r


def test_a_registered_figure_shows_in_a_drives_report_and_a_scenario_runs(
        driven, tmp_path, monkeypatch):
    monkeypatch.setattr(reporting, "FIGURES", [*reporting.FIGURES, _extra])
    source, spec = driven

    drive_dir = tmp_path / "drive"
    shutil.copytree(source, drive_dir)
    rec = adhoc.finish(drive_dir, spec)
    page = (drive_dir / "report.html").read_text()
    assert rec["scenario"] == "adhoc"
    assert page.count('src="data:image/png;base64,') == 5  # the four standard ones and the extra

    # a scenario's Run over the same measurements: its notebook shows run.figures()
    r = _scenario_run(source, spec, tmp_path / "scenario", monkeypatch)
    titles = [f.axes[0].get_title() for f in r.figures()]
    assert len(titles) == 5 and titles[-1] == EXTRA
    # and both show the same standard tables
    standard = list(reporting.tables(r.measured()))
    assert list(r.summary().tables) == standard
    assert all(f"<h4>{escape(title)}</h4>" in page for title in standard)


def test_a_scenario_run_and_a_drive_record_one_drive_alike(driven, tmp_path, monkeypatch):
    """Both records come from one context builder: the same sections, the same measurements,
    the same provenance, and the same exports beside them."""
    source, spec = driven
    drive_dir, run_dir = tmp_path / "drive", tmp_path / "scenario"
    shutil.copytree(source, drive_dir)
    thresholds = {"http_req_duration": ["p(95)<5000"]}
    by_drive = adhoc.finish(drive_dir, spec, thresholds)
    r = _scenario_run(source, spec, run_dir, monkeypatch, thresholds)
    r.record()
    by_run = r.baseline
    assert set(by_run) == set(by_drive)
    for section in ("histograms", "percentiles", "validity", "thresholds", "passed", "machine",
                    "software", "workbench", "protocol", "latency_basis"):
        assert by_run[section] == by_drive[section], section
    assert by_run["load"] | {"max_vus": None} == by_drive["load"] | {"max_vus": None}
    assert by_run["run"] == by_drive["run"] | {"target_exit": None}
    assert by_run["target"] | {"dsn": None} == by_drive["target"]
    for folder in (drive_dir, run_dir):
        assert {"record.json", "junit.xml", "latency.hgrm", "latency.hlog"} <= {
            p.name for p in folder.iterdir()}


_PNGS = """
import os, sys
from pathlib import Path
import matplotlib.pyplot as plt
from workbench.report import view

folder, parent, fail = Path(sys.argv[1]), os.getpid(), sys.argv[2] == "fail"

def draw(k):
    def figure():
        if k == 2:
            return None  # nothing to draw: no image
        if fail and os.getpid() != parent:
            raise RuntimeError("the child cannot draw")
        (folder / f"{os.getpid()}-{k}").touch()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, k])
        ax.set_title(f"figure {k}")
        return fig
    return figure

draws = [draw(k) for k in range(5)]
got = view.pngs(draws)
want = [png for png in view._drawn(draws) if png is not None]
assert len(got) == 4 and got == want, "not the sequential images in order"
print(len({p.name.split("-")[0] for p in folder.iterdir()}))
"""


@pytest.mark.parametrize("child", ["draws", "fail"])
def test_figures_drawn_in_two_processes_are_the_sequential_ones_in_order(tmp_path, child):
    """In a process of its own (a pytest worker has threads, where pngs() does not fork):
    half the figures are drawn by a forked child, the images are those drawn one by one, in
    order, and what the child fails to draw is drawn by the parent."""
    import os
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: pngs() draws everything in this process")
    done = subprocess.run([sys.executable, "-c", _PNGS, str(tmp_path), child],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    drew = int(done.stdout.split()[-1])
    assert drew == (2 if child == "draws" else 1)  # processes that drew a figure
