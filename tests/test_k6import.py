"""k6 summaries (both of the formats certctl's harness writes) imported as runs, then tabled."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.compare import baseline, k6import
from workbench.errors import WorkbenchError

DATA = Path(__file__).parent / "data"
HANDLE_SUMMARY = DATA / "k6-handle-summary.json"  # certctl's k6.js handleSummary (API tier)
SUMMARY_EXPORT = DATA / "k6-summary-export.json"  # k6 --summary-export of acme_flow.js


def test_handle_summary_imports_per_scenario_endpoints(tmp_path):
    run_dir = k6import.import_summary(HANDLE_SUMMARY, "api_tier", out_root=tmp_path,
                                      started_at="2026-05-02T14:30:00Z", commit="0a1b2c3d4e5f")
    rec = baseline.load_record(run_dir / "record.json")
    assert rec["source"] | {"sha256": None} == {"tool": "k6", "imported": True,
                                                "format": "handleSummary",
                                                "file": HANDLE_SUMMARY.name, "sha256": None}
    assert sorted(rec["endpoints"]) == ["all", "issuance_acceptance", "list_certificates"]
    issuance = rec["endpoints"]["issuance_acceptance"]
    assert (issuance["p50"], issuance["p95"], issuance["p99"]) == (4.4419, 11.9043, 24.7781)
    assert issuance["p90"] is None  # not among certctl's summaryTrendStats
    everything = rec["endpoints"]["all"]
    assert everything["requests"] == 29750 and everything["failed"] == 12
    assert everything["error_rate"] == pytest.approx(0.0004036)
    assert rec["load"]["duration_s"] == pytest.approx(305.0124817)
    assert rec["run"]["started_at"] == "2026-05-02T14:30:00+00:00"
    assert rec["run"]["ended_at"].startswith("2026-05-02T14:35:05")
    assert rec["passed"] and len(rec["thresholds"]) == 5
    assert {"metric": "http_req_duration{scenario:list_certificates}", "threshold": "p(95)<800",
            "ok": True, "value": 5.3302} in rec["thresholds"]
    assert rec["machine"]["fingerprint"] is None and rec["windows"] is None
    assert "not corrected for coordinated omission" in rec["latency_basis"]
    group = rec["percentiles"]["groups"][0]
    assert group["p95"]["ci"] == [None, None]  # k6 keeps no samples: no interval


def test_summary_export_imports_custom_trends_and_failed_thresholds(tmp_path):
    run_dir = k6import.import_summary(SUMMARY_EXPORT, "acme_flow", out_root=tmp_path,
                                      started_at="2026-05-02T10:00:00+02:00")
    rec = baseline.load_record(run_dir / "record.json")
    assert rec["source"]["format"] == "summary-export"
    assert sorted(rec["endpoints"]) == ["all", "directory", "new_nonce", "renewal_info"]
    assert rec["endpoints"]["new_nonce"]["p90"] == 4.6119
    assert rec["endpoints"]["all"]["error_rate"] == pytest.approx(1 / 3)  # ARI 404s count
    failed = [t for t in rec["thresholds"] if not t["ok"]]
    assert failed == [{"metric": "http_req_failed", "threshold": "rate<0.01", "ok": False,
                       "value": pytest.approx(1 / 3)}]
    assert rec["passed"] is False and rec["validity"]["valid"] is True
    assert rec["run"]["started_at"] == "2026-05-02T08:00:00+00:00"  # stored in UTC
    assert rec["load"]["duration_s"] == pytest.approx(88293 / 293.9321)


def test_imported_run_is_committed_and_tabled_as_imported(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.test"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / ".gitignore").write_text("runs/\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True)
    env = {"PATH": "/usr/bin:/bin", "WORKBENCH_ROOT": str(repo),
           "WORKBENCH_RUNS_DIR": str(repo / "runs"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "import-k6",
                          str(HANDLE_SUMMARY), "--scenario", "api_tier", "--machine",
                          "gh-ubuntu-latest", "--commit", "0a1b2c3d4e5f", "--started-at",
                          "2026-05-02T14:30:00Z"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    run_dir = next((repo / "runs").iterdir())
    assert f"workbench baseline commit {run_dir}" in out.stdout
    dest = baseline.commit(run_dir, repo)
    assert dest.parent == repo / "baselines" / "gh-ubuntu-latest" / "api_tier"
    table = (repo / "baselines" / "README.md").read_text()
    assert ("| api_tier | issuance_acceptance | 4.44 | 11.90 | 24.78 |  |  | unknown |"
            " 2026-05-02 14:30 | 0a1b2c3d4e5f | certctl | gh-ubuntu-latest | k6 import | yes |"
            ) in table
    again = subprocess.run([sys.executable, "-m", "workbench.cli", "import-k6",
                            str(HANDLE_SUMMARY), "--scenario", "api_tier", "--started-at",
                            "2026-05-02T14:30:00Z"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 2 and "immutable" in again.stderr


@pytest.mark.parametrize("content,args,needle", [
    ("not json", {}, "is not JSON"),
    (json.dumps({"metrics": {}}), {}, "not a k6 summary"),
    (json.dumps({"metrics": {"vus": {"value": 1}}}), {}, "no http_req_duration"),
    (None, {"scenario": "API Tier"}, "scenario name 'API Tier'"),
    (None, {"started_at": "yesterday"}, "not an ISO 8601 time"),
    (None, {"started_at": "2026-05-02T10:00:00"}, "no time zone"),
    (None, {"commit": "main"}, "not a git SHA"),
    (None, {"machine": "../../x"}, "--machine '../../x' cannot name a baseline file"),
    (None, {"machine": ".."}, "--machine '..' cannot name a baseline file"),
    (None, {"machine": "a/b"}, "--machine 'a/b' cannot name a baseline file"),
])
def test_bad_input_is_refused_with_one_line(tmp_path, content, args, needle):
    path = tmp_path / "summary.json"
    if content is None:
        path.write_bytes(HANDLE_SUMMARY.read_bytes())
    else:
        path.write_text(content)
    kw = {"scenario": "api_tier"} | args
    with pytest.raises(WorkbenchError, match=needle) as err:
        k6import.import_summary(path, out_root=tmp_path / "runs", **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [
    '{"metrics": {"http_req_duration": 5}}',
    '{"metrics": {"http_req_duration": {"type": "trend", "values": 5}}}',
    '{"metrics": {"http_req_duration": {"type": "trend", "values": {}, "thresholds": [1]}}}',
    '{"metrics": {"http_req_duration": {"type": "trend", "values": {}}}, "state": 5}',
    '{"metrics": {"http_req_duration": {"avg": 1}, "http_reqs": {"count": "x", "rate": 2}}}',
    '{"metrics": {"http_req_duration": {"avg": 1}, "http_reqs": {"rate": 2}}}',
    '{"metrics": {"http_req_duration": {"avg": 1, "max": NaN}}}',
    '{"metrics": {"http_req_duration": {"avg": 1, "p(95)": Infinity}}}',
])
def test_a_summary_of_an_unexpected_shape_is_one_line_exit_2_and_nothing_written(tmp_path,
                                                                                 content):
    path = tmp_path / "summary.json"
    path.write_text(content)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "WORKBENCH_RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "import-k6", str(path),
                          "--scenario", "api_tier", "--started-at", "2026-05-02T14:30:00Z"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "k6 summary" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="cannot read k6 summary"):
        k6import.import_summary(tmp_path / "nope.json", "api_tier", out_root=tmp_path)
