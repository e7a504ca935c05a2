"""`workbench run SCENARIO --find-capacity`: the capacity notebook through papermill, against
the embedded stand-in, at smoke size with short steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from workbench import capacity, capacity_record, capacity_run, cli, target
from workbench.paths import notebooks_dir


def test_the_committed_capacity_notebook_is_the_generated_one_without_outputs():
    committed = nbformat.read(notebooks_dir() / capacity_run.NOTEBOOK, as_version=4)
    assert committed == capacity_run.notebook()
    assert any("parameters" in c.metadata.get("tags", []) for c in committed.cells)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_agent_storm_capacity_runs_through_papermill_and_names_its_fleet(embedded_env,
                                                                         capsys):
    code = cli.main(["run", "agent_storm", "--find-capacity", "--start", "20", "--ceiling", "40",
                     "--step-duration", "1", "-p", "fleet_size", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = Path(os.environ["WORKBENCH_RUNS_DIR"]).iterdir()
    assert "_agent_storm_capacity_" in run_dir.name
    doc = json.loads((run_dir / "capacity.json").read_text())
    assert doc["scenario"] == "agent_storm" and doc["unit"] == capacity.RATE
    assert [s["offered_rate"] for s in doc["steps"]][:2] == [20, 40]
    assert doc["verdict"] in (capacity.NOT_REACHED, capacity.KNEE, capacity.BELOW_START)
    assert doc["sentence"] in out.splitlines()  # printed by the command after the notebook
    if doc["interval"][0] is not None:
        assert "fleet: " in out and f"{doc['interval'][0] * 60:,.0f} agents" in out
    assert (run_dir / "report.html").exists() and (run_dir / "hockey_stick.png").exists()
    record = capacity_record.load(run_dir / capacity_record.CAPACITY_RECORD_FILE)
    assert record["verdict"] == doc["verdict"] and record["target"]["kind"] == "stand-in"
    assert record["parameters"]["fleet_size"] == 100 and record["machine"]["name"]
    executed = nbformat.read(run_dir / capacity_run.NOTEBOOK, as_version=4)
    assert "capacity: " in json.dumps(executed.cells[-1].outputs)
    # no secret in anything the run wrote
    token = target.read_token(Path(os.environ["WORKBENCH_STATE_DIR"]))
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".ipynb", ".html"):
            assert token not in path.read_text(errors="replace"), path


@pytest.mark.parametrize(("flags", "needle"), [
    (["--ceiling", "5", "--start", "20"], "ceiling 5 is below the start 20"),
    (["--growth", "0.5"], "argument --growth"),
])
def test_bad_scenario_capacity_input_is_refused_before_preflight(embedded_env, capsys, flags,
                                                                 needle):
    code = cli.main(["run", "agent_storm", "--find-capacity", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err
    runs = Path(os.environ["WORKBENCH_RUNS_DIR"])
    assert not runs.exists() or not any(runs.iterdir())
