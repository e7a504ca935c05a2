"""The driver protects its own timing: real-time scheduling and a core of its own, when allowed.

On a host shared with the target, a driver at normal priority waits behind the server and its
database for a core, and that wait lands in every measured latency (schedule lag). Measured
here (2 cores, two busy loops plus other work, 1,000 req/s against a 5 ms loopback server,
``benchmarks/run.py --only priority``): schedule-lag p99 77 ms at normal priority, 11.7 ms at
nice -20, 1.06 ms under SCHED_FIFO. So the driver asks for SCHED_FIFO at a low real-time
priority first, then nice -20, and records what it got. It never spins (``timer.py``), so
real-time priority costs the other processes only the CPU the driver actually uses; Linux's
real-time throttling keeps 5 % of each core for them even then.

Pinning: with the target on this host, each driver process keeps to one core (shard k to the
k-th allowed core), so the scheduler moves the server's threads off it instead of migrating
the driver between its wake-ups.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

import psutil

RT_PRIORITY = 10  # low among real-time priorities: above every normal process, below the kernel's
NICE = -20
DISABLE_ENV = "WORKBENCH_DRIVER_PRIORITY"  # "off": leave scheduling as inherited


def protect(shard: int = 0, pin: bool = False) -> dict:
    """Raise this process's scheduling priority and pin it to one core, as far as allowed.

    Returns what it got, for ``result.json``'s ``driver.scheduling``: ``policy`` (``fifo``,
    ``nice`` or ``normal``), ``priority`` (real-time priority or nice value), ``cpus`` the
    process may run on, and ``notes`` saying plainly what was refused and why.
    """
    notes: list[str] = []
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        notes.append(f"left as inherited ({DISABLE_ENV}=off)")
        return _state("normal", _nice(), notes)
    policy, priority = "normal", _nice()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        policy, priority = "fifo", RT_PRIORITY
    except (PermissionError, OSError, AttributeError) as exc:
        notes.append(f"SCHED_FIFO refused ({_why(exc)})")
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
            policy, priority = "nice", _nice()
        except (PermissionError, OSError) as exc2:
            notes.append(f"nice {NICE} refused ({_why(exc2)}); the driver runs at normal "
                         "priority and may wait behind other processes for a core")
    if pin:
        try:
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {allowed[shard % len(allowed)]})
        except (OSError, AttributeError) as exc:
            notes.append(f"pinning refused ({_why(exc)})")
    return _state(policy, priority, notes)


def _state(policy: str, priority: int, notes: list[str]) -> dict:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        cpus = []
    return {"policy": policy, "priority": priority, "cpus": cpus, "notes": notes}


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def _why(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "not permitted: needs root or CAP_SYS_NICE"
    return f"{type(exc).__name__}: {exc}"


def target_is_local(base_url: str) -> bool:
    """Whether the URL's host is this machine (loopback, or one of its own addresses)."""
    host = urlsplit(base_url).hostname
    if not host:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    own = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    for address in addresses:
        try:
            if ipaddress.ip_address(address.split("%")[0]).is_loopback or address in own:
                return True
        except ValueError:
            continue
    return False
