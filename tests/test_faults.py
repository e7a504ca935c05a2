"""Faults survived, with real processes on loopback: the run keeps measuring while the target
fails, ends on time, and every sample it took reads back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer, free_port
from workbench import analysis, scenarios, target
from workbench.driver import DriveSpec, RequestTemplate, drive
from workbench.scenarios import agent_storm


def heartbeat_spec(info: target.TargetInfo, rate: float, duration_s: float, **kw) -> DriveSpec:
    templates = tuple(RequestTemplate("POST", f"/api/v1/agents/{agent}/heartbeat", "heartbeat")
                      for agent in agent_storm.agent_ids(50))
    return DriveSpec(base_url=info.url, templates=templates, rate=rate, duration_s=duration_s,
                     ca_file=info.ca_file, token_env="FAULT_TEST_TOKEN", timeout_s=2.0, **kw)


def assert_consistent(result: dict, out: Path) -> None:
    """The invariant holds and every recorded sample reads back."""
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    table = pq.read_table(out / "requests.parquet")
    assert table.num_rows == result["scheduled"]


@pytest.fixture()
def own_target(tmp_path):
    """A target of this test's own: these tests kill it."""
    state = tmp_path / "state"
    info = target.up(state, port=free_port())
    storm = scenarios.get("agent_storm")
    storm.seed(info.dsn, storm.params_for("smoke", {"fleet_size": 50}))
    token = target.read_token(state)
    yield state, info, token
    target.down(state)


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def test_target_killed_mid_run_counts_connect_errors_and_keeps_the_data(own_target, tmp_path):
    state, info, token = own_target
    marks = {}

    def kill() -> None:
        marks["killed_ns"] = time.time_ns()
        os.kill(info.standin_pid, signal.SIGKILL)

    killer = later(2.0, kill)
    started = time.monotonic()
    result = drive(heartbeat_spec(info, 50, 4.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token}, echo=lambda _: None)
    killer.join()
    assert time.monotonic() - started < 4.0 + 2.0 + 5.0  # schedule + timeout + start-up
    assert result["status"] == "completed" and result["scheduled"] == 200
    df = analysis.load_requests(tmp_path / "run")
    # intended starts are UTC-anchored, so they line up with the wall-clock kill
    before = df[df["end_ns"] < marks["killed_ns"]]
    after = df[df["intended_ns"] > marks["killed_ns"] + 100_000_000]
    assert len(before) > 10 and not before["failed"].any()
    assert len(after) > 10 and after["failed"].all()
    assert set(after["error"]) <= {"connect", "reset"}, set(after["error"])
    assert_consistent(result, tmp_path / "run")


def test_target_restarted_mid_run_recovers_and_the_gap_shows_per_window(own_target, tmp_path):
    state, info, token = own_target
    marks = {}

    def kill() -> None:
        marks["killed_ns"] = time.time_ns()
        os.kill(info.standin_pid, signal.SIGKILL)

    def restart() -> None:
        target.up(state, port=info.port)
        marks["back_ns"] = time.time_ns()

    later(2.5, kill)
    restarter = later(3.5, restart)
    result = drive(heartbeat_spec(info, 50, 7.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token}, echo=lambda _: None)
    restarter.join()
    assert_consistent(result, tmp_path / "run")
    df = analysis.load_requests(tmp_path / "run")
    # intended starts are UTC-anchored, so they line up with the wall-clock fault marks
    before = df[df["end_ns"] < marks["killed_ns"]]
    after = df[df["intended_ns"] > marks["back_ns"] + 200_000_000]
    assert len(before) > 20 and not before["failed"].any()
    assert len(after) > 20 and not after["failed"].any()
    assert df["failed"].sum() > 0
    per_window = analysis.windows(df, 1.0)
    assert (per_window["errors"] > 0).sum() >= 1  # the gap shows in the per-window figures
    assert per_window["errors"].iloc[-1] == 0


def test_database_stopped_under_the_standin_gives_5xx_and_a_clean_end(own_target, tmp_path):
    state, info, token = own_target
    pgdata = Path(info.pg_pgdata)
    later(1.0, lambda: target._stop_postgres(pgdata))
    started = time.monotonic()
    result = drive(heartbeat_spec(info, 40, 3.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token}, echo=lambda _: None)
    assert time.monotonic() - started < 3.0 + 2.0 + 3.0
    assert result["status"] == "completed"
    assert result["errors"].get("http_5xx", 0) + result["errors"].get("timeout", 0) >= 40
    assert result["errors"].get("http_5xx", 0) > 0, result["errors"]
    assert_consistent(result, tmp_path / "run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_driver_signalled_flushes_samples_and_says_interrupted(tmp_path, sig):
    with LoopbackServer() as srv:
        spec = DriveSpec(base_url=srv.url, templates=(RequestTemplate("GET", "/delay?ms=5", "d"),),
                         rate=100, duration_s=30.0)
        (tmp_path / "spec.json").write_text(spec.to_json())
        proc = subprocess.Popen([sys.executable, "-m", "workbench.driver",
                                 str(tmp_path / "spec.json")], stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:  # the first progress line, 2 s into the schedule: load flows
            if line.startswith("[driver]"):
                break
        proc.send_signal(sig)
        proc.communicate(timeout=15)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted" and not result["valid"]
    assert 100 <= result["scheduled"] < 3000
    assert_consistent(result, tmp_path)


def test_interrupting_the_caller_interrupts_the_driver_and_keeps_its_samples(tmp_path):
    """A Jupyter kernel interrupt: KeyboardInterrupt in the process that called drive()."""
    with LoopbackServer() as srv:
        code = (
            "import sys; from pathlib import Path\n"
            "from workbench.driver import DriveSpec, RequestTemplate, drive\n"
            f"spec = DriveSpec(base_url={srv.url!r}, rate=100, duration_s=30.0,"
            " templates=(RequestTemplate('GET', '/delay?ms=5', 'd'),))\n"
            "try:\n"
            f"    drive(spec, Path({str(tmp_path)!r}), echo=lambda _: None)\n"
            "except KeyboardInterrupt:\n"
            "    sys.exit(42)\n")
        caller = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(3.0)
        caller.send_signal(signal.SIGINT)
        assert caller.wait(timeout=15) == 42
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert_consistent(result, tmp_path)
