"""Server-side telemetry, sampled through a run beside the driver, never inside it.

Client-side percentiles say *that* the target got slow; telemetry says what the server was
doing meanwhile: PostgreSQL's activity, connections, waits and locks, certctl's job backlog,
the host's CPU and the target process's CPU and memory, and what Prometheus targets say
(certctl's own metrics, node_exporter, postgres_exporter: a target on hosts of its own). A
sampler process (:class:`TelemetrySampler`) writes ``telemetry.parquet`` and
``telemetry.json`` into the run folder; :func:`load_telemetry` and :func:`telemetry_windows`
line the samples up with the latency analysis's windows, and
:func:`workbench.report.plots.latency_and_telemetry` draws both on one time axis.
:func:`wait_for_drain` samples the job backlog until it is empty.
"""

import importlib

# certctl's job statuses (contract 8.4); always reported, as 0 when absent, so plots stay whole;
# here, not in .sources, so that a figure names them without loading psycopg.
JOB_STATUSES = ("Pending", "AwaitingCSR", "AwaitingApproval", "Running", "Completed", "Failed",
                "Cancelled")

# Names are imported on first use (PEP 562): the sampler's own process (``python -m
# workbench.telemetry``) then loads what it samples with, not pandas, to take its first sample.
_FROM = {"drain": ("DRAIN_STATUSES", "Drain", "wait_for_drain"),
         "frames": ("load_telemetry", "record_summary", "telemetry_windows"),
         "process": ("TelemetrySampler",),
         "prometheus": ("ScrapeSource",),
         "files": ("PARQUET_FILE", "SIDECAR_FILE", "read_sidecar"),
         "sampler": ("Sampler", "build_sources"),
         "sources": ("HostSource", "JobsSource", "PostgresSource",
                     "ProcessSource", "SourceError")}
_MODULE = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted([*_MODULE, "JOB_STATUSES"])


def __getattr__(name: str):
    if name in _FROM:  # a submodule, e.g. workbench.telemetry.sampler
        return importlib.import_module(f"{__name__}.{name}")
    if name in _MODULE:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
