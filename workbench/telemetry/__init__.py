"""Server-side telemetry, sampled through a run beside the driver, never inside it.

Client-side percentiles say *that* the target got slow; telemetry says what the server was
doing meanwhile: PostgreSQL's activity, connections, waits and locks, certctl's job backlog,
the host's CPU and the target process's CPU and memory. A sampler process
(:class:`TelemetrySampler`) writes ``telemetry.parquet`` and ``telemetry.json`` into the run
folder; :func:`load_telemetry` and :func:`telemetry_windows` line the samples up with the
latency analysis's windows, and :func:`workbench.plots.latency_and_telemetry` draws both on
one time axis. :func:`wait_for_drain` samples the job backlog until it is empty.
"""

from workbench.telemetry.drain import DRAIN_STATUSES, Drain, wait_for_drain
from workbench.telemetry.frames import (
    load_telemetry,
    record_summary,
    telemetry_windows,
)
from workbench.telemetry.process import TelemetrySampler
from workbench.telemetry.sampler import (
    PARQUET_FILE,
    SIDECAR_FILE,
    Sampler,
    build_sources,
    read_sidecar,
)
from workbench.telemetry.sources import (
    JOB_STATUSES,
    HostSource,
    JobsSource,
    PostgresSource,
    ProcessSource,
    SourceError,
)

__all__ = ["DRAIN_STATUSES", "JOB_STATUSES", "PARQUET_FILE", "SIDECAR_FILE", "Drain",
           "HostSource", "JobsSource", "PostgresSource", "ProcessSource", "Sampler",
           "SourceError", "TelemetrySampler", "build_sources", "load_telemetry", "read_sidecar",
           "record_summary", "telemetry_windows", "wait_for_drain"]
