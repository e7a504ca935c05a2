"""Calibration: a short fixed reference workload measured beside every run, so that a verdict
between two moments can tell a slower target from a slower machine.

The same machine name drifts (a new kernel build under a virtual machine made the same
certctl build look 2.3 x slower; DESIGN.md, turn 3). Before and after the timed phase a run
takes one reading (:func:`measure`, about 0.3 s) of three fixed pieces of work, on a quiet
machine: a scenario's run before its driver's processes start, ``workbench drive`` once they
are ready and idle at the start line (``driver.drive(when_ready=...)``, so that their start-up
costs no time of its own); never while they start, since the reading claims a core as a driver
does (a lock per core) and a starting driver would then count it as another driver on its
core, or take the other core, away from where the reading was made. The pieces:

``cpu``
    Thread CPU time of a fixed single-thread piece of work: a pure-Python integer loop and
    SHA-256 over a fixed buffer (about 2.6 ms on the development machine), repeated
    :data:`CPU_REPEATS` times spread over the reading. CPU time, not wall time, so that
    waiting for a core behind other processes does not count, while a slower core, a slower
    interpreter or a kernel that makes the same work costlier does.
``loopback``
    Round trips of a fixed small GET through the driver's own HTTP/1.1 engine to a built-in
    server on the same event loop, over loopback: at a fixed rate (:data:`LOOPBACK_RATE`) in
    :data:`LOOPBACK_BLOCKS` blocks between the CPU repeats, their p50/p90/p99 ms; and after
    each block a burst of :data:`BURST` back-to-back round trips, its median. It takes the
    path every request of a run takes through this host: the event loop, the engine's
    parsing, the kernel's TCP stack and system calls.
``postgres``
    Commit latency on the run's database: one row of a scratch table
    (``workbench_calibration.commit_probe``, created on first use; certctl's tables are never
    touched) updated and committed, the ``COMMIT`` timed: p50/p99 ms. It is the WAL flush the
    target pays on every write. Shown, not compared: on a shared disk it moves with the other
    tenants' writes more than with the machine.

The reading runs in a thread of its own at the driver's real-time priority, pinned to the last
core (a single driver shard pins the first), as the driver would be, so that other processes
do not queue in front of it; without the right to, it runs as it is and says so.

**What is compared** (:data:`COMPARED`, by :func:`judge`): the *fastest* CPU repeat and the
*fastest* burst median of the loopback, each over both readings of a record. On a shared host
the same work runs up to 1.6 x slower while a neighbour holds the physical core, and a round
trip after an idle gap runs on caches the neighbours have cooled. Measured on the
development machine at a load average of about 10 on 2 cores
(``benchmarks/bench_calibration.py --records 16 --no-neighbour``): over 16 records in seven
minutes, the fastest CPU repeat stayed within 0.99-1.02 x its median and the fastest burst
within 0.99-1.01 x (every one of the 120 pairs within 3 % of each other), while the median
CPU repeat spread 0.98-1.10 x, the fixed-rate round trip's p50 0.86-1.41 x and the commit
p50 0.24-1.34 x. So the compared figures move with the machine (its kernel, CPU,
interpreter) and little with the moment's neighbours; how crowded the run was shows in the
medians and percentiles kept beside them, and in the run's telemetry. A record's two
readings cost 1.8 s (median) there then (version 1: four loopback blocks, 5 ms between CPU
repeats, a warm-up at the blocks' rate). Version 2 takes two blocks, 1 ms pauses and warms
up back to back: over ten records interleaved with version 1's on one quiet machine, 0.55 s
a record against 1.04 s, with the same compared figures (medians: fastest CPU repeat 2.28
against 2.29 ms, fastest burst 0.0091 against 0.0091 ms) and the same p50 at the fixed rate
(0.015 ms); its p99, over half the round trips, 0.14 against 0.11 ms.

:func:`section` turns the two readings into the record's ``calibration`` section,
:func:`missing` writes one that says why there is none, and :func:`judge` says whether two
sides' machines measured alike within a tolerance.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

VERSION = 2  # 2: two loopback blocks a reading (four), 1 ms between CPU repeats (5 ms),
# the warm-up back to back (at the blocks' rate)
CPU_LOOP = 40_000  # pure-Python loop iterations of one repeat
CPU_HASH_BYTES = 512 * 1024  # SHA-256 input of one repeat
CPU_REPEATS = 16
CPU_PAUSE_S = 0.001  # between repeats: spread over the reading, and other threads get a turn
LOOPBACK_RATE = 500.0  # requests/s: light enough never to queue, dense enough for a p99
LOOPBACK_BLOCKS = 2
LOOPBACK_BLOCK = 40  # requests a block
LOOPBACK_WARMUP = 10  # requests back to back before the first block (connection, caches)
BURST = 50  # back-to-back round trips after each block
COMMITS = 60
COMMIT_BUDGET_S = 1.0  # a slow disk gets fewer commits, never a longer pause
SCRATCH_SCHEMA = "workbench_calibration"
COMPARED = ("cpu_ms", "loopback_ms")  # what judges two machines alike
TOLERANCE = 0.10  # a compared figure more than 10 % apart (either way): not comparable
_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
             b'{"ok":true}')


def _cpu_work() -> int:
    """The fixed piece of work; returns a value so that nothing of it can be skipped."""
    acc = 0
    for i in range(CPU_LOOP):
        acc = (acc + i * i) % 1_000_003
    return acc + hashlib.sha256(bytes(CPU_HASH_BYTES)).digest()[0]


def _cpu_repeat() -> float:
    """One repeat of the fixed work: its thread CPU time in ms."""
    start = time.thread_time_ns()
    _cpu_work()
    return (time.thread_time_ns() - start) / 1e6


class _Answer(asyncio.Protocol):
    """The built-in server: one fixed response per request head received."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        heads = self.buffer.count(b"\r\n\r\n")
        if heads:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(_RESPONSE * heads)  # type: ignore[attr-defined]


async def _block(engine: Any, request: Any, count: int, rate: float) -> tuple[np.ndarray, int]:
    """``count`` round trips (ms) at ``rate``, on a fixed schedule; and how many failed."""
    loop = asyncio.get_running_loop()
    round_trips = np.full(count, np.nan)
    failed = 0
    finished = loop.create_future()
    pending = count

    def send(i: int) -> None:
        sent = time.perf_counter_ns()

        def done(status: int, ctype: Any, nbytes: int, body: Any, error: int, head: Any) -> None:
            nonlocal pending, failed
            round_trips[i] = (time.perf_counter_ns() - sent) / 1e6
            failed += bool(error or status != 200)
            pending -= 1
            if pending == 0 and not finished.done():
                finished.set_result(None)

        engine.send(request, done)

    start = loop.time() + 0.002
    for i in range(count):
        loop.call_at(start + i / rate, send, i)
    await asyncio.wait_for(finished, timeout=count / rate + 5.0)
    return round_trips, failed


async def _burst(engine: Any, request: Any, count: int) -> float:
    """Median round trip (ms) of ``count`` requests, each sent as the last one's answer
    arrives: the path's own cost, on warm caches."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    round_trips: list[float] = []

    def send() -> None:
        sent = time.perf_counter_ns()

        def done(status: int, ctype: Any, nbytes: int, body: Any, error: int, head: Any) -> None:
            round_trips.append((time.perf_counter_ns() - sent) / 1e6)
            if finished.done():
                return
            if error or status != 200:
                finished.set_exception(RuntimeError(f"the built-in server's answer failed: "
                                                    f"status {status}, error class {error}"))
            elif len(round_trips) < count:
                send()
            else:
                finished.set_result(None)

        engine.send(request, done)

    send()
    await asyncio.wait_for(finished, timeout=5.0)
    return statistics.median(round_trips)


async def _cpu_and_loopback() -> tuple[dict, dict]:
    """The CPU repeats and the loopback blocks, interleaved, so both span the reading."""
    from workbench.driver.http1 import HttpEngine

    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answer, "127.0.0.1", 0)
    engine = HttpEngine(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                        timeout_s=5.0)
    request = engine.prepare("GET", "/calibration", {}, None)
    cpu: list[float] = []
    blocks: list[np.ndarray] = []
    bursts: list[float] = []
    failed = 0
    try:
        await engine.start(warm=1)
        await _burst(engine, request, LOOPBACK_WARMUP)  # the connection, the caches
        _cpu_work()  # warms the interpreter's caches
        per_block = CPU_REPEATS // LOOPBACK_BLOCKS
        for _ in range(LOOPBACK_BLOCKS):
            for _ in range(per_block):
                cpu.append(_cpu_repeat())
                await asyncio.sleep(CPU_PAUSE_S)
            round_trips, errors = await _block(engine, request, LOOPBACK_BLOCK, LOOPBACK_RATE)
            blocks.append(round_trips)
            failed += errors
            bursts.append(await _burst(engine, request, BURST))
    finally:
        await engine.close()
        server.close()
        await server.wait_closed()
    every = np.concatenate(blocks)
    p50, p90, p99 = np.percentile(every, (50, 90, 99), method="inverted_cdf")
    return ({"fastest_ms": min(cpu), "median_ms": statistics.median(cpu),
             "repeats_ms": cpu,
             "work": f"{CPU_LOOP:,} pure-Python loop iterations and SHA-256 of "
                     f"{CPU_HASH_BYTES // 1024} KiB, thread CPU time"},
            {"rate": LOOPBACK_RATE, "requests": int(every.size), "errors": failed,
             "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
             "burst_p50_ms": bursts, "burst": BURST,
             "engine": engine.name})


def cpu_and_loopback() -> tuple[dict, dict]:
    """``(cpu, loopback)`` readings, on the driver's kind of event loop."""
    from workbench.driver.shard import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_cpu_and_loopback())


def postgres_reading(dsn: str, commits: int = COMMITS, budget_s: float = COMMIT_BUDGET_S
                     ) -> dict:
    """p50/p99 latency (ms) of ``COMMIT`` after updating one row of a scratch table."""
    import sqlalchemy as sa

    from workbench import seed

    engine = seed.engine_for(dsn)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCRATCH_SCHEMA}"))
            conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {SCRATCH_SCHEMA}.commit_probe "
                                 "(id int PRIMARY KEY, n bigint NOT NULL)"))
            conn.execute(sa.text(f"INSERT INTO {SCRATCH_SCHEMA}.commit_probe VALUES (1, 0) "
                                 "ON CONFLICT (id) DO NOTHING"))
            conn.commit()
            raw = conn.connection.dbapi_connection
            cursor = raw.cursor()  # the driver's own cursor: no SQLAlchemy work in the timing
            times: list[float] = []
            deadline = time.monotonic() + budget_s
            while len(times) < commits and time.monotonic() < deadline:
                cursor.execute(f"UPDATE {SCRATCH_SCHEMA}.commit_probe SET n = n + 1 "
                               "WHERE id = 1")
                start = time.perf_counter_ns()
                raw.commit()
                times.append((time.perf_counter_ns() - start) / 1e6)
            cursor.close()
    finally:
        engine.dispose()
    p50, p99 = np.percentile(times, (50, 99), method="inverted_cdf")
    return {"commits": len(times), "p50_ms": float(p50), "p99_ms": float(p99),
            "table": f"{SCRATCH_SCHEMA}.commit_probe"}


def _why(what: str, exc: Exception) -> dict:
    """A reading that failed, in one line without a secret: the run goes on without it."""
    from workbench.seed import redact_dsn

    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, TimeoutError) and not text:
        text = "the built-in server did not answer in time (the machine stalled)"
    return {"error": f"{what}: {type(exc).__name__}: {redact_dsn(text) if '://' in text else text}"}


def measure(dsn: str | None = None) -> dict:
    """One calibration reading: CPU, loopback round trip and (with a DSN) commit latency.

    Runs in a thread of its own (so that it works beside a running event loop, a Jupyter
    kernel's), at the driver's priority where allowed, and never raises: a part that fails
    says why in its place.
    """
    out: dict = {}

    def work() -> None:
        from workbench.driver import priority

        started = time.perf_counter()
        out["taken_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        with priority.measuring_thread() as out["scheduling"]:
            try:
                out["cpu"], out["loopback"] = cpu_and_loopback()
            except Exception as exc:  # noqa: BLE001 - calibration never fails the run beside it
                out["cpu"] = out["loopback"] = _why("cpu and loopback", exc)
        if dsn:
            try:
                out["postgres"] = postgres_reading(dsn)
            except Exception as exc:  # noqa: BLE001
                out["postgres"] = _why("postgres", exc)
        else:
            out["postgres"] = {"error": "no database: the run has no DSN"}
        out["seconds"] = round(time.perf_counter() - started, 3)

    thread = threading.Thread(target=work, name="workbench-calibration")
    thread.start()
    thread.join()
    return out


def _numbers(readings: Sequence[Mapping], part: str, key: str) -> list[float]:
    values = []
    for reading in readings:
        value = (reading.get(part) or {}).get(key)
        values += value if isinstance(value, list) else [value]
    return [float(v) for v in values if isinstance(v, int | float)]


def section(before: Mapping | None, after: Mapping | None) -> dict:
    """The record's ``calibration``: both readings and the figures drawn from them.

    ``cpu_ms`` and ``loopback_ms`` (compared): the fastest CPU repeat and the fastest
    loopback burst median over both readings; the others (shown): medians over the readings.
    """
    readings = [r for r in (before, after) if r]
    cpu = _numbers(readings, "cpu", "repeats_ms")
    bursts = _numbers(readings, "loopback", "burst_p50_ms")
    figures = {"cpu_ms": min(cpu) if cpu else None,
               "loopback_ms": min(bursts) if bursts else None,
               "cpu_median_ms": statistics.median(cpu) if cpu else None}
    for name, part in (("loopback", "loopback"), ("commit", "postgres")):
        for key in ("p50_ms", "p99_ms"):
            values = _numbers(readings, part, key)
            figures[f"{name}_{key}"] = statistics.median(values) if values else None
    measured = all(figures[k] is not None for k in COMPARED)
    return {"version": VERSION, "measured": measured, "before": before, "after": after,
            "figures": figures, "compared": list(COMPARED),
            **({} if measured else {"reason": "a reading failed: see before and after"})}


def missing(reason: str) -> dict:
    """``calibration`` of a record that has none (older records, imports), saying why."""
    return {"version": VERSION, "measured": False, "reason": reason, "before": None,
            "after": None, "figures": {}, "compared": list(COMPARED)}


def figures(record: Mapping) -> dict[str, float]:
    """A record's calibration figures that were measured (empty when it has none)."""
    cal = record.get("calibration") or {}
    return {k: float(v) for k, v in (cal.get("figures") or {}).items() if v is not None}


def side_figures(records: Sequence[Mapping]) -> dict[str, float]:
    """One side's figures: each the median over its records that measured it."""
    values: dict[str, list[float]] = {}
    for rec in records:
        for key, value in figures(rec).items():
            values.setdefault(key, []).append(value)
    return {k: statistics.median(v) for k, v in values.items()}


AB_HINT = ("to compare two builds on one machine, run them interleaved with `workbench ab`")


def judge(a: Sequence[Mapping], b: Sequence[Mapping], tolerance: float = TOLERANCE
          ) -> tuple[dict[str, float], str | None]:
    """B/A of each compared figure, and why the sides are not comparable (None if they are).

    Beyond ``tolerance`` as a ratio either way (10 %: outside [1/1.1, 1.1]), the reason names
    the figure furthest from 1: "the machine measured N x slower" (or faster) on B. A record
    without calibration cannot show that its machine measured alike: that is a reason too.
    """
    fa, fb = side_figures(a), side_figures(b)
    ratios = {k: fb[k] / fa[k] for k in COMPARED if fa.get(k) and fb.get(k)}
    without = [r["run_id"] for r in list(a) + list(b)
               if not all(k in figures(r) for k in COMPARED)]
    if without:
        more = ", ..." if len(without) > 3 else ""
        return ratios, (f"no calibration in {len(without)} record(s) ({', '.join(without[:3])}"
                        f"{more}; recorded before calibration existed, imported, or it "
                        "failed), so whether the machine changed between the sides is unknown; "
                        + AB_HINT)
    worst = max(ratios, key=lambda k: abs(np.log(ratios[k])))
    r = ratios[worst]
    if abs(np.log(r)) <= np.log1p(tolerance):
        return ratios, None
    way = f"{r:.2f} x slower" if r > 1 else f"{1 / r:.2f} x faster"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    return ratios, (f"the machine measured {way} on B than on A (calibration B/A: {parts}; "
                    f"tolerance {tolerance:.0%}); " + AB_HINT)


def describe(records: Sequence[Mapping]) -> str:
    """One side's calibration in a line: its figures, or that it has none and why."""
    f = side_figures(records)
    if not all(k in f for k in COMPARED):
        reasons = {(r.get("calibration") or {}).get("reason") for r in records} - {None}
        return "none (" + ("; ".join(sorted(reasons)) or "not measured") + ")"
    parts = [f"cpu {f['cpu_ms']:.3g} ms", f"loopback round trip {f['loopback_ms']:.3g} ms"]
    if "loopback_p50_ms" in f and "loopback_p99_ms" in f:
        parts[-1] += (f" (at {LOOPBACK_RATE:g}/s: p50 {f['loopback_p50_ms']:.3g}, p99 "
                      f"{f['loopback_p99_ms']:.3g} ms)")
    if "commit_p50_ms" in f and "commit_p99_ms" in f:
        parts.append(f"commit p50 {f['commit_p50_ms']:.3g} ms, p99 {f['commit_p99_ms']:.3g} ms")
    return ", ".join(parts)


def cost_s(section_: Mapping) -> float | None:
    """Seconds the two readings of a ``calibration`` section took together."""
    times = [(r or {}).get("seconds") for r in (section_.get("before"), section_.get("after"))]
    kept = [t for t in times if isinstance(t, int | float)]
    return round(sum(kept), 3) if kept else None


def cell(record: Mapping) -> str:
    """A record's compared figures for a table cell: ``cpu 2.61 / loopback 0.061 ms``, or
    ``none`` for a record without them."""
    f = figures(record)
    if not all(k in f for k in COMPARED):
        return "none"
    return f"cpu {f['cpu_ms']:.3g} / loopback {f['loopback_ms']:.3g} ms"
