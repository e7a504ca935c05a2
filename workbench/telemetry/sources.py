"""What the telemetry sampler reads once a tick: four sources, each failing on its own.

A source's :meth:`sample` returns ``{metric: value}`` or raises :class:`SourceError` with a
one-line reason (no DSN password in it); the sampler records the reason and asks again on the
next tick, so a lost database connection is reopened and a view that appears later is read.

* :class:`PostgresSource` (``postgres``): ``pg_stat_database`` counters of the current database
  as per-second rates between two samples, client connections by state, active ones by
  ``wait_event_type``, ungranted locks, and the CPU of PostgreSQL's processes when the server
  runs on this host. PostgreSQL 15+ flushes a backend's counters at most once a second (idle
  ones within 10 s), so one-second rates are lumpy; their sum over a window is exact.
* :class:`JobsSource` (``certctl``): rows of certctl's ``jobs`` by status (TitleCase), the
  renewal backlog; :func:`count_jobs` is the same count for a backlog drain.
* :class:`HostSource` (``host``): busy % per core and overall, iowait and steal, load average,
  memory used and available.
* :class:`ProcessSource` (``target_process``): CPU % (100 = one core) and RSS of the process
  listening on the target's TCP port, or of a given pid.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import psutil
import psycopg

from workbench.telemetry import JOB_STATUSES

APPLICATION_NAME = "workbench-telemetry"  # the sampler's own sessions, left out of its counts
CONNECTION_STATES = ("active", "idle", "idle_in_transaction", "idle_in_transaction_aborted")
WAIT_TYPES = ("Lock", "LWLock", "IO", "IPC", "Client", "BufferPin", "Timeout", "Activity")
COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
            "tup_updated", "tup_deleted", "blks_read", "blks_hit", "deadlocks", "temp_bytes")


class SourceError(Exception):
    """A source could not sample this tick; ``str()`` is the reason, safe to record."""


def scrub(message: str, dsn: str | None) -> str:
    """``message`` on one line with the DSN's password (if any) replaced by ``***``."""
    line = " ".join(str(message).split())
    password = _password(dsn)
    return line.replace(password, "***") if password else line


def _password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    from sqlalchemy.engine import make_url  # where used: the sampler's process starts faster

    try:
        return make_url(dsn).password or None
    except Exception:  # noqa: BLE001 - an unparseable DSN has no password we can find
        return None


def libpq_conninfo(dsn: str) -> str:
    """A libpq URI for ``dsn``, which may be a SQLAlchemy URL (``postgresql+psycopg://``);
    a libpq URI or ``key=value`` string is already one."""
    if dsn.startswith(("postgresql://", "postgres://")) or "://" not in dsn:
        return dsn
    from sqlalchemy.engine import make_url

    try:
        url = make_url(dsn)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: left to libpq to refuse
        return dsn
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class _Database:
    """One autocommit session of the sampler, reopened after it is lost."""

    def __init__(self, dsn: str, statement_timeout_ms: int) -> None:
        self.dsn = dsn
        self.statement_timeout_ms = statement_timeout_ms
        self.conn: psycopg.Connection | None = None
        self.backend_pid: int | None = None
        self.query_s = 0.0  # how long the last query took, without (re)connecting

    def rows(self, sql: str) -> list[tuple]:
        """Run one read-only query; any failure closes the session (reopened next time)."""
        try:
            if self.conn is None or self.conn.closed:
                self._open()
            start = time.monotonic()
            rows = self.conn.execute(sql).fetchall()
            self.query_s = time.monotonic() - start
            return rows
        except psycopg.Error as exc:
            if self.conn is not None and (self.conn.closed or self.conn.broken):
                self.close()
            raise SourceError(self._reason(exc)) from None

    def _open(self) -> None:
        self.conn = psycopg.connect(
            libpq_conninfo(self.dsn), autocommit=True, connect_timeout=2,  # libpq's least
            application_name=APPLICATION_NAME,
            # a blocked or slow query becomes a failed sample, never a hung sampler
            options=f"-c statement_timeout={self.statement_timeout_ms}"
                    f" -c lock_timeout={self.statement_timeout_ms}")  # fmt: skip
        self.backend_pid = self.conn.info.backend_pid

    def _reason(self, exc: psycopg.Error) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedObject):
            return scrub(f"missing in this database: {first}", self.dsn)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return scrub(f"permission denied: {first}", self.dsn)
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return f"query took longer than {self.statement_timeout_ms} ms (statement timeout)"
        if isinstance(exc, psycopg.OperationalError):
            return scrub(f"database connection failed or lost: {first}", self.dsn)
        return scrub(f"{type(exc).__name__}: {first}", self.dsn)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None
        self.backend_pid = None


class _CpuMeter:
    """CPU % of a set of processes between two calls (100 = one core fully busy).

    Process handles (and whether each is wanted) are kept across calls: reading 50 backends'
    CPU then costs one ``/proc`` read each, not three.
    """

    def __init__(self, keep=lambda process: True) -> None:
        self._keep = keep
        self._processes: dict[int, psutil.Process | None] = {}  # None: not one of ours
        self._last: dict[int, float] = {}
        self._last_t = 0.0

    def percent(self, pids: Iterable[int]) -> float | None:
        now = time.monotonic()
        pids = set(pids)
        seen: dict[int, float] = {}
        for pid in pids:
            if pid not in self._processes:
                try:
                    process = psutil.Process(pid)
                    self._processes[pid] = process if self._keep(process) else None
                except psutil.NoSuchProcess:
                    continue
            process = self._processes[pid]
            if process is None:
                continue
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                del self._processes[pid]  # exited between the listing and the read
                continue
            seen[pid] = times.user + times.system
        # a pid reused by a younger process reads lower: never a negative contribution
        used = sum(max(0.0, cpu - self._last[pid]) for pid, cpu in seen.items()
                   if pid in self._last)
        elapsed = now - self._last_t
        first = not self._last
        self._last, self._last_t = seen, now
        for pid in set(self._processes) - pids:
            del self._processes[pid]
        if first or not seen or elapsed <= 0:
            return None
        return 100.0 * used / elapsed


def _is_postgres(process: psutil.Process) -> bool:
    """True for a PostgreSQL server process (guards against a remote server's pids)."""
    try:
        return process.name().startswith("postgres")
    except psutil.Error:
        return False


class PostgresSource:
    """Database activity from the statistics views; see the module docstring."""

    name = "postgres"

    def __init__(self, dsn: str, statement_timeout_ms: int = 800) -> None:
        self.db = _Database(dsn, statement_timeout_ms)
        self._last: tuple[float, tuple] | None = None  # (monotonic s, counters)
        self._server_cpu = _CpuMeter(keep=_is_postgres)
        self.notes: list[str] = []

    @property
    def backend_pid(self) -> int | None:
        return self.db.backend_pid

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        now = time.monotonic()
        counters = self.db.rows(f"SELECT {', '.join(COUNTERS)} FROM pg_stat_database"
                                " WHERE datname = current_database()")
        if not counters:
            raise SourceError("pg_stat_database has no row for the current database")
        values = tuple(float(v or 0) for v in counters[0])
        if self._last is not None:
            elapsed = now - self._last[0]
            # a counter that went down was reset (pg_stat_reset): no rate for this interval
            if elapsed > 0 and all(v >= p for v, p in zip(values, self._last[1], strict=True)):
                for name, v, p in zip(COUNTERS, values, self._last[1], strict=True):
                    out[f"{name}_per_s"] = (v - p) / elapsed
        self._last = (now, values)

        out |= {f"connections.{s}": 0.0 for s in CONNECTION_STATES}
        out |= {f"waiting.{w}": 0.0 for w in WAIT_TYPES}
        out["running"] = 0.0
        activity = self.db.rows(
            "SELECT coalesce(state, 'unknown'), wait_event_type, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
            f" AND application_name <> '{APPLICATION_NAME}' GROUP BY 1, 2")
        for state, wait_type, count in activity:
            key = f"connections.{state.replace(' ', '_').replace('(', '').replace(')', '')}"
            out[key] = out.get(key, 0.0) + count
            if state != "idle":  # an idle session waits for its client: not a stall
                wkey = f"waiting.{wait_type}" if wait_type else "running"
                out[wkey] = out.get(wkey, 0.0) + count
        out["connections.total"] = float(sum(c for *_, c in activity))
        if any(state == "unknown" for state, *_ in activity):
            self._note("connections.unknown counts sessions of other roles this role may not "
                       "inspect (grant pg_read_all_stats to see their state)")

        out["locks.ungranted"] = 0.0
        for locktype, count in self.db.rows(
                "SELECT locktype, count(*) FROM pg_locks WHERE NOT granted GROUP BY 1"):
            out[f"locks.ungranted.{locktype}"] = float(count)
            out["locks.ungranted"] += count

        cpu = self._postgres_cpu()
        if cpu is not None:
            out["server_cpu_percent"] = cpu
        return out

    def _postgres_cpu(self) -> float | None:
        """CPU % of every PostgreSQL process the server lists, when they run on this host."""
        pids = [pid for (pid,) in self.db.rows("SELECT pid FROM pg_stat_activity")]
        try:
            return self._server_cpu.percent(pids)
        except psutil.AccessDenied:
            self._note("server_cpu_percent: no permission to read PostgreSQL's processes")
            return None

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def close(self) -> None:
        self.db.close()


def count_jobs(rows: list[tuple]) -> dict[str, float]:
    """``jobs.<Status>`` for every status certctl uses (0 when absent) and any other seen."""
    out = {f"jobs.{s}": 0.0 for s in JOB_STATUSES}
    for status, count in rows:
        out[f"jobs.{status}"] = float(count)
    out["jobs.total"] = float(sum(c for _, c in rows))
    return out


class JobsSource:
    """certctl's ``jobs`` rows by status; ``certificate_like`` limits them to a fixture.

    Counting costs the server a scan of ``jobs`` (about 8 ms for 100,000 rows here): with
    ``max_duty`` (a share of wall time, e.g. 0.01) the count is skipped (``sample`` returns
    None) until ``elapsed / max_duty`` has passed since the last one took ``elapsed``, so a
    large backlog is sampled less often rather than loading the server it measures.
    """

    name = "certctl"

    def __init__(self, dsn: str, statement_timeout_ms: int = 800,
                 certificate_like: str | None = None, max_duty: float | None = None) -> None:
        self.db = _Database(dsn, statement_timeout_ms)
        self.certificate_like = certificate_like
        self.max_duty = max_duty
        self._next_at = self._slowest = 0.0
        self.notes: list[str] = []

    @property
    def backend_pid(self) -> int | None:
        return self.db.backend_pid

    def sample(self) -> dict[str, float] | None:
        if time.monotonic() < self._next_at:
            return None
        where = ""
        if self.certificate_like is not None:
            where = " WHERE certificate_id LIKE " + _literal(self.certificate_like)
        rows = self.db.rows(f"SELECT status, count(*) FROM jobs{where} GROUP BY 1")
        if self.max_duty:
            elapsed = self.db.query_s
            self._next_at = time.monotonic() - elapsed + elapsed / self.max_duty
            if elapsed > self._slowest and elapsed / self.max_duty > 1.0:
                self._slowest = elapsed
                self.notes[:] = [f"counting jobs took up to {elapsed * 1e3:.0f} ms, so it was"
                                 f" counted as seldom as every {elapsed / self.max_duty:.1f} s"
                                 f" (at most {self.max_duty:.0%} of the time)"]
        return count_jobs(rows)

    def close(self) -> None:
        self.db.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class HostSource:
    """This machine's CPU per core, load average and memory (psutil, no permissions needed)."""

    name = "host"

    def __init__(self) -> None:
        self._last = psutil.cpu_times(percpu=True)
        self._last_all = psutil.cpu_times()
        self.notes: list[str] = []
        self.backend_pid = None

    def sample(self) -> dict[str, float]:
        per_core, overall = psutil.cpu_times(percpu=True), psutil.cpu_times()
        out = {f"cpu.{i}": _busy(a, b) for i, (a, b) in enumerate(zip(self._last, per_core,
                                                                       strict=False))}
        out["cpu.all"] = _busy(self._last_all, overall)
        total = max(_total(overall) - _total(self._last_all), 1e-9)
        for field in ("iowait", "steal"):
            if hasattr(overall, field):
                out[f"cpu.{field}"] = 100.0 * (getattr(overall, field)
                                               - getattr(self._last_all, field)) / total
        self._last, self._last_all = per_core, overall
        load1, load5, load15 = os.getloadavg()
        memory = psutil.virtual_memory()
        return out | {"load.1": load1, "load.5": load5, "load.15": load15,
                      "memory.used_bytes": float(memory.total - memory.available),
                      "memory.available_bytes": float(memory.available)}

    def close(self) -> None:
        pass


def _total(times) -> float:
    """All CPU time in a ``cpu_times`` reading; Linux counts guest time inside user time too."""
    return sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _busy(before, after) -> float:
    """Busy % between two ``cpu_times`` readings: neither idle nor waiting for I/O."""
    total = _total(after) - _total(before)
    if total <= 0:
        return 0.0
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0)
                                         - getattr(before, "iowait", 0.0))
    return max(0.0, min(100.0, 100.0 * (1 - idle / total)))


def listener_pid(port: int) -> int:
    """The pid of the process listening on TCP ``port`` on this host.

    Without root, Linux hides the owner of another user's socket: that is reported, with the
    fix (``--target-pid``), rather than guessed.
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        raise SourceError("no permission to list this host's sockets; pass --target-pid"
                          ) from None
    listening = [c for c in connections
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    if not listening:
        raise SourceError(f"no process listens on TCP port {port} on this host")
    pids = sorted({c.pid for c in listening if c.pid})
    if not pids:
        raise SourceError(f"the process listening on port {port} belongs to another user and "
                          "its pid is hidden without root; pass --target-pid")
    return pids[0]


class ProcessSource:
    """CPU and memory of the target's server process, found by port (again after a restart).

    On Linux another user's process can be read (``/proc/<pid>/stat`` is world-readable); only
    finding it by port needs root, and the reason says so and names ``--target-pid``. Where
    reading is refused too, the reason names the owner problem; the other sources go on.
    """

    name = "target_process"

    def __init__(self, port: int | None = None, pid: int | None = None) -> None:
        if port is None and pid is None:
            raise ValueError("a port or a pid is needed")
        self.port, self.fixed_pid = port, pid
        self.pid: int | None = None
        self._cpu = _CpuMeter()
        self.notes: list[str] = []
        self.backend_pid = None

    def sample(self) -> dict[str, float]:
        if self.pid is None or not psutil.pid_exists(self.pid):
            self.pid = self.fixed_pid if self.fixed_pid is not None else listener_pid(self.port)
            self._cpu = _CpuMeter()
        try:
            process = psutil.Process(self.pid)
            cpu = self._cpu.percent([self.pid])
            memory = process.memory_info()
            threads = process.num_threads()
        except psutil.NoSuchProcess:
            gone, self.pid = self.pid, None
            raise SourceError(f"process {gone} is gone") from None
        except psutil.AccessDenied:
            raise SourceError(f"no permission to read process {self.pid} (owned by another "
                              "user); run the workbench as that user") from None
        out = {"rss_bytes": float(memory.rss), "threads": float(threads), "pid": float(self.pid)}
        if cpu is not None:
            out["cpu_percent"] = cpu
        return out

    def close(self) -> None:
        pass


def target_port(url: str) -> int:
    """The TCP port a target URL names (443/80 by default)."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def is_local(url: str) -> bool:
    """True when the target URL's host is this machine (loopback or one of its addresses)."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return any(a.startswith("127.") or a == "::1" or a in mine for a in addresses)
