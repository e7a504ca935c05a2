"""The shared load driver: k6's executors, coordinated-omission-correct timing, HDR histograms.

It runs in its own processes (``python -m workbench.driver SPEC.json``), never inside a Jupyter
kernel. The parent calls :func:`drive`, which starts the shard processes, relays one live
progress line and returns the merged result (``result.json``, read with :func:`load_result`).

Per request it records, as columns (no Python object per request survives): intended start,
actual send and end (UTC epoch nanoseconds from the monotonic clock, anchored once at run
start), HTTP status, response bytes, error class and endpoint tag, streamed in chunks to
``requests.parquet``. Response time is ``end - intended``, so a stalled server or a late driver
shows up in the latency (coordinated omission corrected, as wrk2 and k6's arrival-rate
executors do); service time is ``end - send``; schedule lag is ``send - intended``.

Invariant: ``scheduled = completed + failed + dropped``. An arrival that finds every VU busy is
dropped (k6's ``dropped_iterations``), never silently skipped.

Modules, from the wire up: ``outcomes`` (error classes), ``engine`` (the ``Engine`` protocol
and its callback, the shared content-type cache), ``http1`` (the HTTP/1.1 engine; ``fresh``: a
new connection per request, its phases timed), ``http2_codec`` (HTTP/2 frames and HPACK) and
``http2`` (the HTTP/2 engine over it), ``timer`` (precise wake-ups), ``spec``
(what to drive; the executor registry), ``schedule`` (intended times), ``recorder`` (columns,
Parquet, histograms), ``scripted`` (what a script sees), ``executors`` (one per file, one
lifecycle), ``result`` (file shapes, merge, validity), ``shard`` (one shard in a process),
``launch`` (the parent: processes, progress, Dask). ``workbench.analyse.hdr`` holds the histogram
format.
"""

# The executors register themselves with the spec module when imported: import them first, so
# DriveSpec.validate finds every executor whichever driver module a caller imports.
from workbench.driver import executors  # noqa: F401, I001
from workbench.driver.engine import Done, Engine
from workbench.driver.http1 import HttpEngine, PreparedRequest
from workbench.driver.launch import auto_shards, drive
from workbench.driver.outcomes import ERROR_CLASSES, classify_exception, classify_status
from workbench.driver.result import (
    MAX_CPU_FRACTION,
    MAX_SCHEDULE_LAG_P99_MS,
    MIN_ACHIEVED_RATIO,
    RESULT_SCHEMA_VERSION,
    DriveResult,
    ShardReport,
    load_result,
    merge_reports,
)
from workbench.driver.schedule import ramping_offsets_ns, schedule_offsets_ns
from workbench.driver.shard import main, run_shard
from workbench.driver.spec import EXECUTORS, DriveSpec, RequestTemplate

__all__ = [
    "ERROR_CLASSES", "EXECUTORS", "MAX_CPU_FRACTION", "MAX_SCHEDULE_LAG_P99_MS",
    "MIN_ACHIEVED_RATIO", "RESULT_SCHEMA_VERSION", "Done", "DriveResult", "DriveSpec", "Engine",
    "HttpEngine", "PreparedRequest", "RequestTemplate", "ShardReport", "auto_shards",
    "classify_exception", "classify_status", "drive", "load_result", "main", "merge_reports",
    "ramping_offsets_ns", "run_shard", "schedule_offsets_ns",
]
