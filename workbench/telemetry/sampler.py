"""The sampling loop and the files it writes.

Once a tick (1 s by default, on a fixed schedule that never drifts) every source is asked for
its metrics; each answer is appended to ``telemetry.spool.csv`` and flushed, so a sampler that
is killed loses at most the tick in flight. When told to stop, the sampler turns the spool into
``telemetry.parquet`` (long format ``t_ns, source, metric, value``: UTC epoch ns, dictionary-
encoded strings, float64) and writes ``telemetry.json`` beside it::

    schema_version  1
    status          running | completed | interrupted | failed
    interval_s, started_at, ended_at, ticks, late_ticks (ticks skipped: a tick overran)
    dsn             the database DSN without its password, or null
    target          target_url, target_pid, host (on this machine; null: decided from the URL)
    sources         per source: enabled, reason (when disabled), samples, failed, skipped (its
                    duty cycle), failures {reason: {count, first_t_ns, last_t_ns}}, metrics,
                    notes, cost (client CPU, wall and server CPU ms per sample: mean, max, total)
    process         the sampler process's own CPU and wall seconds while sampling

The cost of every sample is also in the Parquet file, as source ``sampler`` with metrics
``<source>.cpu_ms``, ``<source>.wall_ms`` and ``<source>.server_cpu_ms``. The process that runs
this loop, and the parent's handle on it, are in :mod:`workbench.telemetry.process`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from workbench import jsonio
from workbench.telemetry.files import PARQUET_FILE, SIDECAR_FILE
from workbench.telemetry.sources import (
    HostSource,
    JobsSource,
    PostgresSource,
    ProcessSource,
    SourceError,
    is_local,
    scrub,
    target_port,
)

SCHEMA_VERSION = 1
SPOOL_FILE, LOG_FILE = "telemetry.spool.csv", "telemetry.log"
SOURCES = ("postgres", "certctl", "host", "target_process")
COST_SOURCE = "sampler"
SIDECAR_EVERY_TICKS = 10  # the sidecar on disk is never more than this many ticks old
MAX_REASONS = 20  # distinct failure reasons kept per source; later ones are only counted
JOBS_MAX_DUTY = 0.01  # counting certctl's jobs takes at most 1% of the time (a large backlog)


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _clean(name: str) -> str:
    """A metric or source name on one spool line (names come partly from what is sampled)."""
    return "".join("_" if c in "\n\r" else c for c in str(name))


def statement_timeout_ms(interval_s: float) -> int:
    """How long one query may take: most of a tick, but never under 0.5 s (a loaded host)."""
    return max(500, int(interval_s * 800))


def build_sources(dsn: str | None, target_url: str | None = None, target_pid: int | None = None,
                  host: bool | None = None, statement_timeout_ms: int = 800,
                  scrapes: Sequence[Mapping] = ()) -> tuple[list, dict[str, str]]:
    """The sources to sample and, for each one left out, why.

    ``host`` says whether the target runs on this machine; None decides from ``target_url``
    (a loopback or own address). Host and process sources only make sense on the target's host.
    ``scrapes``: Prometheus targets (``name``, ``url``, and optionally ``token``, ``ca_file``,
    ``insecure``), each a :class:`~workbench.telemetry.prometheus.ScrapeSource`.
    """
    sources: list = []
    disabled: dict[str, str] = {}
    if dsn:
        sources += [PostgresSource(dsn, statement_timeout_ms),
                    JobsSource(dsn, statement_timeout_ms, max_duty=JOBS_MAX_DUTY)]
    else:
        reason = "no database DSN (export CERTCTL_DSN for the target's database)"
        disabled |= {"postgres": reason, "certctl": reason}
    local = host if host is not None else (is_local(target_url) if target_url else False)
    if local:
        sources.append(HostSource())
    else:
        disabled["host"] = ("the target is not on this host (scrape its node_exporter: "
                            "--scrape URL)" if target_url or host is False
                            else "no target given")
    if target_pid is not None:
        sources.append(ProcessSource(pid=target_pid))
    elif local and target_url:
        sources.append(ProcessSource(port=target_port(target_url)))
    else:
        disabled["target_process"] = ("the target is not on this host (pass --target-pid for a "
                                      "local process)" if target_url else "no target given")
    if scrapes:  # httpx and the parser only where a run scrapes
        from workbench.telemetry.prometheus import ScrapeSource
    for scrape in scrapes:
        verify = (False if scrape.get("insecure") else
                  ssl.create_default_context(cafile=scrape["ca_file"]) if scrape.get("ca_file")
                  else True)
        sources.append(ScrapeSource(scrape["name"], scrape["url"], token=scrape.get("token"),
                                    verify=verify, timeout_s=statement_timeout_ms / 1000))
    return sources, disabled


class _Spool:
    """Rows appended as CSV (names with commas or quotes quoted: a scraped series has both)
    and flushed each tick; a killed sampler leaves whole ticks."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - close()
        self.writer = csv.writer(self.file, lineterminator="\n")

    def write(self, rows: list[tuple[int, str, str, float]]) -> None:
        if rows:
            self.writer.writerows((t, s, m, repr(v)) for t, s, m, v in rows)
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def spool_table(path: Path) -> pa.Table:
    """The spool's complete lines (a line cut short by a kill is dropped) as the Parquet
    file's table: strings dictionary-encoded."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    text = text[:text.rfind("\n") + 1]
    rows = [r for r in csv.reader(text.splitlines()) if len(r) == 4]
    return pa.table({
        "t_ns": pa.array([int(r[0]) for r in rows], pa.int64()),
        "source": pa.array([r[1] for r in rows], pa.string()).dictionary_encode(),
        "metric": pa.array([r[2] for r in rows], pa.string()).dictionary_encode(),
        "value": pa.array([float(r[3]) for r in rows], pa.float64()),
    })


def read_spool(path: Path):
    """The spool as a pandas frame (:func:`spool_table`); pandas is loaded only here."""
    return spool_table(path).to_pandas()


def write_parquet(table: pa.Table, path: Path) -> None:
    """Long-format telemetry to Parquet; written then renamed."""
    with jsonio.replacing(path) as tmp:
        pq.write_table(table, tmp)


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON at ``path``, written beside it then renamed (never half a file)."""
    with jsonio.replacing(path) as tmp:  # no fsync: the sampler writes it while the load runs
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")


class _SourceLog:
    """What one source did: samples, failures by reason, metrics seen, costs."""

    def __init__(self) -> None:
        self.samples = self.failed = self.skipped = 0
        self.failures: dict[str, dict] = {}
        self.other_failures = 0
        self.metrics: set[str] = set()
        self.costs: dict[str, list[float]] = {"cpu_ms": [], "wall_ms": [], "server_cpu_ms": []}

    def failure(self, reason: str, t_ns: int) -> None:
        self.failed += 1
        entry = self.failures.get(reason)
        if entry is None and len(self.failures) >= MAX_REASONS:
            self.other_failures += 1
            return
        if entry is None:
            entry = self.failures[reason] = {"count": 0, "first_t_ns": t_ns}
        entry["count"] += 1
        entry["last_t_ns"] = t_ns

    def summary(self, notes: list[str]) -> dict:
        cost = {}
        for name, values in self.costs.items():
            if values:
                cost[f"{name}_mean"] = sum(values) / len(values)
                cost[f"{name}_max"] = max(values)
                cost[f"{name}_total"] = sum(values)
        out = {"enabled": True, "reason": None, "samples": self.samples, "failed": self.failed,
               "skipped": self.skipped, "failures": self.failures,
               "metrics": sorted(self.metrics), "notes": notes, "cost": cost}
        if self.other_failures:
            out["other_failures"] = self.other_failures
        return out


def _server_cpu_s(pid: int | None, checked: dict[int, bool]) -> float | None:
    """CPU seconds of the sampler's own database backend, when it runs on this host.

    Read from ``/proc/<pid>/schedstat`` (nanoseconds) where Linux has it: ``cpu_times`` counts
    10 ms ticks, too coarse for a query that takes one. ``checked`` caches, per pid, whether it
    is a PostgreSQL process here (a remote server's pid may exist locally as something else).
    """
    if pid is None:
        return None
    if pid not in checked:
        try:
            checked[pid] = psutil.Process(pid).name().startswith("postgres")
        except psutil.Error:
            checked[pid] = False
    if not checked[pid]:
        return None
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _redacted(dsn: str | None) -> str | None:
    if not dsn:
        return None
    from workbench.seed import redact_dsn  # SQLAlchemy: off the sampler process's start

    return redact_dsn(dsn)


class Sampler:
    """Samples ``sources`` every ``interval_s`` into ``out_dir`` until ``stop`` is set."""

    def __init__(self, sources: list, out_dir: Path, interval_s: float = 1.0,
                 disabled: dict[str, str] | None = None, dsn: str | None = None,
                 target: dict | None = None, shown_dsn: str | None = None) -> None:
        self.sources = sources
        self.out_dir = Path(out_dir)
        self.interval_s = interval_s
        self.disabled = dict(disabled or {})
        self.dsn = dsn
        self.shown_dsn = shown_dsn or _redacted(dsn)  # as recorded: without its password
        self.target = target or {}
        self.logs = {s.name: _SourceLog() for s in sources}
        self.ticks = self.late_ticks = 0
        self.started_ns = time.time_ns()
        self.ended_ns: int | None = None
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        self._postgres_pids: dict[int, bool] = {}

    def tick(self) -> list[tuple[int, str, str, float]]:
        """Sample every source once; returns the rows (values, and the cost of each sample).

        A source may return None: it chose to skip this tick (its duty cycle); that is counted
        as skipped, neither a sample nor a failure, and costs nothing worth recording.
        """
        rows = []
        for source in self.sources:
            log = self.logs[source.name]
            t_ns = time.time_ns()
            pid0 = source.backend_pid
            server0 = _server_cpu_s(pid0, self._postgres_pids)
            cpu0, wall0 = time.thread_time_ns(), time.perf_counter_ns()
            values, failed = None, True
            try:
                values, failed = source.sample(), False
            except SourceError as exc:
                log.failure(str(exc), t_ns)
            except Exception as exc:  # noqa: BLE001 - one source's bug never stops the others
                log.failure(scrub(f"{type(exc).__name__}: {exc}", self.dsn), t_ns)
            cpu_ms = (time.thread_time_ns() - cpu0) / 1e6
            wall_ms = (time.perf_counter_ns() - wall0) / 1e6
            server1 = _server_cpu_s(source.backend_pid, self._postgres_pids)
            if source.backend_pid != pid0:  # (re)connected: all the new session's CPU is ours
                server0 = 0.0
            if values is None and not failed:
                log.skipped += 1
                continue
            if values is not None:
                log.samples += 1
                for metric, value in values.items():
                    log.metrics.add(metric)
                    rows.append((t_ns, source.name, _clean(metric), float(value)))
            costs = {"cpu_ms": cpu_ms, "wall_ms": wall_ms}
            if server0 is not None and server1 is not None:
                costs["server_cpu_ms"] = (server1 - server0) * 1e3
            for name, value in costs.items():
                log.costs[name].append(value)
                rows.append((t_ns, COST_SOURCE, f"{source.name}.{name}", value))
        self.ticks += 1
        return rows

    def run(self, stop: threading.Event, on_first_tick=None, final_tick: bool = False) -> dict:
        """Tick on a fixed schedule until ``stop`` is set (then once more with ``final_tick``);
        write the files; return the sidecar."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spool = _Spool(self.out_dir / SPOOL_FILE)
        status = "completed"
        start = time.monotonic()
        k = 0
        try:
            while not stop.is_set():
                spool.write(self.tick())
                if k == 0 and on_first_tick is not None:
                    on_first_tick()
                if self.ticks % SIDECAR_EVERY_TICKS == 0:
                    write_json(self.out_dir / SIDECAR_FILE, self.sidecar("running"))
                k += 1
                next_at = start + k * self.interval_s
                late = time.monotonic() - next_at
                if late > 0:  # a tick overran: skip the slots it covered, never bunch up
                    skipped = int(late // self.interval_s) + 1
                    self.late_ticks += skipped
                    k += skipped
                    next_at = start + k * self.interval_s
                stop.wait(max(0.0, next_at - time.monotonic()))
            if final_tick:  # one more at the stop: the samples reach the end of the run
                spool.write(self.tick())
        except Exception as exc:  # noqa: BLE001 - keep what was sampled, say why it stopped
            status = f"failed: {scrub(f'{type(exc).__name__}: {exc}', self.dsn)}"
        finally:
            spool.close()
            for source in self.sources:
                with contextlib.suppress(Exception):
                    source.close()
        return self.finish(status)

    def finish(self, status: str) -> dict:
        self.ended_ns = time.time_ns()
        write_parquet(spool_table(self.out_dir / SPOOL_FILE), self.out_dir / PARQUET_FILE)
        sidecar = self.sidecar(status)
        write_json(self.out_dir / SIDECAR_FILE, sidecar)
        (self.out_dir / SPOOL_FILE).unlink(missing_ok=True)
        return sidecar

    def sidecar(self, status: str) -> dict:
        sources = {name: {"enabled": False, "reason": reason}
                   for name, reason in self.disabled.items()}
        for source in self.sources:
            sources[source.name] = self.logs[source.name].summary(list(source.notes))
            if getattr(source, "kind", None) == "prometheus":  # its URL, never its token
                sources[source.name] |= {"kind": source.kind, "url": source.shown_url}
        return {
            "schema_version": SCHEMA_VERSION, "status": status, "interval_s": self.interval_s,
            "started_at": _iso(self.started_ns),
            "ended_at": _iso(self.ended_ns) if self.ended_ns else None,
            "ticks": self.ticks, "late_ticks": self.late_ticks,
            "dsn": self.shown_dsn, "target": self.target,
            "sources": {name: sources[name] for name in sorted(sources)},
            "process": {"cpu_s": time.process_time() - self._cpu0,
                        "wall_s": time.perf_counter() - self._wall0},
        }


def finalize(out_dir: Path, status: str) -> dict:
    """Files of a sampler that did not finish (killed, or never started): spool to Parquet,
    the sidecar marked with ``status``. Returns the sidecar."""
    out_dir = Path(out_dir)
    sidecar_path = out_dir / SIDECAR_FILE
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        sidecar = {"schema_version": SCHEMA_VERSION, "sources": {}}
    spool = out_dir / SPOOL_FILE
    if spool.exists() or not (out_dir / PARQUET_FILE).exists():
        write_parquet(spool_table(spool), out_dir / PARQUET_FILE)
        spool.unlink(missing_ok=True)
    sidecar["status"] = status
    sidecar["ended_at"] = sidecar.get("ended_at") or _iso(time.time_ns())
    write_json(sidecar_path, sidecar)
    return sidecar
