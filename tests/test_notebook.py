"""Generated notebooks: the committed ones are the template's, one Run call per step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest

from workbench import scenarios
from workbench.paths import project_root
from workbench.report import notebook, view
from workbench.run import launcher

# in this order; run.notes() after drive when it has notes
STEPS = ["run.seed()", "run.drive()", "run.summary()", "run.figures()", "run.record()",
         "run.verdict()", "run.check_thresholds()"]


def test_committed_notebooks_and_readme_table_are_the_generated_ones():
    assert launcher.render_all(project_root(), check=True) == [], (
        "run `workbench notebooks render` and commit the result")


@pytest.mark.parametrize("name", scenarios.names())
def test_a_notebook_is_parameters_then_one_run_call_per_step(name):
    spec = scenarios.get(name)
    nb = nbformat.reads(launcher.notebook_text(spec), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.id for c in code if "parameters" in c.metadata.get("tags", [])] == ["parameters"]
    assert f'run = Run("{name}", params' in code[1].source
    calls = [c.source for c in code[2:]]
    assert [c for c in calls if c != "run.notes()"] == STEPS
    assert ("run.notes()" in calls) == bool(spec.notes)
    assert calls.index("run.record()") < calls.index("run.check_thresholds()")  # record first
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(markdown) == len(code)  # the title, then a heading before every step
    assert spec.description in markdown[0].source and spec.fixture_text in markdown[2].source
    assert all(not c.outputs and c.execution_count is None for c in code)


def _copy_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(project_root() / "notebooks", root / "notebooks")
    shutil.copy(project_root() / "README.md", root / "README.md")
    return root


def _render(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "notebooks", "render", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WORKBENCH_ROOT": str(root)})


def test_render_check_fails_on_a_hand_edited_notebook_and_render_mends_it(tmp_path):
    root = _copy_root(tmp_path)
    edited = root / "notebooks" / "agent_storm.ipynb"
    edited.write_text(edited.read_text().replace("fleet_size = 500", "fleet_size = 50"))
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("5,000 agents", "6,000 agents"))
    checked = _render(root, "--check")
    assert checked.returncode == 1
    assert "notebooks/agent_storm.ipynb" in checked.stderr and "README.md" in checked.stderr
    assert _render(root).returncode == 0
    assert _render(root, "--check").returncode == 0
    assert edited.read_text() == (project_root() / "notebooks" / "agent_storm.ipynb").read_text()
    assert readme.read_text() == (project_root() / "README.md").read_text()


def test_readme_without_the_markers_is_refused(tmp_path):
    root = _copy_root(tmp_path)
    (root / "README.md").write_text("# no table here\n")
    with pytest.raises(ValueError, match="README.md lacks the markers"):
        launcher.render_all(root, check=True)


def test_the_readme_table_has_a_row_per_scenario_from_its_canonical_profile():
    rows = launcher.readme_table().splitlines()[2:]
    assert [row.split("|")[1].strip(" `") for row in rows] == scenarios.names()
    storm = next(row for row in rows if "`agent_storm`" in row)
    assert "167 req/s open loop" in storm and "5 min" in storm and "5,000 agents" in storm
    assert "p(99)<1000 p(95)<500; failed rate<0.001" in storm


def test_tables_show_every_title_as_html_and_text():
    tables = notebook.Tables({"Errors": pd.DataFrame({"n": [1]}), "Driver": pd.Series({"a": 2})})
    html = tables._repr_html_()
    assert html.index("<h4>Errors</h4>") < html.index("<h4>Driver</h4>") and "<table" in html
    assert repr(tables).startswith("Errors\n") and "Driver\n" in repr(tables)
    assert list(tables["Driver"].index) == ["a"] and len(tables) == 2


def test_figures_display_each_figure_once_as_its_png(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    small, wide = plt.figure(figsize=(2, 1)), plt.figure(figsize=(4, 1))
    notebook.Figures([small, wide])._ipython_display_()
    assert [image.format for image in shown] == ["png", "png"]
    assert [image.data for image in shown] == [view.figure_png(small), view.figure_png(wide)]
    assert [image.data[16:24] for image in shown] == [  # PNG's IHDR width, height at 100 dpi
        (200).to_bytes(4, "big") + (100).to_bytes(4, "big"),
        (400).to_bytes(4, "big") + (100).to_bytes(4, "big")]
    plt.close("all")
