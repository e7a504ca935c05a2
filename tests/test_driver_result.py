"""The driver's files have a declared shape: versioned, read through one reader, judged once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench import jsonio
from workbench.driver import (
    RESULT_SCHEMA_VERSION,
    DriveResult,
    DriveSpec,
    RequestTemplate,
    ShardReport,
    load_result,
    merge_reports,
    run_shard,
)
from workbench.driver.result import (
    MAX_CPU_FRACTION,
    load_shard_report,
    shard_document,
    validity_checks,
)
from workbench.errors import WorkbenchError

T = (RequestTemplate("GET", "/", "t"),)
OPEN = DriveSpec("http://x", T, rate=100.0, duration_s=1.0)
CLOSED = DriveSpec("http://x", T, executor="constant-vus", vus=2, duration_s=1.0)


class SlowSendEngine:
    """A fake engine whose ``send`` holds the event loop for ``block_s``: a driver too busy to
    keep its schedule, whatever else runs on the machine."""

    name = authority = "slow-send"

    def __init__(self, block_s: float) -> None:
        self.block_s = block_s

    def prepare(self, method, path, headers, body, want_body=False, want_head=False):
        return path

    async def start(self, warm: int = 0) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()

    def send(self, request, done) -> None:
        import time

        time.sleep(self.block_s)  # blocks the loop on purpose
        self.loop.call_soon(done, 200, b"application/json", 2, None, 0, None)

    async def close(self) -> None:
        pass


def checks_of(spec, status="completed", dropped=0, lag=0.1, achieved=100.0, offered=100.0,
              cpu=0.2, spin=False, watchdog=None):
    checks, reasons = validity_checks(spec, status, dropped, lag, achieved, offered, cpu, spin,
                                      watchdog)
    return {c["check"]: c for c in checks}, reasons


def test_a_valid_open_loop_passes_every_check():
    checks, reasons = checks_of(OPEN)
    assert list(checks) == ["dropped arrivals", "schedule-lag p99 (ms)", "achieved / offered",
                            "driver CPU (share of a core)",
                            "driver real-time watchdog (s into the run)", "run status"]
    assert all(c["ok"] for c in checks.values()) and reasons == []


@pytest.mark.parametrize("kw,check,reason", [
    ({"dropped": 3}, "dropped arrivals", "3 requests dropped: all 200 VUs were busy"),
    ({"lag": 2.5}, "schedule-lag p99 (ms)", "schedule-lag p99 2.50 ms > 2.0 ms"),
    ({"achieved": 94.0}, "achieved / offered",
     "achieved 94.0 req/s < 95% of offered 100.0 req/s"),
    ({"cpu": MAX_CPU_FRACTION}, "driver CPU (share of a core)",
     "driver CPU 90% of a core: the driver, not the target, set the pace"),
    ({"watchdog": 1.25}, "driver real-time watchdog (s into the run)",
     "the driver computed without blocking past its watchdog 1.25 s into the run and lost its "
     "real-time priority: its timing, not the target's, was measured"),
])
def test_each_limit_fails_its_own_check_with_its_reason(kw, check, reason):
    checks, reasons = checks_of(OPEN, **kw)
    assert [name for name, c in checks.items() if not c["ok"]] == [check]
    assert reasons == [reason]


def test_the_limits_themselves_pass():
    checks, reasons = checks_of(OPEN, lag=2.0, achieved=95.0, cpu=0.8999)
    assert reasons == [] and checks["achieved / offered"]["measured"] == 0.95


def test_a_closed_loop_is_judged_without_schedule_lag_or_offered_load():
    checks, reasons = checks_of(CLOSED, lag=50.0, achieved=10.0, offered=None)
    assert "schedule-lag p99 (ms)" not in checks and "achieved / offered" not in checks
    assert reasons == []


def test_an_interrupted_run_is_invalid_by_its_status_and_a_spinning_timer_by_nothing():
    checks, reasons = checks_of(OPEN, status="interrupted", achieved=10.0)
    assert "achieved / offered" not in checks  # the status says what went wrong
    assert reasons == ["run interrupted before its schedule ended"]
    checks, reasons = checks_of(OPEN, cpu=1.0, spin=True)  # the spin, not the load, used it
    assert checks["driver CPU (share of a core)"]["ok"] and reasons == []


def test_a_driver_that_cannot_keep_its_schedule_is_judged_invalid_by_its_lag(tmp_path):
    # 100 arrivals/s, each send holding the loop 15 ms: every arrival is later than the last
    spec = DriveSpec("http://x", T, rate=100.0, duration_s=0.3)
    report = run_shard(spec, tmp_path, engine=SlowSendEngine(0.015), handle_signals=False)
    result = merge_reports(spec, [report])
    assert result["scheduled"] == 30 == result["completed"]
    assert not result["valid"] and result["schedule_lag_ms"]["p99"] > 2.0
    failed = [c["check"] for c in result["checks"] if not c["ok"]]
    assert failed == ["schedule-lag p99 (ms)"]
    assert result["invalid_reasons"][0].startswith("schedule-lag p99 ")


def fake_run(tmp_path) -> DriveResult:
    spec = DriveSpec("http://x", T, rate=50.0, duration_s=0.2)
    report = run_shard(spec, tmp_path, engine=SlowSendEngine(0.0), handle_signals=False)
    result = merge_reports(spec, [report], "2026-01-01T00:00:00.000+00:00", None)
    jsonio.write_json(tmp_path / "result.json", result)
    return result


def test_result_json_carries_its_version_and_every_declared_field(tmp_path):
    result = fake_run(tmp_path)
    loaded = load_result(tmp_path)
    assert loaded == json.loads(json.dumps(result))
    assert loaded["schema_version"] == RESULT_SCHEMA_VERSION
    assert DriveResult.__required_keys__ <= set(loaded)
    # not scripted: the one extra is the connections (absent from results written before it)
    assert set(loaded) - DriveResult.__required_keys__ == {"connections"}
    assert {c["check"] for c in loaded["checks"]} >= {"dropped arrivals", "run status"}


@pytest.mark.parametrize("change,needle", [
    (lambda r: r | {"schema_version": 0}, "schema version 0; this workbench reads"),
    (lambda r: {k: v for k, v in r.items() if k != "schema_version"},
     "schema version None"),
    (lambda r: {k: v for k, v in r.items() if k not in ("checks", "by_tag")},
     "lacks by_tag, checks"),
    (lambda r: [r], "not a JSON object"),
])
def test_a_result_of_another_shape_is_refused_with_the_fix(tmp_path, change, needle):
    result = fake_run(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps(change(result)))
    with pytest.raises(WorkbenchError, match=needle) as err:
        load_result(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="no driver result"):
        load_result(tmp_path / "elsewhere")


def test_a_shard_file_is_versioned_too(tmp_path):
    spec = DriveSpec("http://x", T, rate=50.0, duration_s=0.1)
    report: ShardReport = run_shard(spec, tmp_path, engine=SlowSendEngine(0.0),
                                    handle_signals=False)
    jsonio.write_json(tmp_path / "shard.json", shard_document(report, "a", "b"))
    loaded = load_shard_report(tmp_path / "shard.json")
    assert loaded["schema_version"] == 1 and loaded["started_at"] == "a"
    assert ShardReport.__required_keys__ <= set(loaded)
    jsonio.write_json(tmp_path / "shard.json", report)  # no version: written by older code
    with pytest.raises(WorkbenchError, match="schema version None"):
        load_shard_report(tmp_path / "shard.json")


def test_spec_json_is_a_versioned_envelope_and_an_unversioned_one_is_refused(tmp_path):
    doc = json.loads(OPEN.to_json())
    assert doc["schema_version"] == 1 and doc["spec"]["rate"] == 100.0
    assert DriveSpec.from_json(OPEN.to_json()) == OPEN
    old = tmp_path / "spec.json"
    old.write_text(json.dumps(doc["spec"]))  # the shape older code wrote
    with pytest.raises(WorkbenchError, match="schema version None, this driver reads version 1"):
        DriveSpec.from_json(old.read_text())
    out = subprocess.run([sys.executable, "-m", "workbench.driver", str(old)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert out.stderr.count("\n") == 1 and not (tmp_path / "requests.parquet").exists()


def test_compare_reads_records_not_the_drivers_files(tmp_path):
    from tests.synthetic import make_record
    from workbench.compare import runs

    run = tmp_path / "runs" / "20261126T120000Z_agent_storm_1a2b3c4d"
    fake_run(run)  # result.json and requests.parquet, but no record yet
    jsonio.write_json(run / "spec.json", OPEN.document())
    with pytest.raises(WorkbenchError, match="is a run without a record.json"):
        runs.load_records([run])
    jsonio.write_json(run / "record.json", make_record())
    assert [r["run_id"] for r in runs.load_records([tmp_path / "runs"])] == [
        "20261126T120000Z_agent_storm_1a2b3c4d"]  # the folder walk skips spec and result
