"""The driver protects its own timing: what :func:`protect` asks for, gets, and records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from tests.loopback import LoopbackServer
from tests.rawserver import RawServer
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


def driver_env(tmp_path) -> dict[str, str]:
    """Protection on, and a private core-lock folder: no other driver on the host counts."""
    env = {k: v for k, v in os.environ.items() if k != priority.DISABLE_ENV}
    return env | {priority.CORE_LOCKS_ENV: str(tmp_path / "locks")}


def test_a_drive_records_the_scheduling_each_shard_got(tmp_path):
    with LoopbackServer() as srv:
        out = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"{srv.url}/status/200",
             "--rate", "50", "--duration", "1", "--shards", "2", "--out", str(tmp_path / "r")],
            capture_output=True, text=True, timeout=120, env=driver_env(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    shards = [s["scheduling"] for s in result["shards"]]
    expected = {"fifo"} if fifo_allowed() else {"nice", "normal"}
    for state in shards:
        assert state["policy"] in expected
        assert len(state["cpus"]) == 1  # the target is on loopback: pinned
    allowed = os.sched_getaffinity(0)
    if len(allowed) > 1:
        assert shards[0]["cpus"] != shards[1]["cpus"]  # two free cores: one each
        # shared_with counts other commands' drivers on that core (parallel test workers
        # have theirs): recorded, not controlled here
        assert all(isinstance(s["shared_with"], int) and s["shared_with"] >= 0 for s in shards)
    assert result["driver"]["scheduling"]["policy"] == shards[0]["policy"]


def test_the_record_keeps_what_the_driver_got():
    from workbench.report.record import validity_section

    fifo = {"policy": "fifo", "priority": 10, "cpus": [0], "notes": []}
    reported = {"checks": [], "valid": True, "invalid_reasons": [],
                "schedule_lag_ms": {"p50": 0.1, "p99": 0.2},
                "driver": {"cpu_fraction": 0.05, "scheduling": fifo}}
    assert validity_section(reported)["driver_scheduling"] == fifo
    assert validity_section(None)["driver_scheduling"] is None


def test_drivers_spread_over_cores_before_any_two_share(tmp_path, monkeypatch):
    monkeypatch.setenv(priority.CORE_LOCKS_ENV, str(tmp_path))
    monkeypatch.setattr(priority, "core_busy", lambda cpus: {0: 50.0, 1: 10.0, 2: 90.0})
    taken = [priority.claim_core([0, 1, 2]) for _ in range(4)]
    try:
        assert taken == [(1, 0), (0, 0), (2, 0), (1, 1)]  # least busy first, then shared
    finally:
        while priority._held:
            os.close(priority._held.pop())
    assert priority.claim_core([0, 1, 2]) == (1, 0)  # closed (as at exit): free again
    os.close(priority._held.pop())


CHUNKS = 2_000_000  # one-byte chunks: seconds of the driver's CPU to parse, little to send
HOSTILE = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n"
           + b"1\r\nx\r\n" * CHUNKS + b"0\r\n\r\n")
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def test_a_driver_busy_on_a_hostile_response_gives_a_shared_core_back(tmp_path):
    """Two real-time drivers on one core, one fed a response that costs seconds of CPU to
    parse. SCHED_FIFO does not time-slice equals: without the watchdog the other would wait
    out the whole parse; with it, the busy one drops its priority within WATCHDOG_MS."""
    allowed = sorted(os.sched_getaffinity(0))
    if not fifo_allowed() or len(allowed) < 2:
        pytest.skip("needs SCHED_FIFO and a second core for the servers")
    core = allowed[-1]
    env = driver_env(tmp_path)

    def drive(url: str, out: str, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "drive", url, "--out", str(tmp_path / out),
             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}))

    gate = threading.Event()
    with LoopbackServer() as srv, RawServer({"/hostile": HOSTILE, "/api/v1/version": NOT_FOUND},
                                            gates={"/hostile": gate}) as raw:
        busy = drive(f"{raw.url}/hostile", "busy", "--rate", "1", "--duration", "1",
                     "--timeout", "200")
        light = drive(f"{srv.url}/status/200", "light", "--rate", "200", "--duration", "10")
        for line in light.stderr:  # its first progress line: the light driver is measuring
            if line.startswith("[driver]"):
                break
        gate.set()  # now the hostile answer
        _, light_err = light.communicate(timeout=300)
        _, busy_err = busy.communicate(timeout=300)
    assert busy.returncode == 0 and light.returncode == 0, busy_err + light_err
    hostile = json.loads((tmp_path / "busy" / "result.json").read_text())
    calm = json.loads((tmp_path / "light" / "result.json").read_text())
    assert hostile["completed"] == 1
    assert calm["driver"]["scheduling"]["cpus"] == hostile["driver"]["scheduling"]["cpus"]
    # whichever started first held the core, the other shared it
    assert sorted(r["driver"]["scheduling"]["shared_with"] for r in (hostile, calm)) == [0, 1]
    watched = hostile["driver"]["scheduling"]
    assert watched["watchdog"]["fired_at_s"] >= 0 and watched["policy"] == "normal"
    assert not hostile["valid"] and any("watchdog" in r for r in hostile["invalid_reasons"])
    # the parse overlapped the light run by at least a second: the test tested something
    parse_end = hostile["t0_epoch_ns"] + hostile["latency_ms"]["max"] * 1e6
    assert min(parse_end, calm["t0_epoch_ns"] + 10e9) - calm["t0_epoch_ns"] >= 3e9
    # without the watchdog the light driver waits out the whole parse (seconds)
    assert calm["schedule_lag_ms"]["max"] < 1000
    assert calm["driver"]["scheduling"]["watchdog"]["fired_at_s"] is None


def test_a_killed_driver_gives_its_core_back(tmp_path, monkeypatch):
    """The lock is an flock on an open file: the kernel drops it however the holder ends."""
    claim = ("import sys, time; from workbench.driver import priority; "
             "print(*priority.claim_core([0]), flush=True); time.sleep(60)")
    monkeypatch.setenv(priority.CORE_LOCKS_ENV, str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", claim], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ["0", "0"]
        assert priority.claim_core([0]) == (0, 1)  # held: this one shares
        holder.kill()  # SIGKILL: no handler, no clean-up code runs
        holder.wait(30)
        assert priority.claim_core([0]) == (0, 0)  # the kernel released it
    finally:
        holder.kill()
        while priority._held:
            os.close(priority._held.pop())
