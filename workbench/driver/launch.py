"""The parent side of a run: :func:`drive` starts the shards, relays progress, merges results.

The driver never runs inside a Jupyter kernel (the kernel owns an event loop and its traffic
adds jitter): :func:`drive` starts N child processes (``python -m workbench.driver``, see
:mod:`workbench.driver.shard`), waits until every one is warm (connections open), gives them
one common start instant (UTC epoch ns), turns their progress into one live line and merges
what they wrote. Interrupting the caller (Ctrl-C, SIGTERM, a kernel interrupt) stops the
children, which flush everything they recorded; the result is still written, with status
``interrupted``.

Scaling out: arrival i of the global schedule goes to shard ``i mod N`` (k6's striped execution
segments), VUs are split the same way, and every shard starts at one UTC instant, so the union
of the shards is exactly the single-process schedule. Each shard measures with its own
monotonic clock (latency needs no clock sync across hosts). Merging adds HDR histograms and
counters (percentiles are never averaged) and concatenates the shards' Parquet row groups.

On Dask distributed (``cluster="tcp://HOST:8786"``) the same shard function runs inside the
workers, one shard per worker (:func:`shard_task`), and returns its report and its Parquet
bytes. The API token travels as a task argument over the Dask connection, so it goes only to a
``tls://`` scheduler or one on this machine; it is never written to a file. Joining a cluster
trusts it with code: the client unpickles what the scheduler and workers send back.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pyarrow.parquet as pq

from workbench import jsonio
from workbench.analyse import hdr
from workbench.driver import limits
from workbench.driver.result import (
    REQUESTS_FILE,
    RESULT_FILE,
    SHARD_FILE,
    SPEC_FILE,
    DriveResult,
    ShardReport,
    iso,
    load_result,
    load_shard_report,
    merge_reports,
    shard_document,
)
from workbench.driver.shard import run_shard
from workbench.driver.spec import DriveSpec, executor_type
from workbench.errors import WorkbenchError
from workbench.run.kernel import PROGRESS_ENV  # `workbench run`'s kernel also writes the line

START_MARGIN_NS = 100_000_000  # children are warm and waiting; the start line needs < 1 ms
# Open-loop requests/s to give one driver process: it holds 2,000/s with schedule-lag p99 well
# under 1 ms, and open loop costs about 65 us of CPU per request at 10,000/s on the
# development machine (benchmarks/run.py), so 5,000/s keeps a process near a third of a core.
SHARD_CAPACITY_RPS = 5000.0
CLUSTER_START_MARGIN_NS = 3_000_000_000  # Dask: time for every worker to start its shard
CLUSTER_CONNECT_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 10.0  # without a terminal (CI logs), one progress line this often
PROGRESS_METADATA = "workbench_progress"  # marks the live line's output: never in a report
_PROGRESS_LINE = re.compile(r"^\[driver\] .*\bsent \d+")


def auto_shards(spec: DriveSpec) -> int:
    """Processes for a spec: enough for its peak request rate, at most one per core."""
    if not spec.open_loop:
        return limits.shards_needed(spec)
    need = math.ceil(executor_type(spec).steady_rate(spec) / SHARD_CAPACITY_RPS)
    # more processes than cores where the open-files limit demands them
    return max(1, min(os.cpu_count() or 1, need), limits.shards_needed(spec))


def drive(spec: DriveSpec, out_dir: Path, env: dict[str, str] | None = None,
          echo: Callable[[str], None] = print, *, shards: int | None = None,
          cluster: str | None = None,
          while_starting: Callable[[], object] | None = None,
          when_ready: Callable[[], object] | None = None) -> DriveResult:
    """Run ``spec`` in separate driver processes and return its result (``result.json``).

    ``env`` adds variables for the children only (the token travels this way, never in a
    file). ``shards``: how many processes (default: :func:`auto_shards`). ``cluster``: a Dask
    scheduler address (``tcp://HOST:8786``) to run the shards on instead. Progress lines go to
    ``echo``. ``while_starting`` runs while the processes start (imports, warm-up), and the
    load starts after it returns: the caller's own work before the load (the machine's
    calibration, the telemetry's start) costs no time of its own. ``when_ready`` runs once
    every process is ready and idle at the start line (pinned to its core, holding its core's
    lock), just before the load starts: work that needs a quiet machine, such as the machine's
    calibration, and must not take a core while a driver chooses one. Interrupting the caller
    interrupts the driver, which still writes everything it recorded, and then re-raises
    ``KeyboardInterrupt``.
    """
    spec.validate()
    if cluster and spec.token_env:  # the parent side only: keeps preflight out of the shards
        from workbench.target.preflight import check_cluster_destination

        check_cluster_destination(cluster)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, REQUESTS_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    # the driver's input holds the query, body and header values in clear: its owner's only
    jsonio.write_json(out_dir / SPEC_FILE, spec.document(), mode=0o600)
    if shards is not None and (not isinstance(shards, int) or shards < 1):
        raise WorkbenchError(f"shards must be a positive number of processes, got {shards!r}")
    if cluster:
        for before_load in (while_starting, when_ready):
            if before_load is not None:
                before_load()
        drive_on_cluster(spec, out_dir, cluster, shards=shards, env=env, echo=echo)
        return load_result(out_dir)
    n = shards or auto_shards(spec)
    limits.check_limits(spec, n)  # before any process starts or any load is sent
    dirs = [out_dir] if n == 1 else [out_dir / f"shard-{k}" for k in range(n)]
    child_env = os.environ | spec.secret_env() | (env or {})  # secret headers: not in spec.json
    procs = [subprocess.Popen(
        [sys.executable, "-m", "workbench.driver", str(out_dir / SPEC_FILE), "--shard",
         f"{k}/{n}", "--out", str(d), "--wait-start", "--parent-pid", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=child_env) for k, d in enumerate(dirs)]
    if while_starting is not None:
        try:
            while_starting()  # meanwhile the children start, then wait for the start line
        except BaseException:
            for p in procs:
                p.kill()
                p.wait()
            raise
    interrupted = _supervise(procs, echo, spec.run_s, when_ready)
    if n == 1:
        if not (out_dir / RESULT_FILE).exists():
            raise WorkbenchError(f"the driver exited with code {procs[0].returncode} and wrote "
                                 "no result; see the lines above")
    else:
        merge_shard_dirs(spec, out_dir, dirs, [p.returncode for p in procs])
    result = load_result(out_dir)
    if interrupted:
        raise KeyboardInterrupt
    return result


# -- local shard processes ------------------------------------------------------------------

def format_progress(elapsed: float, planned_s: float, sent: int, rate: float, errors: int,
                    dropped: int, p95_ms: float | None) -> str:
    """The live progress line: elapsed of planned, % done, ETA, sent, rate, errors, p95."""
    done = min(elapsed / planned_s, 1.0) if planned_s > 0 else 1.0
    eta = max(planned_s - elapsed, 0.0)
    p95 = f"{p95_ms:.2f} ms" if p95_ms is not None else "-"
    return (f"[driver] {elapsed:.0f}/{planned_s:.0f} s ({done:.0%}, ETA {eta:.0f} s)  sent {sent}"
            f"  rate {rate:.1f}/s  errors {errors}  dropped {dropped}  p95 so far {p95}")


class LiveLine:
    """The driver's progress as one updating line; every other line passes through.

    In a Jupyter kernel the line is one output updated in place (an IPython display handle,
    tagged :data:`PROGRESS_METADATA` so the rendered report leaves it out); on a terminal it
    is rewritten with ``\\r``; otherwise (CI logs, pipes) it is printed every ``every_s``
    seconds and once at the end. A kernel started by ``workbench run`` also writes it to its
    terminal (:data:`PROGRESS_ENV`). Call it as ``echo``; :meth:`close` ends the line.
    """

    def __init__(self, stream: IO[str] | None = None, every_s: float = PROGRESS_EVERY_S,
                 notebook: bool | None = None) -> None:
        self.every_s = every_s
        self.notebook = _in_kernel() if notebook is None else notebook
        self.stream: IO[str] | None = stream or sys.stderr
        self.mode = "tty" if _isatty(self.stream) else "lines"
        if self.notebook and stream is None:
            mode = os.environ.get(PROGRESS_ENV)  # else the kernel's stderr is no one's terminal
            terminal = _kernel_terminal() if mode in ("tty", "lines") else None
            self.stream, self.mode = (terminal, mode) if terminal else (None, "none")
        self._handle = None
        self._last: str | None = None
        self._shown_at: float | None = None  # when the last line was written ("lines")
        self._written: str | None = None
        self._open = False  # a \r line waits for its newline ("tty")

    def __call__(self, line: str) -> None:
        if not _PROGRESS_LINE.match(line):
            self._end_line()
            print(line, file=sys.stdout if self.notebook else self.stream or sys.stderr,
                  flush=True)
            return
        self._last = line
        if self.notebook:
            self._display(line)
        if self.stream is None:
            return
        if self.mode == "tty":
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._open = True
        elif self._shown_at is None or time.monotonic() - self._shown_at >= self.every_s:
            self._write(line)

    def _display(self, line: str) -> None:
        from IPython.display import display

        data, meta = {"text/plain": line}, {PROGRESS_METADATA: True}
        if self._handle is None:
            self._handle = display(data, raw=True, metadata=meta, display_id=True)
        else:
            self._handle.update(data, raw=True, metadata=meta)

    def _write(self, line: str) -> None:
        assert self.stream is not None
        self.stream.write(line + "\n")
        self.stream.flush()
        self._shown_at = time.monotonic()
        self._written = line

    def _end_line(self) -> None:
        if self._open and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False

    def close(self) -> None:
        """End the line: a newline on a terminal, the last state in a log if not yet there."""
        self._end_line()
        if (self.mode == "lines" and self.stream is not None and self._last is not None
                and self._written != self._last):
            self._write(self._last)


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _kernel_terminal() -> IO[str] | None:
    """The terminal the kernel was started from, bypassing the kernel's capture of its file
    descriptor 2 (which would put every line into the notebook as a stderr stream)."""
    fd = getattr(sys.stderr, "_original_stdstream_copy", None)  # ipykernel >= 6 keeps it
    if not isinstance(fd, int):
        return None
    return open(fd, "w", closefd=False)  # noqa: SIM115 - the fd outlives this line's use


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (IPython imported and holding a kernel)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


class _Progress:
    """One live line from N shards' progress: counts added, histograms merged."""

    def __init__(self, shards: int, echo: Callable[[str], None], planned_s: float) -> None:
        self.shards, self.echo, self.planned_s = shards, echo, planned_s
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
        self.echo(format_progress(elapsed, self.planned_s, sent, rate,
                                  sum(x["errors"] for x in parts),
                                  sum(x["dropped"] for x in parts), p95))


def _supervise(procs: list[subprocess.Popen], echo: Callable[[str], None],
               planned_s: float, when_ready: Callable[[], object] | None = None) -> bool:
    """Start the children together (after ``when_ready``, once all are ready), relay their
    lines, stop them on interrupt.

    Returns whether the caller was interrupted (the children then flushed and exited).
    """
    lines: queue.Queue = queue.Queue()

    def pump(k: int, stream: IO[str]) -> None:
        for line in stream:
            lines.put((k, line.rstrip("\n")))
        lines.put((k, None))

    for k, p in enumerate(procs):
        threading.Thread(target=pump, args=(k, p.stderr), daemon=True).start()
    progress = _Progress(len(procs), echo, planned_s)
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
                        if when_ready is not None:
                            when_ready()
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


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _send(stream: IO[str], text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # that child is already gone; its exit is handled with its output


def _close(stream: IO[str]) -> None:
    try:
        stream.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


# -- merging shard folders ------------------------------------------------------------------

def merge_shard_dirs(spec: DriveSpec, out_dir: Path, shard_dirs: list[Path],
                     exit_codes: list[int | None] | None = None) -> DriveResult:
    """Merge shard folders (``shard.json`` + ``requests.parquet``) into ``out_dir``.

    Writes ``out_dir/requests.parquet`` (the shards' row groups, concatenated) and
    ``out_dir/result.json``; removes the shard folders. Refuses when a shard left no report.
    """
    reports = []
    for k, d in enumerate(shard_dirs):
        if not (d / SHARD_FILE).exists() or not (d / REQUESTS_FILE).exists():
            code = exit_codes[k] if exit_codes else None
            raise WorkbenchError(f"driver shard {k} exited with code {code} and wrote no "
                                 f"result in {d}; see the lines above")
        reports.append(load_shard_report(d / SHARD_FILE))
    concat_parquet([d / REQUESTS_FILE for d in shard_dirs], out_dir / REQUESTS_FILE)
    result = merge_reports(spec, reports,
                           started_at=min(r["started_at"] for r in reports),
                           ended_at=max(r["ended_at"] for r in reports))
    jsonio.write_json(out_dir / RESULT_FILE, result)
    for d in shard_dirs:
        shutil.rmtree(d, ignore_errors=True)
    return result


def concat_parquet(parts: list[Path], dest: Path) -> None:
    """Append every row group of ``parts`` (one or more) to ``dest``, one group in memory at
    a time."""
    if not parts:
        raise ValueError("no Parquet files to concatenate")
    with jsonio.replacing(dest) as tmp:
        writer = None
        try:
            for part in parts:
                pf = pq.ParquetFile(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, pf.schema_arrow)
                for i in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(i))
        finally:
            if writer is not None:
                writer.close()


# -- Dask -----------------------------------------------------------------------------------

def shard_task(spec_json: str, shard: int, shards: int, start_epoch_ns: int,
               token: str) -> tuple[ShardReport, bytes]:
    """Run one shard where this function is called (a Dask worker); return report + Parquet."""
    spec = DriveSpec.from_json(spec_json)
    started_at = iso(time.time_ns())
    with tempfile.TemporaryDirectory(prefix="workbench-shard-") as tmp:
        report = run_shard(spec, Path(tmp), shard, shards, start_epoch_ns=start_epoch_ns,
                           token=token, handle_signals=False)
        data = (Path(tmp) / REQUESTS_FILE).read_bytes()
    return shard_document(report, started_at, iso(time.time_ns())), data


def drive_on_cluster(spec: DriveSpec, out_dir: Path, address: str, shards: int | None = None,
                     env: dict[str, str] | None = None,
                     echo: Callable[[str], None] = print) -> DriveResult:
    """Run the shards on the Dask scheduler at ``address``, one per worker, and merge them."""
    try:  # an extra: only --cluster needs it
        from distributed import Client
    except ImportError:
        raise WorkbenchError("--cluster needs Dask distributed, which is not installed; "
                             "install the cluster extra: pip install -e '.[cluster]'") from None

    if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise WorkbenchError(f"cluster address {address!r} must look like tcp://HOST:8786")
    try:
        client = Client(address, timeout=f"{CLUSTER_CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise WorkbenchError(f"cannot reach the Dask scheduler at {address} ({exc}); start it "
                             f"with `dask scheduler` and workers with `dask worker {address}`"
                             ) from None
    with client:
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise WorkbenchError(f"the Dask cluster at {address} has no workers; start some "
                                 f"with `dask worker {address}`")
        n = shards or len(workers)
        if n > len(workers):
            raise WorkbenchError(f"{n} shards need {n} Dask workers (one shard each), the "
                                 f"cluster has {len(workers)}; add workers or pass --shards "
                                 f"{len(workers)}")
        env = os.environ | (env or {})
        token = env.get(spec.token_env, "") if spec.token_env else ""
        start = time.time_ns() + CLUSTER_START_MARGIN_NS
        echo(f"[driver] {n} shards on {address}, starting at {iso(start)}")
        futures = [client.submit(shard_task, spec.to_json(), k, n, start, token, pure=False,
                                 workers=[workers[k]], allow_other_workers=False)
                   for k in range(n)]
        try:
            results = client.gather(futures)
        except KeyboardInterrupt:
            client.cancel(futures)
            raise
    dirs = []
    for k, (report, data) in enumerate(results):
        d = out_dir / f"shard-{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / REQUESTS_FILE).write_bytes(data)
        jsonio.write_json(d / SHARD_FILE, report)
        dirs.append(d)
    return merge_shard_dirs(spec, out_dir, dirs)
