"""The driver protects its own timing: what :func:`protect` asks for, gets, and records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.loopback import LoopbackServer
from workbench.driver import priority
from workbench.driver.result import least_protected

PROBE = """
import os
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    print("fifo")
except PermissionError:
    print("refused")
"""


def fifo_allowed() -> bool:
    """Whether this machine lets a process take SCHED_FIFO (root or CAP_SYS_NICE), asked of a
    throwaway process so the test process keeps its own scheduling."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    return out.stdout.strip() == "fifo"


def test_switched_off_leaves_the_inherited_scheduling(monkeypatch):
    monkeypatch.setenv(priority.DISABLE_ENV, "off")
    state = priority.protect()
    assert state["policy"] == "normal" and "WORKBENCH_DRIVER_PRIORITY=off" in state["notes"][0]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_refusals_are_said_plainly(monkeypatch):
    def refuse(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.delenv(priority.DISABLE_ENV, raising=False)
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(os, "setpriority", refuse)
    state = priority.protect()
    assert state["policy"] == "normal"
    assert "SCHED_FIFO refused (not permitted: needs root or CAP_SYS_NICE)" in state["notes"][0]
    assert "normal priority" in state["notes"][1]


def test_the_weakest_shard_speaks_for_the_run():
    fifo = {"policy": "fifo", "priority": 10, "cpus": [0], "notes": []}
    nice = {"policy": "nice", "priority": -20, "cpus": [1], "notes": ["SCHED_FIFO refused"]}
    assert least_protected([fifo, nice, None]) == nice
    assert least_protected([None]) is None


def test_loopback_target_is_local_and_a_documentation_address_is_not():
    assert priority.target_is_local("http://127.0.0.1:8080/x")
    assert priority.target_is_local("https://[::1]:8443/")
    assert not priority.target_is_local("http://192.0.2.1/")  # TEST-NET-1, never assigned here


def test_a_drive_records_the_scheduling_each_shard_got(tmp_path):
    with LoopbackServer() as srv:
        out = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"{srv.url}/status/200",
             "--rate", "50", "--duration", "1", "--shards", "2", "--out", str(tmp_path / "r")],
            capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != priority.DISABLE_ENV})
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    shards = [s["scheduling"] for s in result["shards"]]
    expected = {"fifo"} if fifo_allowed() else {"nice", "normal"}
    for state in shards:
        assert state["policy"] in expected
        assert len(state["cpus"]) == 1  # the target is on loopback: pinned
    allowed = os.sched_getaffinity(0)
    if len(allowed) > 1:
        assert shards[0]["cpus"] != shards[1]["cpus"]  # shard k on the k-th core
    assert result["driver"]["scheduling"]["policy"] == shards[0]["policy"]


def test_the_record_keeps_what_the_driver_got():
    from workbench.record import validity_section

    fifo = {"policy": "fifo", "priority": 10, "cpus": [0], "notes": []}
    reported = {"checks": [], "valid": True, "invalid_reasons": [],
                "schedule_lag_ms": {"p50": 0.1, "p99": 0.2},
                "driver": {"cpu_fraction": 0.05, "scheduling": fifo}}
    assert validity_section(reported)["driver_scheduling"] == fifo
    assert validity_section(None)["driver_scheduling"] is None
