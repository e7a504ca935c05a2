"""The child side of a run: one shard in this process (``python -m workbench.driver``).

:func:`run_shard` drives shard K of N of a spec on one event loop and returns its report; the
process entry point :func:`main` wraps it for :func:`workbench.driver.launch.drive`: it says
``@ready`` once warm, reads the common start instant from stdin, prints ``@progress`` lines,
and writes ``result.json`` (one shard) or ``shard.json`` (one of several). A Dask worker calls
:func:`run_shard` directly (:func:`workbench.driver.launch.shard_task`).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from workbench import jsonio
from workbench.analyse import hdr
from workbench.driver import limits
from workbench.driver.engine import Engine
from workbench.driver.executors.base import Progress, StartInstant
from workbench.driver.http1 import HttpEngine
from workbench.driver.priority import pin_to_core, protect, release, target_is_local
from workbench.driver.recorder import Recorder
from workbench.driver.result import (
    REQUESTS_FILE,
    RESULT_FILE,
    SHARD_FILE,
    ShardReport,
    iso,
    merge_reports,
    shard_document,
)
from workbench.driver.spec import DriveSpec, executor_type, load_spec
from workbench.errors import WorkbenchError


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop where it is installed (faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, a little slower
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_shard(spec: DriveSpec, out_dir: Path, shard: int = 0, shards: int = 1, *,
              start_epoch_ns: int | None = None, start: StartInstant | None = None,
              token: str | None = None, engine: Engine | None = None,
              progress: Progress | None = None, handle_signals: bool | None = None
              ) -> ShardReport:
    """Drive shard ``shard`` of ``shards`` in this process; write ``requests.parquet``.

    Arrival i of the schedule belongs to shard ``i mod shards``; VUs are split the same way.
    The run starts at ``start_epoch_ns`` (UTC), or at what the coroutine function ``start``
    returns once connections are warm, or right away. ``engine`` replaces the HTTP engine (a
    test's fake). Returns the shard's report for :func:`~workbench.driver.result.merge_reports`.
    Whatever fails, the samples taken so far are written and the report says ``failed``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    limits.check_limits(spec, shards)
    limits.raise_open_files(limits.connections_per_process(spec, shards) + limits.RESERVE_FDS)
    local_host = limits.source_host(spec, shard)
    if token is None:
        token = os.environ.get(spec.token_env, "") if spec.token_env else ""
    recorder = Recorder(sorted({t.tag for t in spec.templates}), out_dir / REQUESTS_FILE,
                        phases=spec.connection_per_request)
    if engine is None and spec.connection_per_request:
        from workbench.driver.fresh import FreshConnectionEngine

        engine = FreshConnectionEngine(spec.base_url, ca_file=spec.ca_file,
                                       insecure=spec.insecure, timeout_s=spec.timeout_s,
                                       local_host=local_host)
    elif engine is None and spec.protocol == "h2":
        from workbench.driver.http2 import Http2Engine

        engine = Http2Engine(spec.base_url, ca_file=spec.ca_file, insecure=spec.insecure,
                             timeout_s=spec.timeout_s, local_host=local_host)
    elif engine is None:
        engine = HttpEngine(spec.base_url, ca_file=spec.ca_file, insecure=spec.insecure,
                            timeout_s=spec.timeout_s, local_host=local_host)
    run = executor_type(spec)(spec, engine, recorder, shard=shard, shards=shards, token=token,
                              progress=progress)
    if start is None:
        async def start() -> int | None:
            return start_epoch_ns
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, run.stop)
        try:
            await run.run(start)
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    status = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    # the Parquet writer thread must hand the GIL back to the loop within 1 ms, not 5
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, 0.001))
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    except Exception as exc:  # keep every sample taken so far
        status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        sys.setswitchinterval(switch)
        recorder.close()
    report = run.report(time.perf_counter() - wall0, time.process_time() - cpu0, status)
    report["host"] = socket.gethostname()
    return report


class NoStartLine(Exception):
    """The parent closed the start line without a start: the shard sends no load."""


def _die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM (and so flush and exit) if the parent dies; Linux only, else a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def format_progress(elapsed: float, sent: int, rate: float, errors: int, dropped: int,
                    p95_ms: float | None) -> str:
    """The live progress line (one shard's, or all shards' merged by the parent)."""
    p95 = f"{p95_ms:.2f} ms" if p95_ms is not None else "-"
    return (f"[driver] {elapsed:6.1f}s  sent {sent}  rate {rate:8.1f}/s  errors {errors}"
            f"  dropped {dropped}  p95 so far {p95}")


def _print_progress(p: dict) -> None:
    sent, elapsed = p["sent"], max(p["elapsed_s"], 1e-9)
    p95 = hdr.percentiles_ms(hdr.decode(p["response_hist"]), (95,))["p95"]
    print(format_progress(elapsed, sent, sent / elapsed, p["errors"], p["dropped"], p95),
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.driver SPEC.json [--shard K/N] [--out DIR] [--wait-start]``."""
    p = argparse.ArgumentParser(prog="python -m workbench.driver")
    p.add_argument("spec")
    p.add_argument("--shard", default="0/1", help="K/N: run shard K of N")
    p.add_argument("--out", help="output folder (default: the spec's folder)")
    p.add_argument("--wait-start", action="store_true",
                   help="print @ready when warm, then read 'start EPOCH_NS' from stdin")
    p.add_argument("--parent-pid", type=int)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent_pid:
        _die_with_parent(args.parent_pid)
    spec_path = Path(args.spec)
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        spec = load_spec(spec_path)
        spec.validate()
    except (ValueError, WorkbenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else spec_path.parent

    # before any thread exists: threads inherit the core
    pinned = pin_to_core() if target_is_local(spec.base_url) else None
    scheduling: dict = {}
    progress = _print_progress
    wait_line = None
    if args.wait_start:
        def progress(p: dict) -> None:
            print("@progress " + json.dumps(p), file=sys.stderr, flush=True)

        async def wait_line() -> int | None:
            print("@ready", file=sys.stderr, flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line.startswith("start "):  # the parent gave up before the load: send none
                raise NoStartLine("no start line came (the parent stopped before the load)")
            return int(line.split()[1])

    async def start() -> int | None:
        at = await wait_line() if wait_line else None
        # real-time from the start instant on: start-up work must not hold a core at FIFO
        scheduling.update(protect(pinned))
        for note in scheduling["notes"]:
            print(f"driver scheduling, shard {shard}: {note}", file=sys.stderr, flush=True)
        return at

    started_at = iso(time.time_ns())
    report = run_shard(spec, out, shard, shards, start=start, progress=progress)
    placed = release(scheduling, report["t0_epoch_ns"])  # the end-of-run work: normal priority
    if placed:  # else it ended before its start instant
        report["scheduling"] = placed  # type: ignore[typeddict-item]
    ended_at = iso(time.time_ns())
    if shards == 1:
        jsonio.write_json(out / RESULT_FILE, merge_reports(spec, [report], started_at, ended_at))
    else:
        jsonio.write_json(out / SHARD_FILE, shard_document(report, started_at, ended_at))
    return 0 if report["status"] == "completed" else 3
