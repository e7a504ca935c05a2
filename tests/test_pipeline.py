"""End to end: the agent_storm notebook through papermill against the embedded target."""

import json
import re
import xml.etree.ElementTree as ET

import nbformat
import pyarrow.parquet as pq
import pytest

from workbench.paths import notebooks_dir
from workbench.run import launcher
from workbench.run.scenario import Run, write_preflight
from workbench.target import embedded


def test_agent_storm_smoke_runs_through_papermill_and_leaves_report_and_record(
        embedded_env, embedded_target_state, monkeypatch, tmp_path):
    token = embedded.read_token(embedded_target_state)
    monkeypatch.setenv("CERTCTL_TOKEN", token)  # as an operator would; must never be written
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))  # as GitHub Actions sets it
    run_dir, code = launcher.execute("agent_storm", "smoke",
                                     overrides={"duration_s": 3.0, "fleet_size": 200})
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    # 167/s for 3 s; a loaded machine may stall the stand-in into drops or timeouts, which the
    # run must account for, not hide (validity says whether the run can be trusted)
    assert result["scheduled"] == 501 == result["completed"] + result["failed"] + result["dropped"]
    assert result["valid"] == (not result["invalid_reasons"])
    record = json.loads((run_dir / "record.json").read_text())
    # the SLO verdict is the machine's (a busy one breaches p95 < 500 ms, and the notebook then
    # fails as CI needs it to); on any machine the exit code says which, and only that
    assert record["passed"] == all(t["ok"] for t in record["thresholds"])
    assert code == (0 if record["passed"] else 99)
    assert record["target"]["kind"] == "stand-in"
    # the database as the load found it: the fleet seeded, before the load wrote anything
    tables = record["database"]["tables_before_load"]
    assert tables["agents"]["rows"] >= 200 and tables["agents"]["bytes"] > 0
    assert record["target"]["commit"] == embedded.workbench_commit()
    assert record["endpoints"]["heartbeat"]["requests"] == 501 - result["dropped"]  # sent
    assert {t["threshold"] for t in record["thresholds"]} == {"p(99)<1000", "p(95)<500",
                                                              "rate<0.001"}
    # CI-native exports beside the record: one testcase per threshold, HDR files, step summary
    junit = ET.parse(run_dir / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == 3
    assert len(junit.findall(".//failure")) == sum(not t["ok"] for t in record["thresholds"])
    assert "Percentile" in (run_dir / "latency.hgrm").read_text()
    assert "Histogram log format version" in (run_dir / "latency.hlog").read_text()
    assert "agent_storm" in step_summary.read_text() and "heartbeat" in step_summary.read_text()
    html = (run_dir / "report.html").read_text()
    assert "heartbeat" in html and "<img" in html and "run = Run(" not in html  # code hidden
    opening = "PASSED (3 thresholds)" if record["passed"] else "BREACHED ("
    assert html.index(opening) < html.index("<img") < html.index("Run(agent_storm")  # verdict
    # the machine, read before and after the timed phase, commits on the run's own database
    cal = record["calibration"]
    assert cal["measured"] and cal["before"]["postgres"]["commits"] > 0
    assert cal["after"]["taken_at"] >= result["ended_at"][:19]
    assert cal["figures"]["commit_p50_ms"] > 0 and "Machine calibration: cpu " in html
    assert "[driver]" not in html and "NaN" not in re.sub(r'src="data:[^"]*"', "", html)
    nb = nbformat.read(run_dir / "agent_storm.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["fleet_size"] == 200
    assert len(pq.read_table(run_dir / "requests.parquet")) == 501
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_a_breached_threshold_fails_the_notebook_but_keeps_the_record(embedded_env, tmp_path):
    import papermill

    out_dir = tmp_path / "breach"
    raised = None
    try:  # a 0.001 ms p95 cannot hold: the last cell raises, so papermill (and CI) fail
        papermill.execute_notebook(
            str(notebooks_dir() / "agent_storm.ipynb"), str(tmp_path / "breach.ipynb"),
            kernel_name="python3", progress_bar=False,
            parameters={"duration_s": 1.0, "fleet_size": 50, "run_dir": str(out_dir),
                        "thresholds": {"http_req_duration": ["p(95)<0.001"]}})
    except papermill.PapermillExecutionError as exc:
        raised = exc.ename
    assert raised == "ThresholdBreach"
    record = json.loads((out_dir / "record.json").read_text())
    assert record["passed"] is False and record["load"]["scheduled"] == 167


def test_a_canonical_notebook_with_smoke_sized_parameters_is_recorded_as_custom(
        embedded_env, tmp_path):
    import papermill

    out_dir = tmp_path / "custom"
    papermill.execute_notebook(
        str(notebooks_dir() / "agent_storm.ipynb"), str(tmp_path / "custom.ipynb"),
        kernel_name="python3", progress_bar=False,
        parameters={"profile": "canonical", "duration_s": 1.0, "fleet_size": 50,
                    "run_dir": str(out_dir)})
    record = json.loads((out_dir / "record.json").read_text())
    assert record["profile"] == "custom" and record["profile_base"] == "canonical"
    assert record["profile_differs"] == {"duration_s": {"profile": 300.0, "run": 1.0},
                                         "fleet_size": {"profile": 5000, "run": 50}}
    # run by hand, the notebook preflighted itself and left what it found
    preflight = json.loads((out_dir / "preflight.json").read_text())
    assert preflight["identity"]["kind"] == "stand-in" and preflight["scenario"] == "agent_storm"


def test_a_run_folder_preflighted_for_the_same_run_is_not_checked_again(embedded_env, tmp_path,
                                                                        monkeypatch):
    from workbench import scenarios
    from workbench.target import preflight

    spec = scenarios.get("acme_orders")
    params = spec.defaults("smoke")
    identity = preflight.preflight(preflight.resolve_target(), embedded.read_token(),
                                   **spec.preflight_args(params))
    write_preflight(tmp_path, "acme_orders", params, identity)

    def no_second_check(*args, **kwargs):
        raise AssertionError("preflight ran twice")

    monkeypatch.setattr(preflight, "preflight", no_second_check)
    assert Run("acme_orders", params, run_dir=tmp_path).identity == identity
    with pytest.raises(AssertionError, match="preflight ran twice"):  # other parameters
        Run("acme_orders", params | {"alg": "EdDSA"}, run_dir=tmp_path)
