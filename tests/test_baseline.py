import json
import subprocess

import pytest

from workbench import baseline
from workbench.errors import WorkbenchError


def record(run_id="20261126T120000Z_agent_storm_1a2b3c4d", valid=True, passed=True, p95=3.5):
    return {
        "schema_version": 1, "run_id": run_id, "scenario": "agent_storm", "profile": "smoke",
        "parameters": {"rate": 167.0}, "parameters_hash": "x",
        "target": {"url": "https://127.0.0.1:8443", "kind": "stand-in", "version": "standin-0.1",
                   "commit": "0123456789abcdef0123", "modified": False, "dsn": None},
        "workbench": {"git_sha": "f" * 40, "clean": True},
        "run": {"started_at": "2026-11-26T12:00:00.123+00:00",
                "ended_at": "2026-11-26T12:00:10.200+00:00", "status": "completed"},
        "machine": {"name": "x86_64-2c-24g-abcd1234", "fingerprint": "abcd"},
        "endpoints": {"heartbeat": {"p50": 1.5, "p95": p95, "p99": 7.25, "error_rate": 0.0,
                                    "achieved_rps": 167.0}},
        "validity": {"valid": valid, "reasons": [] if valid else ["3 arrivals dropped"]},
        "thresholds": [], "passed": passed,
    }


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.test")
    git(root, "config", "user.name", "t")
    (root / ".gitignore").write_text("runs/\n")
    (root / "code.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def write_run(root, rec):
    run_dir = root / "runs" / rec["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(rec))
    return run_dir


def test_commit_files_the_record_renders_the_table_and_commits_without_pushing(repo):
    run_dir = write_run(repo, record())
    dest = baseline.commit(run_dir, repo)
    assert dest.relative_to(repo).as_posix() == (
        "baselines/x86_64-2c-24g-abcd1234/agent_storm/"
        "20261126T120000Z_0123456789ab_1a2b3c4d.json")
    assert json.loads(dest.read_text())["endpoints"]["heartbeat"]["p95"] == 3.5
    log = git(repo, "log", "-1", "--format=%B")
    assert "0123456789ab" in log and "2026-11-26T12:00:00" in log
    assert git(repo, "status", "--porcelain") == ""
    table = (repo / "baselines" / "README.md").read_text()
    assert "| agent_storm | heartbeat | 1.50 | 3.50 | 7.25 |" in table
    assert git(repo, "remote") == ""  # nothing to push to, and nothing tried


def test_dirty_tree_is_refused_and_nothing_is_written(repo):
    (repo / "code.py").write_text("x = 2\n")
    run_dir = write_run(repo, record())
    with pytest.raises(WorkbenchError, match="uncommitted changes.*code.py"):
        baseline.commit(run_dir, repo)
    assert not (repo / "baselines").exists()


@pytest.mark.parametrize("kw,match", [({"valid": False}, "invalid"),
                                      ({"passed": False}, "thresholds")])
def test_invalid_or_failed_runs_need_force(repo, kw, match):
    run_dir = write_run(repo, record(**kw))
    with pytest.raises(WorkbenchError, match=match):
        baseline.commit(run_dir, repo)
    assert baseline.commit(run_dir, repo, force=True).exists()


def test_records_are_immutable(repo):
    run_dir = write_run(repo, record())
    baseline.commit(run_dir, repo)
    with pytest.raises(WorkbenchError, match="immutable"):
        baseline.commit(run_dir, repo)


def test_render_is_deterministic_and_check_detects_staleness(repo):
    for i, p95 in enumerate((3.0, 4.0)):
        baseline.commit(write_run(repo, record(run_id=f"20261126T12000{i}Z_agent_storm_0000000{i}",
                                               p95=p95)), repo)
    first = (repo / "baselines" / "README.md").read_bytes()
    baseline.render(repo)
    assert (repo / "baselines" / "README.md").read_bytes() == first
    assert baseline.render(repo, check=True)
    (repo / "baselines" / "README.md").write_text("stale\n")
    assert not baseline.render(repo, check=True)


def test_unknown_schema_version_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record() | {"schema_version": 99}))
    with pytest.raises(WorkbenchError, match="schema version 99"):
        baseline.load_record(path)
