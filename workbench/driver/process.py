"""Driver processes: the shard function, the child's entry point and the parent's ``drive``.

The driver never runs inside a Jupyter kernel (the kernel owns an event loop and its traffic
adds jitter): :func:`drive` starts N child processes (``python -m workbench.driver``), waits
until every one is warm (connections open), gives them one common start instant (UTC epoch
ns), turns their progress into one live line and merges what they wrote. Interrupting the
caller (Ctrl-C, SIGTERM, a kernel interrupt) stops the children, which flush everything they
recorded; the result is still written, with status ``interrupted``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from workbench import hdr
from workbench.driver.engine import HttpEngine
from workbench.driver.executors import ShardRun
from workbench.driver.recorder import Recorder
from workbench.driver.spec import DriveSpec
from workbench.driver.summary import iso, summarize
from workbench.errors import WorkbenchError

START_MARGIN_NS = 100_000_000  # children are warm and waiting; the start line needs < 1 ms
RESULT_FILE, SHARD_FILE, SPEC_FILE = "result.json", "shard.json", "spec.json"


def _loop_factory():
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, a little slower
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_shard(spec: DriveSpec, out_dir: Path, shard: int = 0, shards: int = 1, *,
              start_epoch_ns: int | None = None, start=None, token: str | None = None,
              engine=None, progress: Callable[[dict], None] | None = None,
              handle_signals: bool | None = None) -> dict:
    """Drive shard ``shard`` of ``shards`` in this process; write ``requests.parquet``.

    Arrival i of the schedule belongs to shard ``i mod shards``; VUs are split the same way.
    The run starts at ``start_epoch_ns`` (UTC), or at what the coroutine function ``start``
    returns once connections are warm, or right away. ``engine`` replaces the HTTP engine (a
    test's fake). Returns the shard's report (counters and encoded histograms) for
    :func:`~workbench.driver.summary.summarize`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _raise_fd_limit(spec.concurrency + 256)
    if token is None:
        token = os.environ.get(spec.token_env, "") if spec.token_env else ""
    recorder = Recorder(sorted({t.tag for t in spec.templates}), out_dir / "requests.parquet")
    if engine is None and spec.protocol == "h2":
        from workbench.driver.http2 import Http2Engine

        engine = Http2Engine(spec.base_url, ca_file=spec.ca_file, insecure=spec.insecure,
                             timeout_s=spec.timeout_s)
    elif engine is None:
        engine = HttpEngine(spec.base_url, ca_file=spec.ca_file, insecure=spec.insecure,
                            timeout_s=spec.timeout_s)
    run_class = ShardRun
    if spec.script:
        from workbench.driver.scripted import ScriptedRun as run_class
    run = run_class(spec, engine, recorder, shard=shard, shards=shards, token=token,
                    progress=progress)
    if start is None:
        async def start():
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
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except Exception as exc:  # keep every sample taken so far
        status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        sys.setswitchinterval(switch)
        recorder.close()
    report = run.report(time.perf_counter() - wall0, time.process_time() - cpu0, status)
    report["host"] = socket.gethostname()
    return report


def _raise_fd_limit(want: int) -> None:
    """One descriptor per connection: lift the soft limit (often 1024) toward the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- the child process ----------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM (and so flush and exit) if the parent dies; Linux only, else a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _print_progress(p: dict) -> None:
    sent, elapsed = p["sent"], max(p["elapsed_s"], 1e-9)
    p95 = hdr.percentiles_ms(hdr.decode(p["response_hist"]), (95,))["p95"]
    print(format_progress(elapsed, sent, sent / elapsed, p["errors"], p["dropped"], p95),
          file=sys.stderr, flush=True)


def format_progress(elapsed: float, sent: int, rate: float, errors: int, dropped: int,
                    p95_ms: float | None) -> str:
    p95 = f"{p95_ms:.2f} ms" if p95_ms is not None else "-"
    return (f"[driver] {elapsed:6.1f}s  sent {sent}  rate {rate:8.1f}/s  errors {errors}"
            f"  dropped {dropped}  p95 so far {p95}")


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
        spec = DriveSpec.from_json(spec_path.read_text())
        spec.validate()
    except (ValueError, OSError, TypeError, WorkbenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else spec_path.parent

    progress = _print_progress
    start = None
    if args.wait_start:
        def progress(p: dict) -> None:
            print("@progress " + json.dumps(p), file=sys.stderr, flush=True)

        async def start() -> int | None:
            print("@ready", file=sys.stderr, flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            return int(line.split()[1]) if line.startswith("start ") else None

    started_at = iso(time.time_ns())
    report = run_shard(spec, out, shard, shards, start=start, progress=progress)
    ended_at = iso(time.time_ns())
    if shards == 1:
        _write_json(out / RESULT_FILE, summarize(spec, [report], started_at, ended_at))
    else:
        _write_json(out / SHARD_FILE, report | {"started_at": started_at, "ended_at": ended_at})
    return 0 if report["status"] == "completed" else 3


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


# -- the parent -----------------------------------------------------------------------------

class _Progress:
    """One live line from N shards' progress: counts added, histograms merged."""

    def __init__(self, shards: int, echo: Callable[[str], None]) -> None:
        self.shards, self.echo = shards, echo
        self.ticks: dict[int, dict[int, dict]] = {}
        self.last_sent, self.last_elapsed = 0, 0.0

    def add(self, p: dict) -> None:
        tick = self.ticks.setdefault(p["tick"], {})
        tick[p["shard"]] = p
        if len(tick) < self.shards:
            return
        del self.ticks[p["tick"]]
        parts = list(tick.values())
        sent = sum(x["sent"] for x in parts)
        elapsed = max(x["elapsed_s"] for x in parts)
        rate = (sent - self.last_sent) / max(elapsed - self.last_elapsed, 1e-9)
        self.last_sent, self.last_elapsed = sent, elapsed
        p95 = hdr.percentiles_ms(hdr.merge(x["response_hist"] for x in parts), (95,))["p95"]
        self.echo(format_progress(elapsed, sent, rate, sum(x["errors"] for x in parts),
                                  sum(x["dropped"] for x in parts), p95))


def drive(spec: DriveSpec, out_dir: Path, env: dict[str, str] | None = None,
          echo: Callable[[str], None] = print, *, shards: int | None = None,
          cluster: str | None = None) -> dict:
    """Run ``spec`` in separate driver processes and return its result (``result.json``).

    ``env`` adds variables for the children only (the token travels this way, never in a
    file). ``shards``: how many processes (default: :func:`workbench.shards.auto_shards`).
    ``cluster``: a Dask scheduler address (``tcp://HOST:8786``) to run the shards on instead.
    Progress lines go to ``echo``. Interrupting the caller interrupts the driver, which
    still writes everything it recorded, and then re-raises ``KeyboardInterrupt``.
    """
    from workbench import shards as sharding

    spec.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, "requests.parquet"):
        (out_dir / stale).unlink(missing_ok=True)
    (out_dir / SPEC_FILE).write_text(spec.to_json())
    if shards is not None and (not isinstance(shards, int) or shards < 1):
        raise WorkbenchError(f"shards must be a positive number of processes, got {shards!r}")
    if cluster:
        return sharding.drive_on_cluster(spec, out_dir, cluster, shards=shards, env=env,
                                         echo=echo)
    n = shards or sharding.auto_shards(spec)
    dirs = [out_dir] if n == 1 else [out_dir / f"shard-{k}" for k in range(n)]
    child_env = os.environ | (env or {})
    procs = [subprocess.Popen(
        [sys.executable, "-m", "workbench.driver", str(out_dir / SPEC_FILE), "--shard",
         f"{k}/{n}", "--out", str(d), "--wait-start", "--parent-pid", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=child_env) for k, d in enumerate(dirs)]
    interrupted = _supervise(procs, echo)
    if n == 1:
        result_path = out_dir / RESULT_FILE
        if not result_path.exists():
            raise WorkbenchError(f"the driver exited with code {procs[0].returncode} and wrote "
                                 "no result; see the lines above")
        result = json.loads(result_path.read_text())
    else:
        result = sharding.merge_shard_dirs(spec, out_dir, dirs,
                                           [p.returncode for p in procs])
    if interrupted:
        raise KeyboardInterrupt
    return result


def _supervise(procs: list[subprocess.Popen], echo: Callable[[str], None]) -> bool:
    """Start the children together, relay their lines, stop them on interrupt.

    Returns whether the caller was interrupted (the children then flushed and exited).
    """
    lines: queue.Queue = queue.Queue()

    def pump(k: int, stream) -> None:
        for line in stream:
            lines.put((k, line.rstrip("\n")))
        lines.put((k, None))

    for k, p in enumerate(procs):
        threading.Thread(target=pump, args=(k, p.stderr), daemon=True).start()
    progress = _Progress(len(procs), echo)
    ready: set[int] = set()
    live = len(procs)
    started = interrupted = False
    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)

    def stop_children(sig: int) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
            _close(p.stdin)

    try:
        while live:
            try:
                try:
                    k, line = lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                if line is None:
                    live -= 1
                    if not started:  # a child died before the start: stop the others
                        stop_children(signal.SIGTERM)
                        started = True
                elif line == "@ready":
                    ready.add(k)
                    if len(ready) == len(procs) and not started:
                        started = True
                        at = time.time_ns() + START_MARGIN_NS
                        for p in procs:
                            _send(p.stdin, f"start {at}\n")
                elif line.startswith("@progress "):
                    progress.add(json.loads(line[len("@progress "):]))
                else:
                    echo(line)
            except KeyboardInterrupt:
                if interrupted:  # a second interrupt: stop waiting for the flush
                    for p in procs:
                        p.kill()
                    raise
                interrupted = started = True
                stop_children(signal.SIGINT)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        for p in procs:
            _close(p.stdin)
            p.wait()
    return interrupted


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _send(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # that child is already gone; its exit is handled with its output


def _close(stream) -> None:
    try:
        stream.close()
    except (BrokenPipeError, ValueError, OSError):
        pass
