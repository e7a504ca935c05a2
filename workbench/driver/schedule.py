"""Intended start times: the schedule of an open-loop executor, computed in closed form.

Offsets are nanoseconds from the run's start. Arrival i starts when the integral of the rate
curve reaches i (k6's ``ramping-arrival-rate`` and vegeta's pacers do the same), so a constant
rate gives ``i / rate``. Offsets are computed for any block of arrival indices on demand, so a
long run never holds its whole schedule in memory, and a shard computes only its own arrivals
(arrival i belongs to shard ``i mod N``, like k6's striped execution segments).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from workbench.driver.spec import DriveSpec, executor_type


def schedule_offsets_ns(rate: float, duration_s: float) -> np.ndarray:
    """Intended start offsets of a constant arrival rate: ``i / rate`` for ``i/rate < D``."""
    count = math.ceil(rate * duration_s - 1e-9)
    return np.round(np.arange(count, dtype=np.float64) * (1e9 / rate)).astype(np.int64)


Stages = Sequence[tuple[float, float]]  # (seconds, target rate) each


def ramping_offsets_ns(start_rate: float, stages: Stages, indices: np.ndarray | None = None
                       ) -> np.ndarray:
    """Intended offsets of a piecewise-linear rate curve, for ``indices`` (default: all).

    The curve starts at ``start_rate`` and each stage ``(seconds, target)`` moves linearly to
    ``target``. Arrival i is at the time t where the cumulative count ``N(t)`` equals i; inside
    a stage starting at rate r with slope k, ``t = 2*d / (r + sqrt(r*r + 2*k*d))`` past the
    stage start, where d is what is left of i after the earlier stages (exact, also when k or r
    is 0).
    """
    starts, rates0, slopes, cum0, total = _segments(start_rate, stages)
    if indices is None:
        indices = np.arange(ramping_count(start_rate, stages), dtype=np.int64)
    x = indices.astype(np.float64)
    seg = np.clip(np.searchsorted(cum0, x, side="right") - 1, 0, len(starts) - 1)
    d = x - cum0[seg]
    r, k = rates0[seg], slopes[seg]
    denom = r + np.sqrt(np.maximum(r * r + 2 * k * d, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(denom > 0, 2 * d / np.where(denom > 0, denom, 1.0), 0.0)
    return np.round((starts[seg] + tau) * 1e9).astype(np.int64)


def ramping_count(start_rate: float, stages: Stages) -> int:
    """How many arrivals a ramp schedules: those with ``N(t) = i`` before the last stage ends."""
    *_, total = _segments(start_rate, stages)
    return math.ceil(total - 1e-9)


def _segments(start_rate: float, stages: Stages):
    """Per segment of positive duration: start time, start rate, slope, arrivals before it."""
    starts, rates0, slopes, cum0 = [], [], [], []
    t, rate, cum = 0.0, float(start_rate), 0.0
    for seconds, target in stages:
        seconds, target = float(seconds), float(target)
        if seconds > 0:  # a 0 s stage is a jump in rate
            starts.append(t)
            rates0.append(rate)
            slopes.append((target - rate) / seconds)
            cum0.append(cum)
            cum += seconds * (rate + target) / 2
            t += seconds
        rate = target
    if not starts:
        starts, rates0, slopes, cum0 = [0.0], [rate], [0.0], [0.0]
    return (np.array(starts), np.array(rates0), np.array(slopes), np.array(cum0), cum)


def planned_arrivals(spec: DriveSpec) -> int:
    """Arrivals (iterations) an open-loop spec schedules in total, over all shards (its
    executor's count)."""
    return executor_type(spec).planned_arrivals(spec)


def shard_arrivals(total: int, shard: int, shards: int) -> int:
    """How many of ``total`` arrivals fall to ``shard`` of ``shards`` (arrival i -> i mod N)."""
    return max(0, (total - shard + shards - 1) // shards)


def offsets_for(spec: DriveSpec, indices: np.ndarray) -> np.ndarray:
    """Intended offsets (ns from the start) of the global arrival ``indices`` of ``spec``."""
    return executor_type(spec).offsets_ns(spec, indices)


def blocks(spec: DriveSpec, shard: int = 0, shards: int = 1, size: int = 4096
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, offsets_ns)`` blocks of one shard's arrivals, in order."""
    total = planned_arrivals(spec)
    for first in range(shard, total, size * shards):
        indices = np.arange(first, min(total, first + size * shards), shards, dtype=np.int64)
        yield indices, offsets_for(spec, indices)


def fleet_starts_s(spec: DriveSpec) -> np.ndarray:
    """Agent i's start offset (s): evenly over one heartbeat interval (``spread``: the steady
    state) or over ``start_window_s`` (``fleet_restart``: every agent reconnecting at once)."""
    window = spec.heartbeat_s if spec.fleet_start == "spread" else spec.start_window_s
    return np.arange(spec.agents, dtype=np.float64) * (window / max(spec.agents, 1))


def fleet_events(spec: DriveSpec, shard: int = 0, shards: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One shard's agent-fleet schedule, in time order: ``(offsets_ns, templates)``.

    Agent i (shard ``i mod shards``) starting at s sends its heartbeat (template 2i) at
    s + k * heartbeat_s and its work poll (template 2i+1) at s + k * poll_s, k = 0, 1, ...,
    while the offset is inside the run, as certctl's agent does from its start; in the
    ``spread`` steady state its polls run at (s mod poll_s) + k * poll_s.
    """
    agents = np.arange(shard, spec.agents, shards, dtype=np.int64)
    starts = fleet_starts_s(spec)[agents]
    run = float(spec.duration_s)
    offsets, templates = [], []
    # spread: agents started long ago, so within the run an agent's poll phase is its
    # heartbeat phase modulo poll_s (a run of whole minutes holds exactly 1 heartbeat : 2 polls)
    first = {0: starts, 1: starts % spec.poll_s if spec.fleet_start == "spread" else starts}
    for kind, every in ((0, spec.heartbeat_s), (1, spec.poll_s)):
        ks = np.arange(max(1, math.ceil(run / every)), dtype=np.float64)
        at = first[kind][:, None] + every * ks[None, :]
        keep = at < run
        offsets.append(at[keep])
        templates.append(np.broadcast_to((2 * agents + kind)[:, None], at.shape)[keep])
    offsets_s, template = np.concatenate(offsets), np.concatenate(templates)
    order = np.argsort(offsets_s, kind="stable")
    return np.round(offsets_s[order] * 1e9).astype(np.int64), template[order].astype(np.int64)
