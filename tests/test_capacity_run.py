"""`workbench run SCENARIO --find-capacity`: the capacity notebook through papermill, against
the embedded stand-in, at smoke size with short steps."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat

from workbench import cli, scenarios
from workbench.capacity import records, runner, search
from workbench.paths import notebooks_dir
from workbench.run import launcher
from workbench.target import embedded


def test_the_committed_capacity_notebook_is_the_generated_one_without_outputs():
    committed = nbformat.read(notebooks_dir() / launcher.CAPACITY_NOTEBOOK, as_version=4)
    assert committed == launcher.capacity_notebook()
    assert any("parameters" in c.metadata.get("tags", []) for c in committed.cells)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_agent_storm_capacity_seeds_the_fleet_each_load_means_and_opens_on_its_verdict(
        embedded_env, capsys):
    code = cli.main(["run", "agent_storm", "--find-capacity", "--start", "20", "--ceiling", "40",
                     "--step-duration", "1", "-p", "fleet_size", "100"])
    out = capsys.readouterr().out
    (run_dir,) = Path(os.environ["WORKBENCH_RUNS_DIR"]).iterdir()
    assert "_agent_storm_capacity_" in run_dir.name
    doc = json.loads((run_dir / "capacity.json").read_text())
    assert code == runner.exit_code(doc["verdict"]), out
    assert doc["scenario"] == "agent_storm" and doc["unit"] == search.RATE
    assert sorted({s["offered_rate"] for s in doc["steps"]})[0] == 20
    assert doc["verdict"] in (search.NOT_REACHED, search.KNEE, search.BELOW_START)
    assert doc["sentence"] in out.splitlines()  # printed by the command after the notebook
    # each step ran on the fleet its rate means at certctl's 60 s heartbeat: rate x 60 agents
    for step in doc["steps"]:
        assert step["fixture"] == {"agents": math.ceil(step["offered_rate"] * 60)}
    if doc["interval"][0] is not None:
        assert "fleet: " in out and f"{doc['interval'][0] * 60:,.0f} agents" in out
    assert (run_dir / "report.html").exists() and (run_dir / "hockey_stick.png").exists()
    record = records.load(run_dir / records.CAPACITY_RECORD_FILE)
    assert record["verdict"] == doc["verdict"] and record["target"]["kind"] == "stand-in"
    assert record["parameters"]["fleet_size"] == 100 and record["machine"]["name"]
    # the machine, read once before the first step and once after the last
    assert record["calibration"]["measured"] and record["calibration"]["after"]["postgres"][
        "commits"] > 0
    assert [s["fixture"] for s in record["steps"]] == [s["fixture"] for s in doc["steps"]]
    # the database as the search found it, before its first step seeded or loaded it
    assert record["database"]["tables_before_search"]["agents"]["bytes"] > 0
    # the report opens on the verdict sentence, then the hockey stick, then the steps; the
    # run's repr and the search's log come after, as details
    html = (run_dir / "report.html").read_text()
    assert "machine calibration: cpu " in html
    order = [html.find(needle) for needle in (
        doc["sentence"].split(" (")[0], "hockey_stick" if "hockey_stick" in html else "<img",
        "achieved_rate", "capacity search of Run(", "[capacity] 20 req/s")]
    assert -1 not in order and order == sorted(order), order
    # no secret in anything the run wrote
    token = embedded.read_token(Path(os.environ["WORKBENCH_STATE_DIR"]))
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".ipynb", ".html"):
            assert token not in path.read_text(errors="replace"), path


def test_each_scenario_names_its_capacity_load_and_sizes_its_fixture_to_it():
    storm = scenarios.get("agent_storm")
    at = storm.at_load(storm.defaults("canonical"), 1279, 20)
    assert storm.capacity_unit == search.RATE
    assert (at["rate"], at["duration_s"], at["fleet_size"]) == (1279, 20, 76_740)
    assert storm.fixture_sizes(at) == {"agents": 76_740}
    assert storm.capacity_text(at, 1279, False).startswith("fleet: 76,740 agents")
    assert "at least 76,740" in storm.capacity_text(at, 1279, True)

    fleet = scenarios.get("agent_fleet")  # the agents are the load
    at = fleet.at_load(fleet.defaults("canonical"), 3000, 20)
    assert fleet.capacity_unit == search.AGENTS and at["fleet_size"] == 3000
    assert fleet.executor_settings(at)["agents"] == 3000
    assert fleet.capacity_text(at, 3000, False).startswith("fleet: 3,000 agents, each")
    options = runner.scenario_options(fleet, fleet.defaults("smoke"), {})
    assert (options.unit, options.start) == (search.AGENTS, 100)

    bulk = scenarios.get("bulk_renewal")  # ids mode: certificates for every call of the step
    at = bulk.at_load(bulk.defaults("canonical"), 40, 20)
    assert bulk.fixture_sizes(at) == {"certificates": 40 * 20 * 50}
    assert "2,000 certificates/s" in bulk.capacity_text(at, 40, False)
    criteria = bulk.at_load(bulk.defaults("smoke"), 40, 20)
    assert bulk.fixture_sizes(criteria) == {"certificates": 200}  # nothing scales with load
    assert bulk.capacity_text(criteria, 40, False) is None

    burst = scenarios.get("acme_burst")
    assert burst.capacity_unit == search.VUS and burst.at_load(
        burst.defaults("smoke"), 37, 10)["vus"] == 37


def test_agent_fleet_capacity_searches_over_agents_each_step_its_own_fleet(embedded_env):
    cap = runner.ScenarioCapacity(
        "agent_fleet", options={"start": 20, "ceiling": 40, "step_s": 2.0, "repeats": 1})
    cap.seed()
    cap.search()
    doc = json.loads((cap.run.dir / "capacity.json").read_text())
    assert doc["unit"] == search.AGENTS
    assert [s["fixture"] for s in doc["steps"] if not s["driver_bound"]][:2] == [
        {"agents": 20}, {"agents": 40}]
    assert all(Path(s["run_dir"]).name.endswith("agents") for s in doc["steps"])
    if doc["interval"][0] is not None:
        assert f"{doc['interval'][0]:,.0f} agents, each heartbeating" in cap.conclusion()
