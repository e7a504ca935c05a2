"""The driver protects its own timing: real-time scheduling and a core of its own, when allowed.

On a host shared with the target, a driver at normal priority waits behind the server and its
database for a core, and that wait lands in every measured latency (schedule lag). Measured
here (2 cores, two busy loops plus other work, 1,000 req/s against a 5 ms loopback server,
``benchmarks/run.py --only priority``): schedule-lag p99 77 ms at normal priority, 11.7 ms at
nice -20, 1.06 ms under SCHED_FIFO. So the driver asks for SCHED_FIFO at a low real-time
priority first, then nice -20, and records what it got. It never spins (``timer.py``), so
real-time priority costs the other processes only the CPU the driver actually uses; Linux's
real-time throttling keeps 5 % of each core for them even then.

Pinning: with the target on this host, each driver process keeps to one core, so the scheduler
moves the server's threads off it instead of migrating the driver between its wake-ups. The
core is chosen, not assumed: the allowed core held by the fewest other workbench drivers
(a lock file per core and slot under :func:`core_lock_dir`, host-wide; ``flock`` on an open
file is released by the kernel however the process ends, SIGKILL included), the least busy
among those. SCHED_FIFO does not time-slice equals, so two drivers on one core take turns
only when one blocks: spreading them is what lets each keep its timing.

The watchdog: a real-time driver that computes without blocking (a hostile or huge response, a
long fold) would keep every other driver on its core off it, and normal processes to 5 %. The
kernel counts real-time CPU time since the last blocking call (``RLIMIT_RTTIME``) and signals
SIGXCPU past :data:`WATCHDOG_MS`; the driver then drops every thread to normal scheduling and
records when (``scheduling["watchdog"]``; a run it fired in is invalid). The drop runs in the
main thread at its next bytecode, so a single C call holding the GIL delays it to its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import resource
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

RT_PRIORITY = 10  # low among real-time priorities: above every normal process, below the kernel's
NICE = -20
DISABLE_ENV = "WORKBENCH_DRIVER_PRIORITY"  # "off": leave scheduling as inherited
CORE_LOCKS_ENV = "WORKBENCH_CORE_LOCKS"  # the lock folder (default: host-wide, in the temp dir)
WATCHDOG_MS = 300  # real-time CPU without blocking before the driver gives its priority up
BUSY_SAMPLE_S = 0.05  # how long each core's load is sampled before choosing one
MAX_DRIVERS_PER_CORE = 256  # lock slots per core: drivers sharing one are counted up to this

_held: list[int] = []  # the open lock file of the claimed core: held until release()
_watchdog: dict[str, Any] = {"armed": False, "fired_epoch_ns": None, "rttime": None}


def pin_to_core() -> dict:
    """Pin this process to one core (:func:`claim_core`); threads started later inherit it.

    Returns ``cpus`` (the one core), ``shared_with`` (other workbench drivers already on it)
    and ``notes``; for :func:`protect`, which adds the policy at the start instant.
    """
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        return {"notes": []}
    try:
        core, others = claim_core(sorted(os.sched_getaffinity(0)))
        os.sched_setaffinity(0, {core})
    except (OSError, AttributeError) as exc:
        return {"notes": [f"pinning refused ({_why(exc)})"]}
    notes = [f"core {core} shared with {others} other workbench driver(s): every allowed core "
             "had one"] if others else []
    return {"cpus": [core], "shared_with": others, "notes": notes}


def protect(pinned: dict | None = None, watchdog: bool = True) -> dict:
    """Raise the scheduling priority of every thread of this process, as far as allowed.

    A driver calls it at its start instant, once warm: start-up work (imports, warm-up, a
    script's set-up) then runs at normal priority and cannot keep another driver off a core.
    Returns what it got, for ``result.json``'s ``driver.scheduling``: ``policy`` (``fifo``,
    ``nice`` or ``normal``), ``priority`` (real-time priority or nice value), ``cpus`` the
    process may run on, ``notes`` saying plainly what was refused and why, and what
    :func:`pin_to_core` found (``pinned``). ``watchdog`` arms the busy watchdog under
    SCHED_FIFO (a load generator's; not a benchmark server's).
    """
    pinned = pinned or {}
    notes: list[str] = list(pinned.get("notes", []))
    extra = {k: v for k, v in pinned.items() if k == "shared_with"}
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        notes.append(f"left as inherited ({DISABLE_ENV}=off)")
        return _state("normal", _nice(), notes)
    policy, priority = "normal", _nice()
    try:
        _each_thread(lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO,
                                                       os.sched_param(RT_PRIORITY)))
        policy, priority = "fifo", RT_PRIORITY
    except (PermissionError, OSError, AttributeError) as exc:
        notes.append(f"SCHED_FIFO refused ({_why(exc)})")
        try:
            _each_thread(lambda tid: os.setpriority(os.PRIO_PROCESS, tid, NICE))
            policy, priority = "nice", _nice()
        except (PermissionError, OSError) as exc2:
            notes.append(f"nice {NICE} refused ({_why(exc2)}); the driver runs at normal "
                         "priority and may wait behind other processes for a core")
    if policy == "fifo" and watchdog:
        _arm_watchdog()
    return _state(policy, priority, notes) | extra


@contextlib.contextmanager
def measuring_thread() -> Iterator[dict]:
    """The calling thread alone at the driver's priority on a claimed core, for a short
    measurement that blocks often (the machine's calibration): no watchdog; its affinity, its
    policy and the core's lock are given back on exit. Yields what it got, as :func:`protect`
    returns it."""
    if os.environ.get(DISABLE_ENV, "").lower() == "off":
        yield _state("normal", _nice(), [f"left as inherited ({DISABLE_ENV}=off)"])
        return
    affinity, policy, param = (os.sched_getaffinity(0), os.sched_getscheduler(0),
                               os.sched_getparam(0))
    held, notes, got = len(_held), [], ("normal", _nice())
    try:
        core, others = claim_core(sorted(affinity))
        os.sched_setaffinity(0, {core})  # pid 0: this thread only
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            got = ("fifo", RT_PRIORITY)
        except OSError as exc:
            notes.append(f"SCHED_FIFO refused ({_why(exc)})")
        yield _state(*got, notes) | {"shared_with": others}
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, affinity)
        while len(_held) > held:
            os.close(_held.pop())


def _each_thread(change: Callable[[int], object]) -> None:
    """``change(tid)`` for every thread of this process (on Linux a scheduling call given
    pid 0 changes the calling thread only); the first refusal is raised after trying all."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    refused: OSError | None = None
    for tid in tids:
        try:
            change(tid)
        except ProcessLookupError:  # that thread has just ended
            continue
        except OSError as exc:
            refused = refused or exc
    if refused is not None:
        raise refused


def core_lock_dir() -> Path:
    """The folder of the per-core lock files: one per host, so every checkout's drivers meet."""
    return Path(os.environ.get(CORE_LOCKS_ENV)
                or Path(tempfile.gettempdir()) / "certctl-workbench-cores")


def core_busy(cpus: list[int], sample_s: float = BUSY_SAMPLE_S) -> dict[int, float]:
    """Share of each core busy over a short sample (0 for a core the sample does not list)."""
    per = psutil.cpu_percent(interval=sample_s, percpu=True)
    return {c: per[c] if c < len(per) else 0.0 for c in cpus}


def claim_core(cpus: list[int]) -> tuple[int, int]:
    """The core to pin to, and how many other workbench drivers held it when claimed.

    Slot s of core c is a lock file: a driver takes the lowest free slot, and within a slot
    the least busy core, so drivers spread one per core before any two share. Without a
    usable lock folder the least busy core is taken, with 0 others (unknown).
    """
    busy = core_busy(cpus)
    order = sorted(cpus, key=lambda c: (busy[c], c))
    folder = core_lock_dir()
    try:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)  # every user's drivers take turns here; sticky: no deleting
    except OSError:
        return order[0], 0
    for slot in range(MAX_DRIVERS_PER_CORE):
        for core in order:
            fd = _try_lock(folder / f"cpu{core}.{slot}.lock")
            if fd is not None:
                _held.append(fd)
                return core, slot
    return order[0], MAX_DRIVERS_PER_CORE


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError:  # another user's file, or a planted link: not ours to take
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _arm_watchdog() -> None:
    try:
        _watchdog["rttime"] = resource.getrlimit(resource.RLIMIT_RTTIME)
        resource.setrlimit(resource.RLIMIT_RTTIME, (WATCHDOG_MS * 1000, resource.RLIM_INFINITY))
        signal.signal(signal.SIGXCPU, _on_busy)
    except (OSError, ValueError, AttributeError):  # not Linux, or not the main thread
        return
    _watchdog.update(armed=True, fired_epoch_ns=None)


def _on_busy(signum: int, frame: object) -> None:
    """SIGXCPU: this process ran real-time past the limit without blocking; give it up."""
    if _watchdog["fired_epoch_ns"] is None:
        _watchdog["fired_epoch_ns"] = time.time_ns()
    _to_normal()


def _to_normal() -> None:
    """Every thread of this process to normal scheduling."""
    with contextlib.suppress(OSError):
        _each_thread(lambda tid: os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0)))


def release(scheduling: dict, t0_epoch_ns: int | None) -> dict:
    """After the run: give up real-time priority and the core's lock. Returns ``scheduling``
    with what the watchdog saw under SCHED_FIFO (``watchdog``: ``limit_ms`` and ``fired_at_s``,
    seconds from the start, negative before it, None when it never fired) and, when it fired,
    the normal policy the driver ran under from then on."""
    fired = _watchdog["fired_epoch_ns"]
    armed = _watchdog["armed"]
    if armed:
        _to_normal()
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_RTTIME, _watchdog["rttime"])
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
        _watchdog.update(armed=False, fired_epoch_ns=None)
    while _held:
        os.close(_held.pop())
    if not armed:
        return scheduling
    if fired is None:
        return scheduling | {"watchdog": {"limit_ms": WATCHDOG_MS, "fired_at_s": None}}
    at_s = round((fired - t0_epoch_ns) / 1e9, 3) if t0_epoch_ns else None
    when = f"{at_s:.2f} s into the run" if at_s is not None and at_s >= 0 else "before the start"
    note = (f"real-time priority dropped by the watchdog {when}: the driver computed "
            f"{WATCHDOG_MS} ms without blocking, which keeps other processes off its core")
    return scheduling | {"policy": "normal", "priority": _nice(),
                         "notes": [*scheduling["notes"], note],
                         "watchdog": {"limit_ms": WATCHDOG_MS, "fired_at_s": at_s}}


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
