"""Backlog drain: sample certctl's jobs until the backlog is empty or a timeout passes.

After a bulk renewal the server has work queued (``Pending`` jobs its processor claims every
30 s, ``Running`` ones, ``AwaitingCSR`` ones waiting for agents). :func:`wait_for_drain` reads
the same count as the telemetry's ``certctl`` source once an interval and reports how long the
backlog took to reach zero, or that it did not within the timeout, with every sample taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.telemetry.sampler import statement_timeout_ms
from workbench.telemetry.sources import JobsSource, SourceError

DRAIN_STATUSES = ("Pending", "AwaitingCSR", "Running")


@dataclass(frozen=True)
class Drain:
    """What :func:`wait_for_drain` saw. ``seconds`` runs from the first sample to the first
    sample with an empty backlog (drained) or to the last one (timed out)."""

    drained: bool
    seconds: float
    initial_backlog: int | None
    final_backlog: int | None
    statuses: tuple[str, ...]
    samples: pd.DataFrame = field(repr=False)  # t_ns, elapsed_s, backlog, jobs.<Status> ...
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def drained_per_s(self) -> float | None:
        """Jobs leaving the backlog per second, first sample to last."""
        if self.initial_backlog is None or self.final_backlog is None or self.seconds <= 0:
            return None
        return (self.initial_backlog - self.final_backlog) / self.seconds


def wait_for_drain(dsn: str, timeout_s: float, interval_s: float = 1.0,
                   statuses: Sequence[str] = DRAIN_STATUSES,
                   certificate_like: str | None = None,
                   stop: threading.Event | None = None) -> Drain:
    """Sample jobs every ``interval_s`` until none has a status in ``statuses`` or
    ``timeout_s`` passes (or ``stop`` is set). ``certificate_like`` limits the count to jobs
    of matching certificates (``'mc-loadtest-bulk-%'``: the bulk fixture's). A failed sample
    (a lost connection) is counted by reason and retried on the next interval.
    """
    for name, value in (("timeout", timeout_s), ("interval", interval_s)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise WorkbenchError(f"drain {name} must be a positive number of seconds, "
                                 f"got {value!r}")
    statuses = tuple(statuses)
    if not statuses:
        raise WorkbenchError("drain needs at least one job status to wait for")
    source = JobsSource(dsn, statement_timeout_ms=statement_timeout_ms(interval_s),
                        certificate_like=certificate_like)
    stop = stop or threading.Event()
    rows: list[dict] = []
    failures: dict[str, int] = {}
    start = time.monotonic()
    k = 0
    try:
        while True:
            t_ns, elapsed = time.time_ns(), time.monotonic() - start
            try:
                counts = source.sample()
            except SourceError as exc:
                failures[str(exc)] = failures.get(str(exc), 0) + 1
            else:
                backlog = int(sum(counts.get(f"jobs.{s}", 0.0) for s in statuses))
                rows.append({"t_ns": t_ns, "elapsed_s": elapsed, "backlog": backlog} | counts)
                if backlog == 0:
                    break
            k += 1
            next_at = start + k * interval_s
            if next_at - start > timeout_s or stop.wait(max(0.0, next_at - time.monotonic())):
                break
    finally:
        source.close()
    samples = pd.DataFrame(rows)
    drained = bool(rows) and rows[-1]["backlog"] == 0
    return Drain(drained=drained,
                 seconds=(rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) if rows else 0.0,
                 initial_backlog=rows[0]["backlog"] if rows else None,
                 final_backlog=rows[-1]["backlog"] if rows else None,
                 statuses=statuses, samples=samples, failures=failures)
