"""Capacity records: built from a search, committed by `workbench baseline commit` into a
temporary repository, and rendered in the README's capacity table beside the latency table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from workbench import jsonio, scenarios
from workbench.capacity import records, runner, search
from workbench.capacity.search import SearchOptions, Step
from workbench.compare import baseline
from workbench.errors import WorkbenchError
from workbench.report import machine


def knee_search(limit_rps: float) -> search.Capacity:
    def run(load: float, seconds: float) -> Step:
        ok = load <= limit_rps
        return Step(load=load, achieved_rate=load, p50=2.0, p95=5.0, p99=8.0 if ok else 900.0,
                    passed=ok, valid=True, failed=() if ok else ("p(99)<200 (measured 900)",),
                    run_dir="/somewhere/local", throughput=min(load, limit_rps))
    return search.search(run, SearchOptions(start=100, ceiling=10_000, step_s=5.0))


def run_folder(tmp: Path, result: search.Capacity, run_id: str) -> Path:
    run_dir = tmp / "runs" / run_id
    run_dir.mkdir(parents=True)
    doc = runner.capacity_document(result, {"scenario": "agent_storm",
                                                  "thresholds": {"http_req_duration":
                                                                 ["p(99)<200"]}})
    storm = scenarios.get("agent_storm")
    doc["fleet"] = runner.capacity_meaning(storm, storm.params_for("smoke"), result)
    record = records.build(doc, {
        "run_id": run_id, "scenario": "agent_storm", "profile": "smoke",
        "parameters": {"rate": 167.0, "duration_s": 10.0, "fleet_size": 500},
        "target": {"url": "https://127.0.0.1:8080", "kind": "certctl",
                   "version": "v2.0.71-2-gaad95d3", "commit": "aad95d315b67abcdef"},
        "workbench": {"git_sha": "0" * 40, "clean": True}, "machine": machine.facts(),
        "software": machine.software(),
        "run": {"started_at": "2026-12-03T12:00:00+00:00", "ended_at": "2026-12-03T12:05:00"}})
    jsonio.write_json(run_dir / records.CAPACITY_RECORD_FILE, record)
    return run_dir


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.invalid")
    git(root, "config", "user.name", "test")
    (root / "README").write_text("x\n")
    git(root, "add", "README")
    git(root, "commit", "-qm", "init")
    return root


def test_a_capacity_record_is_committed_and_rendered_beside_the_latency_table(repo):
    run_id = "20261203T120000Z_agent_storm_capacity_ab12cd34"
    run_dir = run_folder(repo, knee_search(1000.0), run_id)
    dest = baseline.commit(run_dir, repo)
    assert dest.parent == repo / "baselines" / machine.facts()["name"] / "agent_storm" / "capacity"
    assert dest.name == "20261203T120000Z_aad95d315b67_ab12cd34.json"
    record = json.loads(dest.read_text())
    assert record["schema_version"] == records.SCHEMA_VERSION
    assert record["kind"] == "capacity" and record["verdict"] == search.KNEE
    assert record["target"]["commit"].startswith("aad95d3") and record["machine"]["name"]
    assert record["parameters"]["fleet_size"] == 500 and record["steps"]
    assert all("run_dir" not in step for step in record["steps"])  # local paths stay local
    # how the answer repeated, and how long each step was
    assert record["repeats"]["answer"]["runs"] == 3 == record["repeats"]["answer"]["passed"]
    assert record["repeats"]["above"]["passed"] == 0 and "3 of 3 passed" in record["spread"]
    assert all(step["step_s"] == 5.0 for step in record["steps"])
    readme = (repo / "baselines" / "README.md").read_text()
    assert "# Measured baselines" in readme and "## Capacity" in readme
    row = next(line for line in readme.splitlines() if line.startswith("| agent_storm"))
    low, high = record["interval"]
    assert f"| {low:,.0f} | req/s | knee | {high:,.0f} |" in row
    assert f"{low * 60:,.0f} agents" in row and "aad95d315b67" in row
    assert "| 1 |" in row  # one search: its row says so

    assert "capacity: agent_storm" in git(repo, "log", "-1", "--format=%B")
    assert git(repo, "status", "--porcelain", "--", "baselines") == ""
    assert baseline.render(repo, check=True)  # the committed README is what render makes


def test_the_capacity_table_gives_several_searches_range():
    answers = {"searches": 3, "knees": 3, "min": 944.7, "median": 944.7, "max": 1075.0,
               "spread": 0.138}
    assert records._searches({"answers": answers}) == "3: 945-1,075 (14% of the median)"
    assert records._searches({}) == "1"


def test_a_bound_is_not_committed_as_a_capacity_without_force(repo):
    bound = knee_search(50_000.0)  # every step passes to the ceiling: a lower bound only
    run_dir = run_folder(repo, bound, "20261203T120000Z_agent_storm_capacity_ffff0000")
    with pytest.raises(WorkbenchError, match="not reached.*--force"):
        baseline.commit(run_dir, repo)
    assert not (repo / "baselines").exists()
    dest = baseline.commit(run_dir, repo, force=True)
    assert "| not reached |" in (repo / "baselines" / "README.md").read_text()
    assert dest.exists()


def test_a_record_of_another_schema_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"kind": "capacity", "schema_version": 99}))
    with pytest.raises(WorkbenchError, match="schema version 2"):
        records.load(path)


def test_a_version_1_capacity_record_is_migrated_and_says_it_has_no_calibration(repo):
    run_dir = run_folder(repo, knee_search(1000.0), "20261203T120000Z_agent_storm_capacity_1")
    path = run_dir / records.CAPACITY_RECORD_FILE
    old = json.loads(path.read_text())
    assert old["calibration"]["measured"] is False  # built without one: it says so
    del old["calibration"]
    path.write_text(json.dumps(old | {"schema_version": 1}))
    record = records.load(path)
    assert record["schema_version"] == 2
    assert record["calibration"]["reason"] == ("recorded with capacity record schema 1, before "
                                               "calibration existed")
    baseline.commit(run_dir, repo)
    row = next(line for line in (repo / "baselines" / "README.md").read_text().splitlines()
               if line.startswith("| agent_storm"))
    assert row.endswith("| none |")


def test_a_capacity_record_keeps_its_calibration(repo):
    from tests.synthetic import calibration_section

    run_dir = run_folder(repo, knee_search(1000.0), "20261203T120000Z_agent_storm_capacity_2")
    path = run_dir / records.CAPACITY_RECORD_FILE
    path.write_text(json.dumps(json.loads(path.read_text())
                               | {"calibration": calibration_section(1.0)}))
    assert records.load(path)["calibration"]["figures"]["cpu_ms"] == 2.5
    baseline.commit(run_dir, repo)
    assert "| cpu 2.5 / loopback 0.06 ms |" in (repo / "baselines" / "README.md").read_text()
