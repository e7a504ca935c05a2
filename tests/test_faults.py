"""Faults survived, with real processes on loopback: the run keeps measuring while the target
fails, ends on time, and every sample it took reads back.

Faults are timed by the driver's own progress (its "[driver] ... sent N" lines), never by the
test's clock: on a busy machine the driver may take seconds to start, and a fault timed from
the test's start would land before any load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer, free_port
from workbench import scenarios
from workbench.analyse import analysis
from workbench.driver import DriveSpec, RequestTemplate, drive
from workbench.scenarios import _fleet
from workbench.target import embedded


def heartbeat_spec(info: embedded.TargetInfo, rate: float, duration_s: float, **kw) -> DriveSpec:
    templates = tuple(RequestTemplate("POST", f"/api/v1/agents/{agent}/heartbeat", "heartbeat")
                      for agent in _fleet.agent_ids(50))
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
    info = embedded.up(state, port=free_port())
    storm = scenarios.get("agent_storm")
    storm.seed(info.dsn, storm.params_for("smoke", {"fleet_size": 50}))
    token = embedded.read_token(state)
    yield state, info, token
    embedded.down(state)


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def once_sent(count: int, action) -> Callable[[str], None]:
    """An ``echo`` for drive() that calls ``action`` once, at the first progress line saying at
    least ``count`` requests were sent: the fault lands while load flows, however late it began."""
    fired = threading.Event()

    def echo(line: str) -> None:
        sent = re.search(r"\bsent (\d+)", line)
        if sent and int(sent.group(1)) >= count and not fired.is_set():
            fired.set()
            action()

    return echo


def sent_so_far(stream) -> int:
    """Read driver progress lines from ``stream`` until one reports requests sent; that count."""
    for line in stream:
        sent = re.search(r"\bsent (\d+)", line)
        if line.startswith("[driver]") and sent and int(sent.group(1)) > 0:
            return int(sent.group(1))
    raise AssertionError("the driver ended without a progress line")


def test_target_killed_mid_run_counts_connect_errors_and_keeps_the_data(own_target, tmp_path):
    state, info, token = own_target
    marks = {}

    def kill() -> None:
        marks["killed_ns"] = time.time_ns()
        os.kill(info.pid, signal.SIGKILL)

    result = drive(heartbeat_spec(info, 50, 4.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token}, echo=once_sent(30, kill))
    # ends on time: every request after the kill was refused at once (connect, reset) and
    # none waited for its timeout, asserted below
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
        os.kill(info.pid, signal.SIGKILL)

    def restart() -> None:
        embedded.up(state, port=info.port)
        marks["back_ns"] = time.time_ns()

    restarter = []
    result = drive(heartbeat_spec(info, 50, 7.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token},
                   echo=once_sent(50, lambda: (kill(), restarter.append(later(1.0, restart)))))
    restarter[0].join()
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
    marks = {}

    def stop() -> None:
        embedded._stop_postgres(pgdata)
        marks["stopped_ns"] = time.time_ns()

    stopper = []
    # stopped once load flows; 6 s leave seconds of load after the stop, however slow it is
    result = drive(heartbeat_spec(info, 40, 6.0), tmp_path / "run",
                   env={"FAULT_TEST_TOKEN": token},
                   echo=once_sent(1, lambda: stopper.append(later(0.0, stop))))
    stopper[0].join()
    # ends on time: the run completed its schedule; every request ended (5xx or timeout)
    assert result["status"] == "completed"
    assert result["errors"].get("http_5xx", 0) + result["errors"].get("timeout", 0) >= 40
    assert result["errors"].get("http_5xx", 0) > 0, result["errors"]
    df = analysis.load_requests(tmp_path / "run")
    assert df[df["intended_ns"] > marks["stopped_ns"]]["failed"].all()
    assert_consistent(result, tmp_path / "run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_driver_signalled_flushes_samples_and_says_interrupted(tmp_path, sig):
    with LoopbackServer() as srv:
        spec = DriveSpec(base_url=srv.url, templates=(RequestTemplate("GET", "/delay?ms=5", "d"),),
                         rate=100, duration_s=30.0)
        (tmp_path / "spec.json").write_text(spec.to_json())
        proc = subprocess.Popen([sys.executable, "-m", "workbench.driver",
                                 str(tmp_path / "spec.json")], stderr=subprocess.PIPE, text=True)
        while sent_so_far(proc.stderr) < 100:  # signalled once load has flowed a while
            pass
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
            f"    drive(spec, Path({str(tmp_path)!r}), echo=lambda l: print(l, flush=True))\n"
            "except KeyboardInterrupt:\n"
            "    sys.exit(42)\n")
        caller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        sent_so_far(caller.stdout)  # interrupted once the driver is sending, not while starting
        caller.send_signal(signal.SIGINT)
        caller.communicate(timeout=15)
        assert caller.returncode == 42
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert_consistent(result, tmp_path)
