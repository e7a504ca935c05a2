"""Open loop, shared by ``constant-arrival-rate`` and ``ramping-arrival-rate``.

A precise timer wakes the loop at each intended start (:mod:`workbench.driver.timer`); every
arrival already due is dispatched in one batch with its own intended time. An arrival that
finds all of this shard's VUs busy is *dropped* and recorded as such (k6's
``dropped_iterations``), never silently skipped. The schedule is read in blocks
(:func:`workbench.driver.schedule.blocks`), so a long run never holds it whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from workbench.driver import schedule
from workbench.driver.engine import Engine
from workbench.driver.executors.base import Executor, Progress, local_share
from workbench.driver.recorder import Recorder
from workbench.driver.spec import DriveSpec
from workbench.driver.timer import precise_timer


class ArrivalRateExecutor(Executor):
    """Arrivals at the schedule's intended times, at most ``max_vus`` iterations in flight."""

    open_loop = True

    def __init__(self, spec: DriveSpec, engine: Engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "", progress: Progress | None = None) -> None:
        super().__init__(spec, engine, recorder, shard=shard, shards=shards, token=token,
                         progress=progress)
        self.max_busy = self.vus = max(1, local_share(spec.max_vus, shard, shards))
        self._blocks: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        self._times: list[int] = []  # intended perf_counter ns of the current block
        self._indices: list[int] = []  # their global arrival numbers
        self._pos = 0
        self._free = list(range(self.max_busy))  # VU slots not busy (per client: connections)

    def warm_connections(self) -> int:
        """``pre_allocated_vus`` (or a few, from the peak rate), this shard's share of them."""
        spec = self.spec
        want = spec.pre_allocated_vus or max(2, math.ceil(spec.peak_rate / 100))
        return max(1, min(self.max_busy, math.ceil(want / self.shards)))

    def planned(self) -> int:
        return schedule.shard_arrivals(schedule.planned_arrivals(self.spec), self.shard,
                                       self.shards) * self.steps

    def begin(self) -> None:
        self._blocks = schedule.blocks(self.spec, self.shard, self.shards)
        self.timer = precise_timer(self.loop, self._on_timer)
        self.timer_kind = self.timer.kind
        if self._next_block():
            self.timer.arm(self._times[0])
        else:
            self._schedule_over()

    def _next_block(self) -> bool:
        block = next(self._blocks, None)
        if block is None:
            return False
        indices, offsets = block
        self._indices = indices.tolist()
        self._times = (offsets + self.t0).tolist()
        self._pos = 0
        return True

    def _on_timer(self) -> None:
        if self.stopping:
            return
        now = self.now()
        times, pos = self._times, self._pos
        while True:
            if pos >= len(times):
                if not self._next_block():
                    self.timer.close()
                    self._schedule_over()
                    return
                times, pos = self._times, 0
            due = times[pos]
            if due > now:
                break
            self._arrive(self._indices[pos], due)
            pos += 1
        self._pos = pos
        self.timer.arm(due)

    def _arrive(self, index: int, intended: int) -> None:
        self.iterations += 1
        base = index * self.steps
        if not self._free:
            self.iterations_dropped += 1
            self.scheduled += self.steps
            for j in range(self.steps):
                self.rec.dropped(intended, self.tag_of[(base + j) % self.n_templates])
            return
        self.busy += 1
        self._issue(intended, base, 0, self._free.pop())

    def _iteration_over(self, slot: int) -> None:
        self.busy -= 1
        self._free.append(slot)
