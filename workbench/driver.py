"""The load driver: an open-loop constant-arrival-rate executor over aiohttp.

It runs in its own process (``python -m workbench.driver SPEC.json``), never inside a Jupyter
kernel: the kernel owns an event loop and its own traffic would add jitter. The parent calls
:func:`drive`, which writes the spec, starts the process, streams its progress lines and returns
the result.

Per request it records, as columns (one numpy array each, no Python object per request):
intended start, actual send and end (nanoseconds since the UTC epoch, from the monotonic clock
anchored at run start), HTTP status, response bytes, error class and endpoint tag. Response time
is ``end - intended``, so a stalled server or a late driver shows up in the latency
(coordinated omission corrected, as wrk2 and k6's arrival-rate executors do); service time is
``end - send``; schedule lag is ``send - intended``.

Invariant: ``scheduled = completed + failed + dropped``. An arrival that finds every virtual
user busy is dropped (k6's ``dropped_iterations``), never silently skipped.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from workbench.errors import WorkbenchError

# Error classes, stored as a dictionary-encoded string column; index 0 means success.
ERROR_CLASSES = (
    "", "connect", "timeout", "reset", "tls", "http_4xx", "http_5xx", "http_429", "other",
    "dropped",
)
_ERR = {name: code for code, name in enumerate(ERROR_CLASSES)}

# Runs whose driver was the bottleneck are marked invalid (DESIGN.md, accuracy rules).
MAX_SCHEDULE_LAG_P99_MS = 2.0
MIN_ACHIEVED_RATIO = 0.95
PROGRESS_EVERY_S = 5.0
SPIN_NS = 1_500_000  # see _sleep_until


@dataclass(frozen=True)
class RequestTemplate:
    """One request shape; arrival i uses ``templates[i % len(templates)]``."""

    method: str
    path: str
    tag: str
    body: str | None = None  # JSON text, sent with Content-Type application/json
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DriveSpec:
    """Everything the driver process needs; written to ``spec.json`` (never holds a secret)."""

    base_url: str
    templates: tuple[RequestTemplate, ...]
    rate: float  # arrivals per second
    duration_s: float
    max_vus: int = 200  # in-flight cap; an arrival beyond it is dropped
    timeout_s: float = 10.0
    ca_file: str | None = None
    insecure: bool = False
    token_env: str | None = None  # name of the env var holding the Bearer token
    scenario: str = "adhoc"

    def validate(self) -> None:
        """Refuse bad input before any load is sent."""
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate)) or self.rate <= 0:
            raise WorkbenchError(f"rate must be a positive number of requests/s, got {self.rate!r}")
        if not math.isfinite(self.duration_s) or self.duration_s <= 0:
            raise WorkbenchError(f"duration must be positive seconds, got {self.duration_s!r}")
        if self.max_vus < 1:
            raise WorkbenchError(f"max VUs must be at least 1, got {self.max_vus!r}")
        if not self.templates:
            raise WorkbenchError("no request to send: the scenario produced no request templates")
        if not self.base_url.startswith(("http://", "https://")):
            raise WorkbenchError(
                f"target URL {self.base_url!r} must start with http:// or https://"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DriveSpec:
        raw = json.loads(text)
        raw["templates"] = tuple(
            RequestTemplate(**(t | {"headers": tuple(map(tuple, t.get("headers", ())))}))
            for t in raw["templates"])
        return cls(**raw)


def schedule_offsets_ns(rate: float, duration_s: float) -> np.ndarray:
    """Intended start offsets of a constant arrival rate: ``i / rate`` for ``i*1/rate < D``."""
    count = math.ceil(rate * duration_s - 1e-9)
    return np.round(np.arange(count, dtype=np.float64) * (1e9 / rate)).astype(np.int64)


@dataclass
class Samples:
    """Columnar per-request records, preallocated for the whole schedule."""

    intended_ns: np.ndarray
    send_ns: np.ndarray = field(init=False)
    end_ns: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    nbytes: np.ndarray = field(init=False)
    error: np.ndarray = field(init=False)
    tag: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.intended_ns)
        self.send_ns = np.zeros(n, np.int64)
        self.end_ns = np.zeros(n, np.int64)
        self.status = np.zeros(n, np.int16)
        self.nbytes = np.zeros(n, np.int32)
        self.error = np.zeros(n, np.int8)
        self.tag = np.zeros(n, np.int16)


def classify_status(status: int) -> int:
    if status == 429:
        return _ERR["http_429"]
    if status >= 500:
        return _ERR["http_5xx"]
    if status >= 400:
        return _ERR["http_4xx"]
    return 0


def classify_exception(exc: BaseException) -> int:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return _ERR["timeout"]
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return _ERR["tls"]
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _ERR["connect"]
    if isinstance(exc, (aiohttp.ServerDisconnectedError, ConnectionResetError,
                        aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
        return _ERR["reset"]
    return _ERR["other"]


def _ssl_context(spec: DriveSpec) -> ssl.SSLContext | bool:
    if not spec.base_url.startswith("https://"):
        return False
    if spec.insecure:
        return False  # aiohttp: skip verification; only with the explicit flag
    return ssl.create_default_context(cafile=spec.ca_file)


async def _sleep_until(deadline_ns: int) -> None:
    """Wake at ``deadline_ns`` (perf_counter) to within tens of microseconds.

    asyncio's selector rounds timeouts up to whole milliseconds, so a plain sleep lands up to
    1 ms late; sleep coarsely to within SPIN_NS, then yield to the loop (which keeps serving
    responses) until the deadline.
    """
    delay = deadline_ns - time.perf_counter_ns()
    if delay > SPIN_NS:
        await asyncio.sleep((delay - SPIN_NS) / 1e9)
    while time.perf_counter_ns() < deadline_ns:
        await asyncio.sleep(0)


class Executor:
    """Open-loop constant-arrival-rate executor; ``run()`` fills :class:`Samples`."""

    def __init__(self, spec: DriveSpec, progress=None) -> None:
        self.spec = spec
        self.samples = Samples(schedule_offsets_ns(spec.rate, spec.duration_s))
        self.scheduled = 0  # arrivals whose intended time has come (dispatched or dropped)
        self.in_flight = 0
        self.stop_requested = False
        self.progress = progress
        self.tags = sorted({t.tag for t in spec.templates})
        self._tag_code = {t: i for i, t in enumerate(self.tags)}
        self.epoch_ns = 0  # UTC epoch ns at the monotonic anchor
        self.mono0 = 0

    async def run(self, session) -> None:
        spec, s = self.spec, self.samples
        token = os.environ.get(spec.token_env, "") if spec.token_env else ""
        prepared = []
        for t in spec.templates:
            headers = {"Accept": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if t.body is not None:
                headers["Content-Type"] = "application/json"
            headers.update(t.headers)
            body = t.body.encode() if t.body is not None else None
            prepared.append((t.method, spec.base_url.rstrip("/") + t.path, headers, body,
                             self._tag_code[t.tag]))
        timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
        tasks: set[asyncio.Task] = set()
        # Anchor the monotonic clock to UTC once; start a little ahead so the first arrivals
        # are not late because of set-up work.
        self.epoch_ns, self.mono0 = time.time_ns(), time.perf_counter_ns()
        start = self.mono0 + 20_000_000
        s.intended_ns += start
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        n = len(s.intended_ns)
        for i in range(n):
            if self.stop_requested:
                break
            await _sleep_until(int(s.intended_ns[i]))
            if self.stop_requested:
                break
            self.scheduled += 1
            if self.in_flight >= spec.max_vus:
                s.error[i] = _ERR["dropped"]
                s.tag[i] = prepared[i % len(prepared)][4]
                continue
            self.in_flight += 1
            task = asyncio.create_task(self._one(session, i, prepared[i % len(prepared)], timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if self.progress and time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                self.progress(self)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, session, i: int, prepared, timeout) -> None:
        method, url, headers, body, tag = prepared
        s = self.samples
        s.tag[i] = tag
        s.send_ns[i] = time.perf_counter_ns()
        try:
            async with session.request(method, url, headers=headers, data=body,
                                       timeout=timeout, allow_redirects=False) as resp:
                payload = await resp.read()
                s.status[i] = resp.status
                s.nbytes[i] = len(payload)
                s.error[i] = classify_status(resp.status)
        except asyncio.CancelledError:
            s.error[i] = _ERR["other"]
            raise
        except Exception as exc:  # every failure is a sample, never a crash
            s.error[i] = classify_exception(exc)
        finally:
            s.end_ns[i] = time.perf_counter_ns()
            self.in_flight -= 1

    def to_epoch(self, mono_ns: np.ndarray) -> np.ndarray:
        return mono_ns - self.mono0 + self.epoch_ns


def _percentiles_ms(values_ns: np.ndarray, qs=(50, 90, 95, 99)) -> dict:
    if values_ns.size == 0:
        return {f"p{q}": None for q in qs} | {"max": None}
    pct = np.percentile(values_ns, qs, method="inverted_cdf")  # nearest rank: an observed value
    out = {f"p{q}": float(v) / 1e6 for q, v in zip(qs, pct, strict=True)}
    out["max"] = float(values_ns.max()) / 1e6
    return out


def summarize(ex: Executor, status: str, wall_s: float, cpu_s: float) -> dict:
    """The driver's own verdict: counts, rates, latency, lag and validity."""
    s, spec = ex.samples, ex.spec
    n = ex.scheduled
    err = s.error[:n]
    sent = err != _ERR["dropped"]
    ok = err == 0
    dropped = int((~sent).sum())
    failed = int((sent & ~ok).sum())
    completed = int(ok.sum())
    response = (s.end_ns[:n] - s.intended_ns[:n])[sent]
    service = (s.end_ns[:n] - s.send_ns[:n])[sent]
    lag = (s.send_ns[:n] - s.intended_ns[:n])[sent]
    active_s = spec.duration_s if status == "completed" else max(n / spec.rate, 1e-9)
    achieved = (completed + failed) / active_s
    lag_ms = _percentiles_ms(lag, (50, 99))
    cpu_fraction = cpu_s / wall_s if wall_s > 0 else 0.0
    reasons = []
    if dropped:
        reasons.append(f"{dropped} arrivals dropped: all {spec.max_vus} VUs were busy")
    if lag_ms["p99"] is not None and lag_ms["p99"] > MAX_SCHEDULE_LAG_P99_MS:
        reasons.append(f"schedule-lag p99 {lag_ms['p99']:.2f} ms > {MAX_SCHEDULE_LAG_P99_MS} ms")
    if status == "completed" and achieved < MIN_ACHIEVED_RATIO * spec.rate:
        reasons.append(f"achieved {achieved:.1f} req/s < {MIN_ACHIEVED_RATIO:.0%} of offered")
    if status != "completed":
        reasons.append(f"run {status} before its schedule ended")
    by_tag = {}
    for code, name in enumerate(ex.tags):
        mask = (s.tag[:n] == code) & sent
        by_tag[name] = {
            "count": int(mask.sum()),
            "failed": int((mask & ~ok).sum()),
            "latency_ms": _percentiles_ms((s.end_ns[:n] - s.intended_ns[:n])[mask]),
        }
    errors = {ERROR_CLASSES[c]: int((err == c).sum()) for c in range(1, len(ERROR_CLASSES))}
    return {
        "scenario": spec.scenario,
        "status": status,
        "scheduled": n,
        "planned": len(s.intended_ns),
        "completed": completed,
        "failed": failed,
        "dropped": dropped,
        "offered_rate": spec.rate,
        "achieved_rate": achieved,
        "duration_s": spec.duration_s,
        "error_rate": failed / (completed + failed) if completed + failed else None,
        "errors": {k: v for k, v in errors.items() if v},
        "latency_ms": _percentiles_ms(response),
        "service_time_ms": _percentiles_ms(service, (50, 99)),
        "schedule_lag_ms": lag_ms,
        "by_tag": by_tag,
        "driver": {
            "engine": f"aiohttp {aiohttp.__version__}",
            "max_vus": spec.max_vus,
            "cpu_fraction": round(cpu_fraction, 4),
            "wall_s": round(wall_s, 3),
        },
        "valid": not reasons,
        "invalid_reasons": reasons,
    }


def write_requests(ex: Executor, path: Path) -> None:
    """Write the recorded samples to Parquet (dropped arrivals included, with null times)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s, n = ex.samples, ex.scheduled
    dropped = s.error[:n] == _ERR["dropped"]
    table = pa.table({
        "intended_ns": pa.array(ex.to_epoch(s.intended_ns[:n])),
        "send_ns": pa.array(ex.to_epoch(s.send_ns[:n]), mask=dropped),
        "end_ns": pa.array(ex.to_epoch(s.end_ns[:n]), mask=dropped),
        "status": pa.array(s.status[:n]),
        "bytes": pa.array(s.nbytes[:n]),
        "error": pa.DictionaryArray.from_arrays(
            pa.array(s.error[:n]), pa.array(list(ERROR_CLASSES))),
        "tag": pa.DictionaryArray.from_arrays(pa.array(s.tag[:n]), pa.array(ex.tags)),
    })
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # a reader never sees a half-written file


def _print_progress(ex: Executor) -> None:
    s, n = ex.samples, ex.scheduled
    done = (s.end_ns[:n] > 0)
    elapsed = (time.perf_counter_ns() - ex.mono0) / 1e9
    errors = int(((s.error[:n] != 0) & done).sum())
    resp = (s.end_ns[:n] - s.intended_ns[:n])[done]
    p95 = np.percentile(resp, 95) / 1e6 if resp.size else float("nan")
    print(f"[driver] {elapsed:6.1f}s  sent {int(done.sum())}  rate {done.sum() / elapsed:7.1f}/s"
          f"  errors {errors}  p95 {p95:.2f} ms", file=sys.stderr, flush=True)


def run_driver(spec: DriveSpec, out_dir: Path) -> dict:
    """Run the schedule in this process; write requests.parquet and result.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = Executor(spec, progress=_print_progress)
    status = "completed"

    def request_stop(signum, _frame) -> None:
        nonlocal status
        status = "interrupted"
        ex.stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=spec.max_vus, ssl=_ssl_context(spec),
                                         force_close=False, enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            await ex.run(session)

    started_at = time.time()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        asyncio.run(main())
    except Exception as exc:  # keep every sample taken so far
        status = f"failed: {type(exc).__name__}: {exc}"
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    write_requests(ex, out_dir / "requests.parquet")
    result = summarize(ex, status, wall_s, cpu_s)
    result["started_at"] = _iso(started_at)
    result["ended_at"] = _iso(time.time())
    _write_json(out_dir / "result.json", result)
    return result


def _iso(epoch_s: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def drive(spec: DriveSpec, out_dir: Path, env: dict[str, str] | None = None,
          echo=print) -> dict:
    """Run the driver in a separate process and return its result.

    ``env`` adds variables for the child only (the token travels this way, never in a file).
    Progress lines are passed to ``echo``. Interrupting the caller interrupts the driver, which
    still writes everything it recorded.
    """
    spec.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "spec.json"
    spec_path.write_text(spec.to_json())
    child_env = os.environ | (env or {})
    proc = subprocess.Popen([sys.executable, "-m", "workbench.driver", str(spec_path)],
                            stderr=subprocess.PIPE, text=True, env=child_env)
    try:
        for line in proc.stderr:
            echo(line.rstrip())
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    result_path = out_dir / "result.json"
    if not result_path.exists():
        raise WorkbenchError(f"the driver exited with code {proc.returncode} and wrote no result;"
                             " see the lines above")
    return json.loads(result_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec = DriveSpec.from_json(spec_path.read_text())
    spec.validate()
    result = run_driver(spec, spec_path.parent)
    return 0 if result["status"] == "completed" else 3


if __name__ == "__main__":
    raise SystemExit(main())
