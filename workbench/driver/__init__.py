"""The shared load driver: k6's executors, coordinated-omission-correct timing, HDR histograms.

It runs in its own processes (``python -m workbench.driver SPEC.json``), never inside a Jupyter
kernel. The parent calls :func:`drive`, which starts the shard processes, relays one live
progress line and returns the merged result (``result.json``).

Per request it records, as columns (no Python object per request survives): intended start,
actual send and end (UTC epoch nanoseconds from the monotonic clock, anchored once at run
start), HTTP status, response bytes, error class and endpoint tag, streamed in chunks to
``requests.parquet``. Response time is ``end - intended``, so a stalled server or a late driver
shows up in the latency (coordinated omission corrected, as wrk2 and k6's arrival-rate
executors do); service time is ``end - send``; schedule lag is ``send - intended``.

Invariant: ``scheduled = completed + failed + dropped``. An arrival that finds every VU busy is
dropped (k6's ``dropped_iterations``), never silently skipped.

Modules: ``spec`` (what to drive), ``schedule`` (intended times), ``timer`` (precise wake-ups),
``engine`` (the HTTP/1.1 hot loop), ``recorder`` (columns, Parquet, histograms),
``executors`` (open and closed loop), ``summary`` (merge and validity), ``process`` (processes);
``workbench.shards`` scales out, ``workbench.hdr`` holds the histogram format.
"""

from workbench.driver.engine import HttpEngine, PreparedRequest
from workbench.driver.outcomes import ERROR_CLASSES, classify_exception, classify_status
from workbench.driver.process import drive, main, run_shard
from workbench.driver.schedule import ramping_offsets_ns, schedule_offsets_ns
from workbench.driver.spec import EXECUTORS, DriveSpec, RequestTemplate
from workbench.driver.summary import (
    MAX_CPU_FRACTION,
    MAX_SCHEDULE_LAG_P99_MS,
    MIN_ACHIEVED_RATIO,
    summarize,
)

__all__ = [
    "ERROR_CLASSES", "EXECUTORS", "MAX_CPU_FRACTION", "MAX_SCHEDULE_LAG_P99_MS",
    "MIN_ACHIEVED_RATIO", "DriveSpec", "HttpEngine", "PreparedRequest", "RequestTemplate",
    "classify_exception", "classify_status", "drive", "main", "ramping_offsets_ns", "run_shard",
    "schedule_offsets_ns", "summarize",
]
