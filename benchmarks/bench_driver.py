"""The driver's bars, measured side by side in one run on loopback.

Driver and server are pinned to different cores (taskset; CPU 0 for the client under test,
CPU 1 for ``servers.py``). Every figure comes from this run; absolute numbers on a shared
2-core machine are noisy, ratios measured minutes apart are the point.

1. Capacity: closed loop, 200 connections, tiny responses. For each client the requests the
   server answered inside a 5 s window (after a warm-up), divided by the client's own CPU
   seconds in that window (its whole process tree): req/s per driver core. Ratios are ours
   over theirs. Clients: ours (constant-vus), aiohttp (the engine we replaced), k6 (only when
   on PATH), wrk, hey, vegeta, Locust FastHttpUser. Each holds 200 connections busy: vegeta
   as a closed loop of 200 workers (``-rate=0 -workers=200 -max-workers=200``, at most 200
   connections, bodies not kept, one Go scheduler thread like ``hey -cpus 1``).
2. Accuracy: open loop at 1,000 and 2,000 req/s against exact injected delays (fixed 10 ms;
   lognormal with median 10 ms, sigma 0.5, so p99 = 10 e^(0.5 x 2.3263) = 31.98 ms). The
   truth is the server's own measured hold times (what it actually did), the nominal
   quantiles are shown beside them. Run twice: isolated (driver and server also under
   SCHED_FIFO where allowed, so other tenants of a shared machine cannot delay their
   wake-ups; the bars use this) and plain (as a shared machine gives it, for reference).
3. Coordinated omission: 1,000 req/s for 10 s, the server answers nothing for 2 s from 4 s in.
   The expected p99, from the schedule and the stall's measured window, is about 1.9 s; a
   closed-loop run through the same stall is shown for contrast.
(Memory per request: ``bench_memory.py``.)
"""

from __future__ import annotations

import json
import math
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import tools  # noqa: E402
from benchmarks.bars import Bar  # noqa: E402
from workbench import jsonio  # noqa: E402
from workbench.driver import DriveResult, DriveSpec, RequestTemplate, load_result  # noqa: E402
from workbench.driver.priority import DISABLE_ENV  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
DRIVER_CPU, SERVER_CPU = 0, 1
CONNECTIONS = 200
PER_CORE_TARGET = 10_000
LAG_TARGET_MS = 1.0
ERROR_TARGET_MS = 1.0
Z99 = 2.3263478740408408


class BenchServer:
    """``servers.py`` in its own process on SERVER_CPU; counter and hold times readable."""

    def __init__(self, tmp: Path, delay: str = "none", stall_after: float = 0.0,
                 realtime: bool = False, slots: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.counter_path = tmp / f"counter-{self.port}"
        self.holds_path = tmp / f"holds-{self.port}.npy"
        argv = [sys.executable, str(HERE / "servers.py"), "--port", str(self.port),
                "--delay", delay, "--counter", str(self.counter_path),
                "--holds", str(self.holds_path)]
        if stall_after:
            argv += ["--stall-after", str(stall_after), "--stall-s", "2"]
        if slots:  # a server of known capacity: slots / hold requests per second
            argv += ["--slots", str(slots)]
        if tools.have_taskset():
            argv += ["--cpu", str(SERVER_CPU)]
        if realtime and tools.can_realtime():
            argv = ["chrt", "-f", "10", *argv]
        self.argv = argv

    def __enter__(self) -> BenchServer:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("benchmark server did not start")
        fd = os.open(self.counter_path, os.O_RDONLY)
        self._map = mmap.mmap(fd, 8, prot=mmap.PROT_READ)
        os.close(fd)
        self.ps = psutil.Process(self.proc.pid)
        return self

    def count(self) -> int:
        return int.from_bytes(self._map[:8], sys.byteorder, signed=True)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._map.close()

    def holds_ms(self) -> np.ndarray:
        return np.load(self.holds_path) / 1e6

    def meta(self) -> dict:
        return json.loads(self.holds_path.with_suffix(".json").read_text())


def tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and all its descendants still alive."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure_closed_loop(argv: list[str], server: BenchServer, warmup_s: float, window_s: float,
                        env: dict | None = None) -> dict:
    """Run ``argv``; over a window after warm-up: served req/s, client cores, server cores."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    ps = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 60
        while server.count() == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sent nothing: {proc.stderr.read()[-300:]}")
            time.sleep(0.05)
        time.sleep(warmup_s)
        c0, u0, s0, t0 = server.count(), tree_cpu(ps), server.cpu(), time.perf_counter()
        time.sleep(window_s)
        c1, u1, s1, t1 = server.count(), tree_cpu(ps), server.cpu(), time.perf_counter()
        if proc.poll() is not None:
            raise RuntimeError("the client stopped before the window ended")
    finally:
        try:
            proc.wait(timeout=warmup_s + window_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = t1 - t0
    rps, cores = (c1 - c0) / wall, (u1 - u0) / wall
    return {"rps": rps, "cores": cores, "per_core": rps / cores if cores > 0 else math.nan,
            "server_cores": (s1 - s0) / wall}


def _driver_argv(spec: DriveSpec, out: Path, realtime: bool = False) -> list[str]:
    """The driver pinned to DRIVER_CPU; under SCHED_FIFO when ``realtime``, else at the
    priority it inherits (its own protection switched off: "plain" means as a shared machine
    gives it, and a closed loop at full speed measures CPU cost, not wake-up priority)."""
    jsonio.write_json(out / "spec.json", spec.document())
    argv = [sys.executable, "-m", "workbench.driver", str(out / "spec.json"), "--out", str(out)]
    if not realtime:
        argv = ["env", f"{DISABLE_ENV}=off", *argv]
    return tools.pinned(argv, DRIVER_CPU, realtime)


def run_driver(spec: DriveSpec, out: Path, realtime: bool = False) -> DriveResult:
    """One driver process pinned to DRIVER_CPU; its result.json."""
    subprocess.run(_driver_argv(spec, out, realtime), check=True, stderr=subprocess.DEVNULL)
    return load_result(out)


# -- 1. capacity ----------------------------------------------------------------------------

def _clients(url: str, tmp: Path, run_s: float):
    """(name, how to get argv, version) for every client; argv None with a reason to skip."""
    spec = DriveSpec(url, (RequestTemplate("GET", "/", "tiny"),), executor="constant-vus",
                     vus=CONNECTIONS, max_vus=CONNECTIONS, duration_s=run_s)
    yield "workbench driver", lambda: (_driver_argv(spec, tmp / "ours"), "this checkout")
    yield "aiohttp 3 (replaced engine)", lambda: (tools.pinned(
        [sys.executable, str(HERE / "aiohttp_client.py"), url + "/", str(CONNECTIONS),
         str(run_s)], DRIVER_CPU), "aiohttp " + __import__("aiohttp").__version__)

    def k6():
        exe, version = tools.find_k6()
        script = tmp / "k6.js"
        script.write_text(
            "import http from 'k6/http';\n"
            f"export const options = {{ vus: {CONNECTIONS}, duration: '{run_s}s',"
            " discardResponseBodies: true };\n"
            f"export default function () {{ http.get('{url}/'); }}\n")
        return tools.pinned([*exe, "run", "--quiet", "--no-summary", "--no-usage-report",
                             str(script)], DRIVER_CPU), version
    yield "k6", k6

    def wrk():
        exe, version = tools.find_debian_tool("wrk")
        return tools.pinned([*exe, "-t1", f"-c{CONNECTIONS}", f"-d{run_s}s", url + "/"],
                            DRIVER_CPU), version
    yield "wrk", wrk

    def hey():
        exe, version = tools.find_debian_tool("hey")
        return tools.pinned([*exe, "-c", str(CONNECTIONS), "-z", f"{run_s}s", "-cpus", "1",
                             url + "/"], DRIVER_CPU), version
    yield "hey", hey

    def vegeta():
        exe, version = tools.find_vegeta()
        targets = tmp / "vegeta-targets.txt"
        targets.write_text(f"GET {url}/\n")
        # a closed loop: rate 0 (as fast as answered) over exactly 200 workers, each holding
        # its own keep-alive connection; bodies discarded, as the other clients do
        return tools.pinned([*exe, "-cpus", "1", "attack", "-rate=0",
                             f"-workers={CONNECTIONS}", f"-max-workers={CONNECTIONS}",
                             f"-max-connections={CONNECTIONS}", "-max-body=0",
                             f"-targets={targets}",
                             f"-duration={run_s}s", "-output=/dev/null"],
                            DRIVER_CPU), version
    yield "vegeta", vegeta

    def locust():
        exe, version = tools.find_locust()
        locustfile = tmp / "locustfile.py"
        locustfile.write_text(
            "from locust import FastHttpUser, constant, task\n\n\n"
            "class Tiny(FastHttpUser):\n"
            "    wait_time = constant(0)\n\n"
            "    @task\n"
            "    def tiny(self):\n"
            "        self.client.get('/')\n")
        return tools.pinned([*exe, "-f", str(locustfile), "--headless", "-u", str(CONNECTIONS),
                             "-r", "1000", "-t", f"{run_s}s", "--host", url, "--only-summary",
                             "--loglevel", "ERROR"], DRIVER_CPU), version
    yield "Locust FastHttpUser", locust


def bench_capacity(warmup_s: float = 2.5, window_s: float = 5.0) -> list[dict]:
    """Rows: client, version, req/s, client cores, req/s per core, ratio, server cores."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_s = math.ceil(warmup_s + window_s + 3)  # whole seconds: wrk and Locust want them
        with BenchServer(tmp) as server:
            for name, prepare in _clients(server.url, tmp, run_s):
                row = {"client": name}
                try:
                    argv, row["version"] = prepare()
                    row |= measure_closed_loop(argv, server, warmup_s, window_s,
                                               env=os.environ | {"K6_NO_USAGE_REPORT": "true"})
                except (tools.Unavailable, RuntimeError, subprocess.SubprocessError) as exc:
                    row["skipped"] = str(exc)
                rows.append(row)
                time.sleep(1.0)  # let sockets drain between clients
    ours = rows[0].get("per_core", math.nan)
    for row in rows:
        if "per_core" in row:
            row["ours_over_it"] = ours / row["per_core"]
    return rows


def capacity_bars(rows: list[dict]) -> list[Bar]:
    ours = rows[0]
    bars = [("capacity: ours, req/s per driver core", ours.get("per_core", math.nan),
             PER_CORE_TARGET, ">=")]
    for row in rows[1:]:
        if row["client"] in ("k6", "Locust FastHttpUser") and "ours_over_it" in row:
            bars.append((f"capacity: ours / {row['client']} per core", row["ours_over_it"],
                         1.0, ">="))
    return bars


# -- 2. accuracy ----------------------------------------------------------------------------

def bench_accuracy(rates: tuple[int, ...] = (1000, 2000), duration_s: float = 10.0
                   ) -> list[dict]:
    """Per (mode, rate, delay): measured vs the server's measured holds vs nominal quantiles."""
    delays = [("fixed 10 ms", "fixed:10", 10.0, 10.0),
              ("lognormal 10 ms, sigma 0.5", "lognormal:10:0.5", 10.0,
               10.0 * math.exp(0.5 * Z99))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        modes = ([True] if tools.can_realtime() else []) + [False]
        for realtime in modes:
            for rate in rates:
                for label, delay, nominal50, nominal99 in delays:
                    with BenchServer(tmp, delay=delay, realtime=realtime) as server:
                        spec = DriveSpec(server.url, (RequestTemplate("GET", "/", "d"),),
                                         rate=rate, duration_s=duration_s, max_vus=400)
                        result = run_driver(spec, tmp / f"acc-{realtime}-{rate}-{delay}",
                                            realtime)
                    truth50, truth99 = np.percentile(server.holds_ms(), [50, 99],
                                                     method="inverted_cdf")
                    lat, lag = result["latency_ms"], result["schedule_lag_ms"]
                    rows.append({
                        "mode": "isolated" if realtime else "plain", "rate": rate,
                        "delay": label, "requests": result["scheduled"],
                        "p50": lat["p50"], "p99": lat["p99"], "truth_p50": float(truth50),
                        "truth_p99": float(truth99), "nominal_p50": nominal50,
                        "nominal_p99": nominal99, "lag_p50": lag["p50"], "lag_p99": lag["p99"],
                        "dropped": result["dropped"], "cpu": result["driver"]["cpu_fraction"],
                        "valid": result["valid"]})
    return rows


def accuracy_bars(rows: list[dict]) -> list[Bar]:
    """Bars on the isolated runs where there are any (else the plain ones)."""
    mode = "isolated" if any(r["mode"] == "isolated" for r in rows) else "plain"
    bars = []
    for r in (r for r in rows if r["mode"] == mode):
        name = f"{r['rate']:,}/s {r['delay'].split()[0]}"
        bars += [(f"{name}: |p50 - truth| (ms)", abs(r["p50"] - r["truth_p50"]),
                  ERROR_TARGET_MS, "<="),
                 (f"{name}: |p99 - truth| (ms)", abs(r["p99"] - r["truth_p99"]),
                  ERROR_TARGET_MS, "<="),
                 (f"{name}: schedule-lag p99 (ms)", r["lag_p99"], LAG_TARGET_MS, "<="),
                 (f"{name}: dropped", r["dropped"], 0, "<=")]
    return bars


# -- 3. coordinated omission ----------------------------------------------------------------

def bench_stall(rate: float = 1000, duration_s: float = 10.0, stall_after_s: float = 4.0
                ) -> dict:
    """Open loop through a 2 s stall: measured p99 vs the p99 the schedule implies."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rt = tools.can_realtime()
        with BenchServer(tmp, stall_after=stall_after_s, realtime=rt) as server:
            spec = DriveSpec(server.url, (RequestTemplate("GET", "/", "s"),), rate=rate,
                             duration_s=duration_s, max_vus=4000, timeout_s=10.0)
            result = run_driver(spec, tmp / "open", rt)
        s0, s1 = server.meta()["stall_epoch_ns"]
        rows = pq.read_table(tmp / "open" / "requests.parquet").to_pandas()
        intended = rows["intended_ns"].to_numpy()
        in_stall = (intended >= s0) & (intended < s1)
        base_ms = float(np.median(((rows["end_ns"] - rows["intended_ns"]) / 1e6)[~in_stall]))
        expected_ms = np.where(in_stall, (s1 - intended) / 1e6, 0.0) + base_ms
        expected99 = float(np.percentile(expected_ms, 99, method="inverted_cdf"))
        with BenchServer(tmp, stall_after=stall_after_s, realtime=rt) as server:
            closed = run_driver(DriveSpec(server.url, (RequestTemplate("GET", "/", "s"),),
                                          executor="constant-vus", vus=2, max_vus=2,
                                          duration_s=duration_s, timeout_s=10.0),
                                tmp / "closed", rt)
    return {"p99": result["latency_ms"]["p99"], "expected_p99": expected99,
            "share_in_stall": float(in_stall.mean()), "dropped": result["dropped"],
            "lag_p99": result["schedule_lag_ms"]["p99"],
            "closed_loop_p99": closed["latency_ms"]["p99"],
            "closed_loop_requests": closed["scheduled"], "open_loop_requests": result["scheduled"]}


def stall_bars(r: dict) -> list[Bar]:
    return [("stall 2 s at 1,000/s: |p99 - expected| / expected",
             abs(r["p99"] - r["expected_p99"]) / r["expected_p99"], 0.05, "<="),
            ("stall 2 s at 1,000/s: dropped", r["dropped"], 0, "<=")]


# -- 4. the driver's own priority -----------------------------------------------------------

def _busy_loops() -> list[subprocess.Popen]:
    """One endless loop per core at normal priority: the other tenants of a shared host."""
    loop = [sys.executable, "-c", "while True: pass"]
    return [subprocess.Popen(tools.pinned(loop, cpu)) for cpu in range(os.cpu_count() or 1)]


def bench_priority(rate: float = 1000, duration_s: float = 20.0, repeats: int = 2
                   ) -> list[dict]:
    """``workbench drive`` at ``rate`` against a 5 ms loopback server while busy loops hold
    every core: unprotected (``WORKBENCH_DRIVER_PRIORITY=off``) and as it ships, interleaved."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with BenchServer(tmp, delay="fixed:5") as server:
            loops = _busy_loops()
            try:
                for i in range(repeats):
                    for protected in (False, True):
                        env = dict(os.environ)
                        env.pop(DISABLE_ENV, None)
                        if not protected:
                            env[DISABLE_ENV] = "off"
                        out = tmp / f"prio-{i}-{protected}"
                        subprocess.run([sys.executable, "-m", "workbench.cli", "drive",
                                        server.url + "/", "--rate", str(rate), "--duration",
                                        str(duration_s), "--vus", "400", "--out", str(out)],
                                       check=True, env=env, capture_output=True)
                        r = load_result(out)
                        lag, lat = r["schedule_lag_ms"], r["latency_ms"]
                        sched = r["driver"]["scheduling"] or {}
                        rows.append({"mode": "protected" if protected else "unprotected",
                                     "policy": sched.get("policy", "?"),
                                     "cpus": sched.get("cpus", []), "lag_p50": lag["p50"],
                                     "lag_p99": lag["p99"], "p50": lat["p50"],
                                     "p99": lat["p99"], "dropped": r["dropped"],
                                     "valid": r["valid"]})
            finally:
                for proc in loops:
                    proc.kill()
                    proc.wait()
    return rows


def print_priority(rows: list[dict]) -> None:
    print("\nDriver priority: workbench drive, 1,000 req/s, 5 ms server, a busy loop on every"
          " core")
    print(f"{'mode':<12} {'policy':<7} {'cpus':<6} {'lag p50':>8} {'lag p99':>8} {'p50':>7}"
          f" {'p99':>7} {'dropped':>8}  valid")
    for r in rows:
        print(f"{r['mode']:<12} {r['policy']:<7} {','.join(map(str, r['cpus'])):<6}"
              f" {r['lag_p50']:>8.3f} {r['lag_p99']:>8.3f} {r['p50']:>7.2f} {r['p99']:>7.2f}"
              f" {r['dropped']:>8}  {r['valid']}")


def priority_bars(rows: list[dict]) -> list[Bar]:
    """Protected runs only: the unprotected ones are the contrast, not a target."""
    bars: list[Bar] = []
    for i, r in enumerate(r for r in rows if r["mode"] == "protected"):
        bars += [(f"priority run {i + 1}: schedule-lag p99 (ms)", r["lag_p99"], 2.0, "<="),
                 (f"priority run {i + 1}: valid", int(r["valid"]), 1, "==")]
    return bars
