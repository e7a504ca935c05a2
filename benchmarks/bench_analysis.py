"""Analysis speed: a 1,000,000-request run analysed in at most 5 s.

    .venv/bin/python benchmarks/bench_analysis.py

The run is synthetic but shaped like a real one: an open loop of 3,334 req/s for 300 s over two
endpoints, log-normal latencies with a slow tail, 0.5 % HTTP errors, a few transport errors and
drops. It is written to Parquet in the driver's row groups and read back as ``workbench run``
would, then

1. opened (``analysis.open_requests``: one pass over the intended starts and tags),
2. analysed (``analysis.analyse``: percentiles with intervals per endpoint and status class,
   load, errors, 10 s windows, validity), streamed one row group at a time,
3. turned into a baseline record's histograms and windows (``record.latency_sections``).

Each step is timed several times and the median reported; the target applies to 1 + 2, the
time from a run folder to every table an operator reads. ``bench()`` returns the rows for
``benchmarks/run.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.analyse import analysis  # noqa: E402
from workbench.driver import ERROR_CLASSES  # noqa: E402
from workbench.driver.recorder import CHUNK_ROWS  # noqa: E402
from workbench.report import record  # noqa: E402

REQUESTS = 1_000_000
TARGET_S = 5.0


def write_synthetic_run(run_dir: Path, n: int = REQUESTS, seed: int = 1) -> None:
    """A ``requests.parquet`` of n requests as the driver writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rate, t0 = 3334.0, 1_780_000_000 * 10**9
    intended = t0 + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
    lag = rng.exponential(50_000, n).astype(np.int64)  # 50 µs schedule lag
    service = (rng.lognormal(np.log(2e6), 0.5, n)  # ~2 ms median
               * np.where(rng.random(n) < 0.01, 20, 1)).astype(np.int64)  # 1 % slow tail
    error = np.zeros(n, np.int8)
    status = np.full(n, 200, np.int16)
    http5 = rng.random(n) < 0.005
    error[http5], status[http5] = ERROR_CLASSES.index("http_5xx"), 503
    transport = rng.random(n) < 0.0005
    error[transport], status[transport] = ERROR_CLASSES.index("timeout"), 0
    dropped = rng.random(n) < 0.0001
    error[dropped], status[dropped] = ERROR_CLASSES.index("dropped"), 0
    send = intended + lag
    table = pa.table({
        "intended_ns": pa.array(intended),
        "send_ns": pa.array(send, mask=dropped),
        "end_ns": pa.array(send + service, mask=dropped),
        "status": pa.array(status),
        "bytes": pa.array(np.full(n, 120, np.int32)),
        "error": pa.DictionaryArray.from_arrays(pa.array(error), pa.array(list(ERROR_CLASSES))),
        "tag": pa.DictionaryArray.from_arrays(pa.array((np.arange(n) % 2).astype(np.int16)),
                                              pa.array(["directory", "new-nonce"])),
    })
    pq.write_table(table, run_dir / "requests.parquet", row_group_size=CHUNK_ROWS)


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(n: int = REQUESTS, repeats: int = 3) -> list[tuple[str, float, float]]:
    """Rows ``(name, measured seconds, target seconds)``."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_synthetic_run(run_dir, n)
        load_s, requests = _median_time(lambda: analysis.open_requests(run_dir), repeats)
        analyse_s, result = _median_time(
            lambda: analysis.analyse(requests, "synthetic", 3334.0, 300.0), repeats)
        record_s, _ = _median_time(
            lambda: record.latency_sections(requests, result.window_s), repeats)
    assert int(result.percentiles["count"].iloc[0]) == int(result.load["sent"].iloc[0])
    label = f"{n:,} requests"
    return [
        (f"{label}: open requests.parquet (s)", load_s, TARGET_S),
        (f"{label}: analyse (s)", analyse_s, TARGET_S),
        (f"{label}: open + analyse (s)", load_s + analyse_s, TARGET_S),
        (f"{label}: record histograms + windows (s)", record_s, TARGET_S),
    ]


def main() -> int:
    rows = bench()
    width = max(len(name) for name, _, _ in rows)
    print(f"{'benchmark':<{width}}  {'measured':>10}  {'target':>8}  verdict")
    failed = 0
    for name, value, limit in rows:
        ok = value <= limit
        failed += not ok
        print(f"{name:<{width}}  {value:>10.3f}  {limit:>8g}  {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
