"""The executors: one shard's open-loop schedule or closed-loop virtual users, on one loop.

Open loop (``constant-arrival-rate``, ``ramping-arrival-rate``): a precise timer wakes the loop
at each intended start (``timer``); every arrival already due is dispatched in one batch with
its own intended time. An arrival that finds all of this shard's VUs busy is *dropped* and
recorded as such. Closed loop (``constant-vus``): each VU starts its next iteration when the
previous one (and its think time) ends; intended start = the moment it was ready.

Within an iteration, step j+1 is intended to start when step j ended. Requests are counted:
``scheduled`` = requests issued + requests dropped = completed + failed + dropped.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial

import psutil

from workbench import hdr
from workbench.driver import schedule
from workbench.driver.outcomes import DROPPED, OK, classify_status
from workbench.driver.recorder import Recorder
from workbench.driver.spec import DriveSpec
from workbench.driver.timer import precise_timer

PROGRESS_EVERY_S = 2.0
MONITOR_EVERY_S = 1.0
STOP_GRACE_S = 1.0  # after SIGINT/SIGTERM, in-flight requests get this long, then are cancelled
USER_AGENT = "certctl-workbench-driver"


def local_share(total: int, shard: int, shards: int) -> int:
    """This shard's part of ``total`` VUs (an exact split: the parts add up to ``total``)."""
    return total // shards + (1 if shard < total % shards else 0)


def warm_connections(spec: DriveSpec, shard: int, shards: int) -> int:
    """Connections to open before the start: the shard's VUs (closed loop) or a rate estimate."""
    if not spec.open_loop:
        return local_share(spec.vus, shard, shards)
    want = spec.pre_allocated_vus or max(2, math.ceil(spec.peak_rate / 100))
    return max(1, min(local_share(spec.max_vus, shard, shards), math.ceil(want / shards)))


class ShardRun:
    """One shard of one run: ``await run(...)`` drives it, :meth:`report` describes it."""

    def __init__(self, spec: DriveSpec, engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "",
                 progress: Callable[[dict], None] | None = None) -> None:
        self.spec, self.engine, self.rec = spec, engine, recorder
        self.shard, self.shards = shard, shards
        self.progress = progress
        self.tags = recorder.tags
        templates = spec.templates
        self.n_templates = len(templates)
        self.tag_of = [self.tags.index(t.tag) for t in templates]
        self.expect = [t.expect for t in templates]
        self.fields = [t.sum_fields for t in templates]
        self.prepared = [engine.prepare(t.method, t.path, _headers(t, token),
                                        t.body.encode() if t.body is not None else None,
                                        want_body=bool(t.sum_fields)) for t in templates]
        self.steps = spec.steps
        self.max_busy = max(1, local_share(spec.max_vus, shard, shards))
        self.busy = 0  # iterations in progress (including their think time)
        self.in_flight = 0  # requests in progress
        self.scheduled = 0
        self.iterations = 0
        self.iterations_dropped = 0
        self.stopping = False
        self.status = "completed"
        self.now = time.perf_counter_ns
        self.t0 = self.end_ns = 0
        self.t0_epoch_ns: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.anchor_epoch_ns = self.anchor_mono_ns = 0
        self.stopped_at_ns: int | None = None
        self.cpu_peak = 0.0
        self._window = [0.0, 0.0, 0.0, 0.0]  # CPU and wall seconds at the start and the end
        self.rss_start = self.rss_peak = 0
        self.timer_kind = "none"
        self._sleep_s = spec.sleep_s
        self._local_iteration = 0

    # -- the run --------------------------------------------------------------------------
    async def run(self, start: Callable[[], Awaitable[int | None]] | None = None) -> None:
        """Warm up, wait for the start instant (UTC epoch ns from ``start``), drive, drain."""
        loop = self.loop = asyncio.get_running_loop()
        self.schedule_done = loop.create_future()
        self.drained = loop.create_future()
        await self.engine.start(warm_connections(self.spec, self.shard, self.shards))
        self.rec.warm_up()
        start_epoch = await start() if start else None
        # Move everything allocated so far (modules, numpy, pyarrow) out of the collector's
        # reach and collect young objects rarely: a full collection over that heap pauses the
        # loop for tens of ms, which would show up as schedule lag. The hot path makes no
        # reference cycles; the rare ones (exceptions) are still collected.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        self.anchor_epoch_ns, self.anchor_mono_ns = _anchor()
        self.rec.epoch_offset_ns = self.anchor_epoch_ns - self.anchor_mono_ns
        if start_epoch is None:
            start_epoch = self.anchor_epoch_ns + 20_000_000  # a little ahead: no late first
        self.t0 = self.anchor_mono_ns + (start_epoch - self.anchor_epoch_ns)
        self.t0_epoch_ns = start_epoch
        self.end_ns = self.t0 + round(self.spec.run_s * 1e9)
        proc = psutil.Process()
        self.rss_start = self.rss_peak = proc.memory_info().rss
        self._cpu_last, self._wall_last = time.process_time(), time.perf_counter()
        self._window = [self._cpu_last, self._wall_last, self._cpu_last, self._wall_last]
        self._monitor_handle = loop.call_later(MONITOR_EVERY_S, self._monitor, proc)
        self._tick = 1
        self._progress_handle = loop.call_later(
            max(0.0, (self.t0 - self.now()) / 1e9) + PROGRESS_EVERY_S, self._report_progress)
        if self.stopping:
            pass  # stopped while waiting for the start: nothing to schedule
        elif self.spec.open_loop:
            self._start_open(loop)
        else:
            self._start_closed(loop)
        await self.schedule_done
        if self._idle() and not self.drained.done():
            self.drained.set_result(None)
        if self.stopping:
            try:
                await asyncio.wait_for(asyncio.shield(self.drained), STOP_GRACE_S)
            except TimeoutError:
                pass
        else:
            await self.drained  # each request ends by its timeout at the latest
        self._window[2:] = time.process_time(), time.perf_counter()
        self._monitor_handle.cancel()
        self._progress_handle.cancel()
        await self.engine.close()  # records anything still in flight as cancelled
        # sampled, not ru_maxrss: that would count warm-up transients from before the start
        self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
        gc.set_threshold(*thresholds)  # a Dask worker process outlives its shard
        gc.unfreeze()

    def _idle(self) -> bool:
        """Nothing left to wait for once the schedule is done (scripted VUs add their tasks)."""
        return self.in_flight == 0

    def stop(self, status: str = "interrupted") -> None:
        """Stop scheduling now (SIGINT/SIGTERM); in-flight requests get a short grace."""
        if self.stopping:
            return
        self.stopping = True
        self.status = status
        self.stopped_at_ns = self.now()
        timer = getattr(self, "timer", None)
        if timer is not None:
            timer.close()
        done = getattr(self, "schedule_done", None)
        if done is not None and not done.done():
            done.set_result(None)

    # -- open loop ------------------------------------------------------------------------
    def _start_open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._blocks = schedule.blocks(self.spec, self.shard, self.shards)
        self._times: list[int] = []
        self._indices: list[int] = []
        self._pos = 0
        self.timer = precise_timer(loop, self._on_timer)
        self.timer_kind = self.timer.kind
        if self._next_block():
            self.timer.arm(self._times[0])
        else:
            self.schedule_done.set_result(None)

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
                    if not self.schedule_done.done():
                        self.schedule_done.set_result(None)
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
        if self.busy >= self.max_busy:
            self.iterations_dropped += 1
            self.scheduled += self.steps
            for j in range(self.steps):
                self.rec.dropped(intended, self.tag_of[(base + j) % self.n_templates])
            return
        self.busy += 1
        self._issue(intended, base, 0)

    # -- closed loop ----------------------------------------------------------------------
    def _start_closed(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer_kind = "none"
        vus = local_share(self.spec.vus, self.shard, self.shards)
        self.busy = vus
        delay = max(0.0, (self.t0 - self.now()) / 1e9)
        loop.call_later(delay, self._start_vus, vus)
        loop.call_later(delay + self.spec.run_s, self._closed_over)

    def _start_vus(self, vus: int) -> None:
        for _ in range(vus):
            self._iterate()

    def _closed_over(self) -> None:
        if not self.schedule_done.done():
            self.schedule_done.set_result(None)

    def _iterate(self) -> None:
        now = self.now()
        if self.stopping or now >= self.end_ns:
            self.busy -= 1  # this VU retires
            return
        index = self.shard + self.shards * self._local_iteration  # global iteration number
        self._local_iteration += 1
        self.iterations += 1
        self._issue(now, index * self.steps, 0)

    # -- one request ----------------------------------------------------------------------
    def _issue(self, intended: int, base: int, step: int) -> None:
        t = (base + step) % self.n_templates
        self.scheduled += 1
        self.in_flight += 1
        send = self.now()
        self.engine.send(self.prepared[t], partial(self._done, intended, send, base, step, t))

    def _done(self, intended: int, send: int, base: int, step: int, t: int, status: int,
              content_type: bytes | None, nbytes: int, body: bytes | None, error: int,
              head: bytes | None = None) -> None:
        end = self.now()
        self.in_flight -= 1
        tag = self.tag_of[t]
        if error == OK:
            error = classify_status(status, self.expect[t])
        self.rec.record(intended, send, end, status, nbytes, error, tag)
        if status:
            self.rec.kind(tag, status, content_type)
            if body is not None and self.fields[t]:
                self.rec.add_totals(tag, body, self.fields[t])
        step += 1
        if step < self.steps and not self.stopping:
            self._issue(end, base, step)  # the next step was ready when this one ended
            return
        if self._sleep_s and not self.stopping:
            self.loop.call_later(self._sleep_s, self._iteration_over)
        else:
            self._iteration_over()
        if self.in_flight == 0 and self.schedule_done.done() and not self.drained.done():
            self.drained.set_result(None)

    def _iteration_over(self) -> None:
        if self.spec.open_loop:
            self.busy -= 1
        else:
            self._iterate()

    # -- monitoring -----------------------------------------------------------------------
    def _monitor(self, proc: psutil.Process) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        if wall > self._wall_last:
            self.cpu_peak = max(self.cpu_peak, (cpu - self._cpu_last) / (wall - self._wall_last))
        self._cpu_last, self._wall_last = cpu, wall
        self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
        self._monitor_handle = self.loop.call_later(MONITOR_EVERY_S, self._monitor, proc)

    def _report_progress(self) -> None:
        self._progress_handle = self.loop.call_later(PROGRESS_EVERY_S, self._report_progress)
        if self.progress is None:
            return
        self.rec.fold()
        counts = self.rec.counts
        dropped = int(counts[:, DROPPED].sum())
        sent = int(counts.sum()) - dropped
        self.progress({
            "shard": self.shard, "tick": self._tick,
            "elapsed_s": round((self.now() - self.t0) / 1e9, 3),
            "sent": sent, "errors": sent - int(counts[:, OK].sum()), "dropped": dropped,
            "response_hist": hdr.encode(self.rec.response_all),
        })
        self._tick += 1

    # -- the shard's report ---------------------------------------------------------------
    def active_s(self) -> float:
        """Seconds of the schedule that ran: all of it, or up to the stop."""
        if self.stopped_at_ns is None:
            return self.spec.run_s
        return min(self.spec.run_s, max(0.0, (self.stopped_at_ns - self.t0) / 1e9))

    def cpu_fraction(self) -> float:
        """CPU seconds per wall second from the start to the last response (no set-up)."""
        cpu0, wall0, cpu1, wall1 = self._window
        return round((cpu1 - cpu0) / (wall1 - wall0), 4) if wall1 > wall0 else 0.0

    def report(self, wall_s: float, cpu_s: float, status: str | None = None) -> dict:
        """Everything the merge needs: counters, encoded histograms, kinds, totals, health."""
        rec = self.rec
        counts = rec.counts
        dropped = int(counts[:, DROPPED].sum())
        completed = int(counts[:, OK].sum())
        failed = int(counts.sum()) - completed - dropped
        fields = {}
        for t in self.spec.templates:
            fields.setdefault(t.tag, ())
            fields[t.tag] += tuple(f for f in t.sum_fields if f not in fields[t.tag])
        planned = (schedule.shard_arrivals(schedule.planned_arrivals(self.spec), self.shard,
                                           self.shards) * self.steps
                   if self.spec.open_loop else None)
        return {
            "shard": self.shard, "shards": self.shards,
            "status": status or self.status,
            "scheduled": self.scheduled, "planned": planned,
            "completed": completed, "failed": failed, "dropped": dropped,
            "recorded": rec.rows,
            "iterations": {"scheduled": self.iterations, "dropped": self.iterations_dropped},
            "counts": rec.error_counts(),
            "histograms": rec.histograms(),
            "timing_histograms": {"response": hdr.encode(rec.response_all),
                                  "service_time": hdr.encode(rec.service),
                                  "schedule_lag": hdr.encode(rec.lag)},
            "response_kinds": rec.response_kinds(),
            "response_totals": rec.response_totals(fields),
            "t0_epoch_ns": self.t0_epoch_ns,
            "anchor": {"epoch_ns": self.anchor_epoch_ns, "mono_ns": self.anchor_mono_ns},
            "active_s": self.active_s() if self.t0 else 0.0,
            "wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3),
            "cpu_fraction": self.cpu_fraction(),
            "cpu_peak_fraction": round(self.cpu_peak, 4),
            "rss_start_bytes": self.rss_start, "rss_peak_bytes": self.rss_peak,
            "vus": (self.max_busy if self.spec.open_loop
                    else local_share(self.spec.vus, self.shard, self.shards)),
            "timer": self.timer_kind,
            "engine": getattr(self.engine, "name", type(self.engine).__name__),
            "loop": type(self.loop).__module__.split(".")[0] if self.loop else None,
            "pid": os.getpid(),
        }


def _headers(t, token: str) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if t.body is not None:
        headers["Content-Type"] = "application/json"
    headers.update(t.headers)
    return headers


def _anchor() -> tuple[int, int]:
    """A (UTC epoch ns, perf_counter ns) pair read as close together as possible."""
    best = None
    for _ in range(5):
        m0 = time.perf_counter_ns()
        e = time.time_ns()
        m1 = time.perf_counter_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, e, (m0 + m1) // 2)
    return best[1], best[2]

