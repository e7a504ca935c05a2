import json
import re
import subprocess

import numpy as np
import pytest

from tests.synthetic import make_record
from workbench import jsonio
from workbench.analyse import hdr, stats
from workbench.compare import baseline
from workbench.errors import WorkbenchError
from workbench.report import record as schema


def record(run_id="20261126T120000Z_agent_storm_1a2b3c4d", valid=True, passed=True, p95=3.5):
    """A real record of a synthetic run, with the table's numbers pinned."""
    rec = make_record(run_id, valid=valid, passed=passed)
    rec["endpoints"]["heartbeat"] |= {"p50": 1.5, "p95": p95, "p99": 7.25, "error_rate": 0.0,
                                      "achieved_rps": 167.0}
    return rec


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
    assert "| agent_storm | heartbeat | 1.50 | 3.50 | 7.25 | 0.0000 | 167.0 | h1 |" \
        " 2026-11-26 12:00 | 0123456789ab | stand-in | x86_64-2c-24g-abcd1234 | measured | yes |" \
        in table
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


def test_render_twice_is_byte_identical_and_independent_of_file_order(repo):
    for i in range(3):
        baseline.commit(write_run(repo, record(run_id=f"2026112{i}T120000Z_agent_storm_0000000{i}",
                                               p95=3.0 + i)), repo)
    first = baseline.render_table(repo).encode()
    assert baseline.render_table(repo).encode() == first
    assert "generated at" not in first.decode().lower()
    rows = [line for line in first.decode().splitlines() if line.startswith("| agent_storm")]
    assert [r.split(" | ")[3] for r in rows] == ["3.00", "4.00", "5.00"]  # date order


def test_unknown_schema_version_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record() | {"schema_version": 99}))
    with pytest.raises(WorkbenchError, match="schema version 99"):
        baseline.load_record(path)


def test_schema_round_trips(tmp_path):
    rec = make_record(tags=("directory", "new-nonce"), n=2000, rate=200.0)
    path = tmp_path / "r.json"
    jsonio.write_json(path, rec, exclusive=True)
    loaded = baseline.load_record(path)
    assert loaded == json.loads(json.dumps(rec))  # nothing lost or altered but tuples
    jsonio.write_json(tmp_path / "again.json", loaded, exclusive=True)
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert set(loaded) == set(schema.REQUIRED)
    # percentiles with intervals per endpoint and status class
    group = next(g for g in loaded["percentiles"]["groups"]
                 if (g["endpoint"], g["status_class"]) == ("directory", "2xx"))
    lo, value, hi = group["p99"]["ci"][0], group["p99"]["value"], group["p99"]["ci"][1]
    assert lo <= value <= hi and group["count"] == 1000
    assert group["p99.9"]["ci"][1] is None  # 1000 samples cannot bound p99.9 from above
    # HDR histograms decode to every request, and the windows add up to them
    hist = hdr.decode(loaded["histograms"]["by_endpoint"]["directory"]["2xx"])
    assert hist.get_total_count() == 1000
    assert hist.get_value_at_percentile(50) / 1000 == pytest.approx(
        loaded["endpoints"]["directory"]["p50"], rel=1e-3)
    windows = loaded["windows"]["by_endpoint"]["directory"]
    assert sum(w["requests"] for w in windows) == 1000 and len(windows) == 10
    merged = stats.bucket_counts(hdr.merge(w["histogram"] for w in windows))
    np.testing.assert_array_equal(merged[1], stats.bucket_counts(hist)[1])
    assert loaded["endpoints"]["all"]["requests"] == 2000
    assert loaded["database"]["settings"]["synchronous_commit"] == "on"


def test_records_are_written_once_and_atomically(tmp_path):
    path = tmp_path / "baselines" / "r.json"
    jsonio.write_json(path, {"a": 1}, exclusive=True)
    with pytest.raises(WorkbenchError, match="immutable"):
        jsonio.write_json(path, {"a": 2}, exclusive=True)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_an_older_schema_version_is_migrated(tmp_path, monkeypatch):
    old = record()
    old["schema_version"] = 0
    old["machine_name"] = old.pop("machine")["name"]  # pretend version 0 kept a flat name

    def to_v1(rec):
        rec = dict(rec)
        rec["machine"] = {"name": rec.pop("machine_name"), "fingerprint": None}
        return rec | {"schema_version": 1}

    monkeypatch.setitem(schema.MIGRATIONS, 0, to_v1)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert baseline.load_record(path)["machine"]["name"] == "x86_64-2c-24g-abcd1234"
    monkeypatch.delitem(schema.MIGRATIONS, 0)
    with pytest.raises(WorkbenchError, match="no migration from baseline schema version 0"):
        baseline.load_record(path)


def test_a_version_1_record_reads_as_http1_without_telemetry(tmp_path):
    old = record()
    for key in ("protocol", "telemetry", "calibration"):
        del old[key]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old | {"schema_version": 1}))
    rec = baseline.load_record(path)
    assert (rec["schema_version"], rec["protocol"], rec["telemetry"]) == (3, "h1", None)


def test_a_version_2_record_says_it_has_no_calibration(tmp_path):
    old = record()
    del old["calibration"]
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(old | {"schema_version": 2}))
    rec = baseline.load_record(path)
    assert rec["schema_version"] == 3 and rec["calibration"]["measured"] is False
    assert rec["calibration"]["reason"] == ("recorded with record schema 2, before calibration "
                                            "existed")
    assert rec["calibration"]["figures"] == {} and rec["endpoints"] == old["endpoints"]


def test_an_incomplete_record_is_refused(tmp_path):
    rec = record()
    del rec["histograms"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(WorkbenchError, match="lacks 'histograms'"):
        baseline.load_record(path)


def test_database_facts_are_read_from_the_target_database(embedded_target):
    from workbench.run.scenario import database_facts

    facts = database_facts(embedded_target.dsn)
    assert re.match(r"^\d+\.\d+", facts["server_version"])
    assert set(facts["settings"]) == {"shared_buffers", "max_connections", "synchronous_commit"}
    assert database_facts(None) is None
    unreachable = database_facts("postgresql+psycopg://loadtest:s3cret-pw@127.0.0.1:1/certctl")
    assert unreachable["server_version"] is None and unreachable["error"]
    assert "s3cret-pw" not in json.dumps(unreachable)


def test_table_sizes_are_read_from_the_target_database(embedded_target):
    from workbench.run.scenario import database_facts, table_sizes

    tables = table_sizes(embedded_target.dsn)
    assert {"agents", "audit_events", "managed_certificates"} <= set(tables)
    assert all(set(t) == {"rows", "dead_rows", "bytes"} and t["bytes"] > 0
               for t in tables.values())
    assert database_facts(embedded_target.dsn, tables)["tables_before_load"] == tables
    assert table_sizes(None) is None
    assert table_sizes("postgresql+psycopg://loadtest:pw@127.0.0.1:1/certctl") is None


def test_commit_date_of_the_measured_commit():
    from workbench.paths import project_root
    from workbench.report.reporting import commit_date

    head = subprocess.run(["git", "-C", str(project_root()), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    if head:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", commit_date(head))
    assert commit_date("f" * 40) is None and commit_date("--help") is None
    assert commit_date(None) is None and commit_date("unknown") is None


@pytest.mark.parametrize("field,value", [("machine", "../../x"), ("machine", ".."),
                                         ("machine", "a/b"), ("scenario", "../up"),
                                         ("commit", "../../../etc"), ("machine", "x\ny")])
def test_a_record_whose_names_would_leave_baselines_is_refused_and_nothing_is_written(
        repo, field, value):
    rec = record()
    if field == "machine":
        rec["machine"]["name"] = value
    elif field == "scenario":
        rec["scenario"] = value
    else:
        rec["target"]["commit"] = value
    run_dir = write_run(repo, rec)
    with pytest.raises(WorkbenchError, match="cannot name a baseline file"):
        baseline.commit(run_dir, repo)
    assert sorted(p.name for p in repo.iterdir()) == [".git", ".gitignore", "code.py", "runs"]
    assert git(repo, "status", "--porcelain") == ""


def test_a_symlinked_machine_folder_cannot_lead_out_of_baselines(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "baselines").mkdir()
    (repo / "baselines" / "x86_64-2c-24g-abcd1234").symlink_to(outside)
    with pytest.raises(WorkbenchError, match="outside baselines/"):
        baseline.commit(write_run(repo, record()), repo)
    assert list(outside.iterdir()) == []


def test_a_failed_git_commit_leaves_nothing_staged_or_written_and_a_retry_succeeds(repo):
    baseline.commit(write_run(repo, record(run_id="20261126T110000Z_agent_storm_00000000")),
                    repo)
    table = (repo / "baselines" / "README.md").read_text()
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho refused by hook >&2\nexit 1\n")
    hook.chmod(0o755)
    run_dir = write_run(repo, record())
    with pytest.raises(WorkbenchError, match="refused by hook"):
        baseline.commit(run_dir, repo)
    assert git(repo, "status", "--porcelain") == ""  # nothing staged, nothing left over
    assert (repo / "baselines" / "README.md").read_text() == table
    assert len(list((repo / "baselines").rglob("*.json"))) == 1
    hook.unlink()
    dest = baseline.commit(run_dir, repo)  # the retry does not say "already exists"
    assert dest.exists() and git(repo, "status", "--porcelain") == ""


def test_render_writes_the_table_atomically(repo, monkeypatch):
    baseline.commit(write_run(repo, record()), repo)
    readme = repo / "baselines" / "README.md"
    before = readme.read_text()
    monkeypatch.setattr(jsonio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk")))
    readme.write_text("stale\n")
    with pytest.raises(OSError):
        baseline.render(repo)
    assert readme.read_text() == "stale\n"  # the old file whole, never a half-written one
    assert [p.name for p in readme.parent.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    baseline.render(repo)
    assert readme.read_text() == before


def test_the_table_says_what_kind_of_numbers_each_machine_gave(repo):
    baseline.commit(write_run(repo, record()), repo)  # its target answered on 127.0.0.1
    remote = record(run_id="20261126T130000Z_agent_storm_2b3c4d5e")
    remote["target"]["url"] = "https://certctl.example.test:8443"
    remote["machine"]["name"] = "x86_64-2c-24g-ffff0000"
    baseline.commit(write_run(repo, remote), repo)
    lines = (repo / "baselines" / "README.md").read_text().split("## Machines", 1)[1]
    local = next(line for line in lines.splitlines() if "x86_64-2c-24g-abcd1234" in line)
    away = next(line for line in lines.splitlines() if "x86_64-2c-24g-ffff0000" in line)
    assert "test CPU" in local and "co-located" in local and "lower bounds" in local
    assert "another host" in away and "co-located" not in away
