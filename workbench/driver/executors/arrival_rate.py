"""Open loop, shared by ``constant-arrival-rate`` and ``ramping-arrival-rate``.

A precise timer wakes the loop at each intended start (:mod:`workbench.driver.timer`); every
arrival already due is dispatched in one batch with its own intended time. An arrival that
finds all of this shard's VUs busy is *dropped* and recorded as such (k6's
``dropped_iterations``), never silently skipped. The schedule is read in blocks
(:func:`workbench.driver.schedule.blocks`), so a long run never holds it whole.

Dropping costs next to nothing: once every VU is busy the executor stops waking per arrival.
It drops every arrival due so far in one step (the recorder's columns extended at once), then
waits for a VU to come free (or a coarse wake, for the progress line and the schedule's end)
and drops in one step the arrivals that came meanwhile: all of them found every VU busy. One
wake per arrival at 60,000 arrivals/s took most of the driver's core and left the responses
waiting in its loop.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

import numpy as np

from workbench.driver import schedule
from workbench.driver.engine import Engine
from workbench.driver.executors.base import Executor, Progress, local_share
from workbench.driver.recorder import Recorder
from workbench.driver.spec import DriveSpec
from workbench.driver.timer import precise_timer

PARKED_WAKE_NS = 50_000_000  # every VU busy: count the drops this often (progress, the end)


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
        self._parked = False  # every VU busy: waiting for one to come free, not per arrival
        # one tag for every template (most scenarios): a drop's tag needs no lookup
        self._one_tag = self.tag_of[0] if len(set(self.tag_of)) == 1 else None

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
        times, pos, free = self._times, self._pos, self._free
        while True:
            if pos >= len(times):
                if not self._next_block():
                    self._finish()
                    return
                times, pos = self._times, 0
            due = times[pos]
            if due > now:
                break
            if not free:
                self._pos = pos
                self._park(now)
                return
            self.iterations += 1
            self.busy += 1
            self._issue(due, self._indices[pos] * self.steps, 0, free.pop())
            pos += 1
        self._pos = pos
        self.timer.arm(due)

    def _park(self, now: int) -> None:
        """Every VU is busy: drop what is due at once, then wait for a VU (or a coarse wake)."""
        if not self._drop_due(now):
            self._finish()
            return
        self._parked = True
        self.timer.arm(max(self._times[self._pos], now + PARKED_WAKE_NS))

    def _drop_due(self, now: int) -> bool:
        """Drop, in bulk, every arrival intended by ``now``; False when none is left."""
        while True:
            start = self._pos
            end = bisect.bisect_right(self._times, now, start)
            if end > start:
                n = end - start
                self.iterations += n
                self.iterations_dropped += n
                self.scheduled += n * self.steps
                intended = self._times[start:end]
                for j in range(self.steps):
                    tags = [self._one_tag] * n if self._one_tag is not None else [
                        self.tag_of[(i * self.steps + j) % self.n_templates]
                        for i in self._indices[start:end]]
                    self.rec.dropped_many(intended, tags)
            self._pos = end
            if end < len(self._times):
                return True
            if not self._next_block():
                return False

    def _finish(self) -> None:
        self.timer.close()
        self._schedule_over()

    def _iteration_over(self, slot: int) -> None:
        self.busy -= 1
        self._free.append(slot)
        if self._parked and not self.stopping:
            # the arrivals due while every VU was busy are dropped; the next one gets this VU
            self._parked = False
            if self._drop_due(self.now()):
                self.timer.arm(self._times[self._pos])
            else:
                self._finish()
