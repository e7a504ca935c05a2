"""connector_handshake: k6's connector tier, end to end through papermill on every target type
installed here (the F5 mock always), and its parameter-dependent thresholds and capacity line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from workbench import scenarios
from workbench.errors import WorkbenchError
from workbench.target import connectors
from workbench.target.ports import free_ports

SCENARIO = scenarios.get("connector_handshake")


@pytest.mark.slow  # the connector daemons, CLI processes and a notebook kernel per type
def test_smoke_runs_through_papermill_on_every_installed_target_type(tmp_path, monkeypatch):
    state, runs = tmp_path / "state", tmp_path / "runs"
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(state))
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(runs))
    info = connectors.up(state, first_port=free_ports(len(connectors.TYPES)))
    present = list(info["targets"])  # the F5 mock always; each daemon when installed
    assert "f5" in present and set(present) | set(info["missing"]) == set(connectors.TYPES)
    try:
        for target_type in present:
            before = set(runs.iterdir()) if runs.exists() else set()
            out = subprocess.run(
                [sys.executable, "-m", "workbench.cli", "run", "connector_handshake",
                 "--profile", "smoke", "-p", "target_type", target_type, "-p", "duration_s",
                 "2", "-p", "rate", "10"], capture_output=True, text=True, timeout=600)
            [run_dir] = set(runs.iterdir()) - before
            check_run(run_dir, out, target_type, info["targets"][target_type])
    finally:
        connectors.down(state)


def check_run(run_dir: Path, out: subprocess.CompletedProcess, target_type: str,
              entry: dict) -> None:
    record = json.loads((run_dir / "record.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    spec = json.loads((run_dir / "spec.json").read_text())["spec"]
    # a breach is the machine's verdict (a busy one may breach); a crash is not
    assert out.returncode == int(not record["passed"]), out.stderr[-3000:]
    assert spec["connection_per_request"] and spec["templates"][0]["tag"] == target_type
    assert spec["templates"][0]["path"] == connectors.DAEMONS[target_type].path
    assert result["completed"] == 20 and result["failed"] == 0
    assert result["connections"]["opened"] == 20  # a connection per iteration
    assert record["target"]["kind"] == target_type
    assert record["target"]["version"] == entry["version"]
    assert {t["metric"] for t in record["thresholds"]} == {
        f"http_req_duration{{endpoint:{target_type}}}", "http_req_failed"}
    phases = record["phases"][target_type]
    assert set(phases) == {"connect", "tls", "ttfb", "total"}
    assert all(p["count"] == 20 for p in phases.values())
    assert phases["total"]["p50"] >= phases["tls"]["p50"] > 0
    assert "Connection phases by endpoint (ms)" in (run_dir / "report.html").read_text()
    identity = json.loads((run_dir / "preflight.json").read_text())["identity"]
    assert identity["url"] == entry["url"]
    for path in run_dir.rglob("*"):  # no private key leaves the state folder
        if path.is_file() and path.suffix != ".parquet":
            assert b"PRIVATE KEY" not in path.read_bytes(), path


@pytest.mark.parametrize("target_type, p95, p99", [
    ("nginx", "p(95)<1000", "p(99)<3000"), ("apache", "p(95)<1000", "p(99)<3000"),
    ("haproxy", "p(95)<1000", "p(99)<3000"), ("f5", "p(95)<1500", "p(99)<5000")])
def test_each_run_is_judged_by_its_target_types_k6_thresholds(target_type, p95, p99):
    params = SCENARIO.params_for("canonical", {"target_type": target_type})
    assert SCENARIO.default_thresholds(params) == {
        f"http_req_duration{{endpoint:{target_type}}}": [p95, p99],
        "http_req_failed": ["rate<0.01"]}
    assert params["rate"] * 60 == pytest.approx(100) and params["duration_s"] == 300
    assert params["max_vus"] == 50
    assert SCENARIO.executor_settings(params)["connection_per_request"] is True


def test_a_connection_per_client_or_an_unknown_type_is_refused_before_any_load():
    with pytest.raises(WorkbenchError, match="connection_per_client must stay false"):
        SCENARIO.params_for("smoke", {"connection_per_client": True})
    with pytest.raises(WorkbenchError, match="must be one of nginx, apache, haproxy, f5"):
        SCENARIO.params_for("smoke", {"target_type": "iis"})
    with pytest.raises(WorkbenchError, match="must be one of h1"):
        SCENARIO.params_for("smoke", {"protocol": "h2"})
    assert "connector_handshake" not in scenarios.certctl_names()


def test_its_capacity_reads_as_connections_a_minute_against_the_harness():
    line = SCENARIO.capacity_text({}, 50.0, False)
    assert line.startswith("connection rate: 3,000 new TLS connections a minute (50.0/s)")
    assert "30 times the 100 a minute" in line
    assert "at least 3,000" in SCENARIO.capacity_text({}, 50.0, True)


def test_the_phase_table_is_none_for_a_run_that_reused_connections():
    from workbench.analyse import analysis

    frame = analysis.with_derived(pd.DataFrame({
        "intended_ns": [1, 2], "send_ns": [1, 2], "end_ns": [5, 6], "status": [200, 200],
        "bytes": [2, 2], "error": ["", ""], "tag": ["a", "a"]}))
    assert analysis.phases(frame) is None
