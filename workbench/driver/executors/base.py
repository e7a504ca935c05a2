"""The lifecycle every executor shares, and the fixed-step iterations of the template executors.

One shard of one run, on one event loop, goes through the same stages whatever its executor:

1. warm-up: the engine opens connections, the recorder runs its fold and write paths once;
2. ``set_up``: the executor's own preparation (scripted VUs register accounts);
3. the start instant: wait for the common UTC start (every shard starts together);
4. gc freeze: the heap built so far leaves the collector's reach (no pause in the run);
5. anchor: one (UTC epoch, monotonic) pair, so recorded times become epoch nanoseconds;
6. ``begin``: the executor starts its schedule (timer-paced arrivals or VUs), while a monitor
   samples CPU and memory and a progress tick reports counts and a histogram;
7. drain: once the schedule is over, in-flight requests end (by their timeout at the latest;
   after a stop, within a short grace, then they are cancelled);
8. report: counters, encoded histograms and the shard's health, for the merge.

Template executors send ``steps`` consecutive requests per iteration: iteration k's step j is
``templates[(k*steps + j) % len(templates)]``, and step j+1 is intended to start when step j
ended. Requests are counted: ``scheduled`` = requests issued + requests dropped =
completed + failed + dropped.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import ClassVar

import numpy as np
import psutil

from workbench.analyse import hdr
from workbench.driver.engine import Engine
from workbench.driver.outcomes import DROPPED, OK, classify_status
from workbench.driver.recorder import NO_PHASES, Recorder
from workbench.driver.result import ShardReport
from workbench.driver.spec import DriveSpec, RequestTemplate
from workbench.driver.timer import SpinTimer, TimerfdTimer
from workbench.errors import WorkbenchError

PROGRESS_EVERY_S = 2.0
MONITOR_EVERY_S = 1.0
STOP_GRACE_S = 1.0  # after SIGINT/SIGTERM, in-flight requests get this long, then are cancelled
USER_AGENT = "certctl-workbench-driver"

Progress = Callable[[dict], None]
StartInstant = Callable[[], Awaitable[int | None]]


def local_share(total: int, shard: int, shards: int) -> int:
    """This shard's part of ``total`` VUs (an exact split: the parts add up to ``total``)."""
    return total // shards + (1 if shard < total % shards else 0)


def request_headers(t: RequestTemplate, token: str) -> dict[str, str]:
    """The headers of every request made from template ``t`` (the token only in memory)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if t.body is not None:
        headers["Content-Type"] = "application/json"
    headers.update(t.headers)
    return headers


class Executor:
    """One shard of one run: ``await run(start)`` drives it, :meth:`report` describes it.

    A subclass names itself (``name``, registered with
    :func:`~workbench.driver.spec.register_executor`), declares its own spec fields
    (``fields``; the rest are :data:`~workbench.driver.spec.SHARED_FIELDS`) and checks them
    (``validate``), states its facts about a spec (the classmethods below: how long it runs,
    its rates, its clients, what a capacity search raises, how a scenario's parameters become
    its fields), says how many connections to warm and how many VUs it has, and starts its
    schedule in :meth:`begin`. Everything a run holds is created here, before the run.
    """

    name: ClassVar[str]
    open_loop: ClassVar[bool]
    fields: ClassVar[tuple[str, ...]]  # its own DriveSpec fields (k6's executor config)
    by_script: ClassVar[bool] = False  # chosen by a spec's ``script``, not by its ``executor``
    per_request: ClassVar[bool] = True  # may open a new connection per request
    capacity_unit: ClassVar[str | None] = None  # what a capacity search raises (None: none)

    def __init__(self, spec: DriveSpec, engine: Engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "", progress: Progress | None = None) -> None:
        self.spec, self.engine, self.rec = spec, engine, recorder
        self.shard, self.shards = shard, shards
        self.progress = progress
        self.tags = recorder.tags
        templates = spec.templates
        self.n_templates = len(templates)
        self.tag_of = [self.tags.index(t.tag) for t in templates]
        self.expect = [t.expect for t in templates]
        self.fields = [t.sum_fields for t in templates]
        self.prepared = [engine.prepare(t.method, t.path, request_headers(t, token),
                                        t.body.encode() if t.body is not None else None,
                                        want_body=bool(t.sum_fields)) for t in templates]
        self.steps = spec.steps
        self.vus = 0  # VUs of this shard (open loop: its share of max_vus)
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
        self.schedule_done: asyncio.Future | None = None  # set when no more work is scheduled
        self.drained: asyncio.Future | None = None  # set when nothing is in flight after that
        self.timer: TimerfdTimer | SpinTimer | None = None
        self.timer_kind = "none"
        self.anchor_epoch_ns = self.anchor_mono_ns = 0
        self.stopped_at_ns: int | None = None
        self.cpu_peak = 0.0
        self._cpu_last = self._wall_last = 0.0
        self._window = [0.0, 0.0, 0.0, 0.0]  # CPU and wall seconds at the start and the end
        self.rss_start = self.rss_peak = 0
        self._monitor_handle: asyncio.TimerHandle | None = None
        self._progress_handle: asyncio.TimerHandle | None = None
        self._tick = 1
        self._gc_thresholds: tuple[int, ...] | None = None
        self._sleep_s = spec.sleep_s
        self.per_client = spec.connection_per_client
        self.senders: list = []  # per client: VU (slot) k sends on senders[k], its own connection
        self.client_count = 0

    # -- what it knows of a spec (k6's executor config) ----------------------------------------
    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        """Every problem of ``spec`` this executor cares about (none by default)."""
        return []

    @classmethod
    def run_s(cls, spec: DriveSpec) -> float:
        """How long arrivals (or iterations) are started, in seconds."""
        return float(spec.duration_s)

    @classmethod
    def peak_rate(cls, spec: DriveSpec) -> float:
        """The highest arrival rate (iterations/s) of the schedule; 0 for a closed loop."""
        return 0.0

    @classmethod
    def concurrency(cls, spec: DriveSpec) -> int:
        """Most iterations in flight at once: max VUs (open loop) or VUs (closed loop)."""
        return spec.max_vus

    @classmethod
    def clients(cls, spec: DriveSpec) -> int:
        """Clients of the run, each with its connection when per client."""
        return cls.concurrency(spec)

    @classmethod
    def planned_arrivals(cls, spec: DriveSpec) -> int:
        """Arrivals (iterations) an open-loop spec schedules in total, over all shards."""
        raise WorkbenchError(f"{cls.name} schedules no arrivals: it is a closed loop")

    @classmethod
    def offsets_ns(cls, spec: DriveSpec, indices: np.ndarray) -> np.ndarray:
        """Intended offsets (ns from the start) of the global arrival ``indices``."""
        raise WorkbenchError(f"{cls.name} schedules no arrivals by index")

    @classmethod
    def offered_rate(cls, spec: DriveSpec) -> float | None:
        """Requests per second the schedule offers (mean over a ramp); None for closed loop."""
        if not cls.open_loop:
            return None
        return cls.planned_arrivals(spec) * spec.steps / cls.run_s(spec)

    @classmethod
    def steady_rate(cls, spec: DriveSpec) -> float:
        """Requests per second at the schedule's busiest (what sizes the driver processes)."""
        return cls.peak_rate(spec) * spec.steps

    # -- a scenario's parameters and a capacity search's load ---------------------------------
    @classmethod
    def settings(cls, params: Mapping, size_param: str | None) -> dict:
        """This executor's DriveSpec fields from a scenario's parameters (``size_param``: the
        one sizing the scenario's fixture)."""
        raise WorkbenchError(f"{cls.name} takes no scenario parameters; drive it with a spec")

    @classmethod
    def load_of(cls, params: Mapping, steps: int, size_param: str | None) -> float:
        """The load a scenario's parameters drive, in :attr:`capacity_unit`."""
        raise WorkbenchError(f"a capacity search cannot raise the load of {cls.name}")

    @classmethod
    def params_at_load(cls, load: float, steps: int, size_param: str | None) -> dict:
        """The scenario parameters that drive ``load`` (:attr:`capacity_unit`)."""
        raise WorkbenchError(f"a capacity search cannot raise the load of {cls.name}")

    @classmethod
    def spec_at_load(cls, spec: DriveSpec, load: float) -> dict:
        """The DriveSpec fields that make ``spec`` drive ``load`` (:attr:`capacity_unit`)."""
        raise WorkbenchError(f"a capacity search cannot raise the load of a {cls.name} spec")

    @classmethod
    def load_text(cls, params: Mapping, sends: str, duration: str,
                  size_param: str | None) -> str:
        """A scenario's load in a few words, for README's table."""
        raise WorkbenchError(f"{cls.name} takes no scenario parameters")

    # -- what a subclass says of its run ------------------------------------------------------

    def warm_connections(self) -> int:
        """Connections to open before the start."""
        raise NotImplementedError

    def planned(self) -> int | None:
        """Requests this shard's schedule plans (open loop), or None (closed loop)."""
        return None

    async def set_up(self) -> None:
        """Work before the start instant, after the warm-up (nothing by default)."""

    def begin(self) -> None:
        """Start the schedule at ``self.t0``; set ``schedule_done`` when it is over."""
        raise NotImplementedError

    def own_connections(self) -> int:
        """Clients with a connection of their own (per client): one per VU."""
        return self.vus

    async def open_clients(self) -> None:
        """Per client: one sender each, all connected before the start (the fleet: later)."""
        await asyncio.gather(*(sender.open() for sender in self.senders))

    def idle(self) -> bool:
        """Nothing left to wait for once the schedule is done."""
        return self.in_flight == 0

    async def tear_down(self) -> None:
        """Clean up after the run, however it ended (nothing by default)."""

    # -- the run ------------------------------------------------------------------------------
    async def run(self, start: StartInstant | None = None) -> None:
        """Warm up, wait for the start instant (UTC epoch ns from ``start``), drive, drain."""
        loop = self.loop = asyncio.get_running_loop()
        self.schedule_done = loop.create_future()
        self.drained = loop.create_future()
        try:
            await self.engine.start(0 if self.per_client else self.warm_connections())
            if self.per_client:
                self.senders = [self.engine.client() for _ in range(self.own_connections())]
                self.client_count = len(self.senders)
                await self.open_clients()
            self.rec.warm_up()
            await self.set_up()
            start_epoch = await start() if start else None
            self._freeze_gc()
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
            self._progress_handle = loop.call_later(
                max(0.0, (self.t0 - self.now()) / 1e9) + PROGRESS_EVERY_S,
                self._report_progress)
            if not self.stopping:  # stopped while waiting for the start: nothing to schedule
                self.begin()
            await self.schedule_done
            if self.idle() and not self.drained.done():
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
        finally:
            self._thaw_gc()
            await self.tear_down()

    def _freeze_gc(self) -> None:
        # Move everything allocated so far (modules, numpy, pyarrow) out of the collector's
        # reach and collect young objects rarely: a full collection over that heap pauses the
        # loop for tens of ms, which would show up as schedule lag. The hot path makes no
        # reference cycles; the rare ones (exceptions) are still collected.
        gc.collect()
        gc.freeze()
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)

    def _thaw_gc(self) -> None:
        if self._gc_thresholds is not None:  # a Dask worker process outlives its shard
            gc.set_threshold(*self._gc_thresholds)
            gc.unfreeze()
            self._gc_thresholds = None

    def stop(self, status: str = "interrupted") -> None:
        """Stop scheduling now (SIGINT/SIGTERM); in-flight requests get a short grace."""
        if self.stopping:
            return
        self.stopping = True
        self.status = status
        self.stopped_at_ns = self.now()
        if self.timer is not None:
            self.timer.close()
        self._schedule_over()

    def _schedule_over(self) -> None:
        if self.schedule_done is not None and not self.schedule_done.done():
            self.schedule_done.set_result(None)

    # -- one request of a template iteration --------------------------------------------------
    def _issue(self, intended: int, base: int, step: int, slot: int = 0) -> None:
        t = (base + step) % self.n_templates
        self.scheduled += 1
        self.in_flight += 1
        send = self.now()
        sender = self.senders[slot] if self.senders else self.engine
        sender.send(self.prepared[t], partial(self._done, intended, send, base, step, t, slot))

    def _done(self, intended: int, send: int, base: int, step: int, t: int, slot: int,
              status: int,
              content_type: bytes | None, nbytes: int, body: bytes | None, error: int,
              head: bytes | None, phases: tuple[int, int, int] | None = None) -> None:
        end = self.now()
        self.in_flight -= 1
        tag = self.tag_of[t]
        if error == OK:
            error = classify_status(status, self.expect[t])
        if self.rec.phased:  # one phase row per sent request, whatever the engine reported
            self.rec.phase(*(phases or NO_PHASES))
        self.rec.record(intended, send, end, status, nbytes, error, tag)
        if status:
            self.rec.kind(tag, status, content_type)
            if body is not None and self.fields[t]:
                self.rec.add_totals(tag, body, self.fields[t])
        step += 1
        if step < self.steps and not self.stopping:
            self._issue(end, base, step, slot)  # the next step was ready when this one ended
            return
        if self._sleep_s and not self.stopping:
            self.loop.call_later(self._sleep_s, self._iteration_over, slot)
        else:
            self._iteration_over(slot)
        if self.in_flight == 0 and self.schedule_done.done() and not self.drained.done():
            self.drained.set_result(None)

    def _iteration_over(self, slot: int) -> None:
        """An iteration (and its think time) ended: free VU ``slot``, or start its next one."""
        raise NotImplementedError

    # -- monitoring ---------------------------------------------------------------------------
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

    # -- the shard's report -------------------------------------------------------------------
    def active_s(self) -> float:
        """Seconds of the schedule that ran: all of it, or up to the stop."""
        if self.stopped_at_ns is None:
            return self.spec.run_s
        return min(self.spec.run_s, max(0.0, (self.stopped_at_ns - self.t0) / 1e9))

    def cpu_fraction(self) -> float:
        """CPU seconds per wall second from the start to the last response (no set-up)."""
        cpu0, wall0, cpu1, wall1 = self._window
        return round((cpu1 - cpu0) / (wall1 - wall0), 4) if wall1 > wall0 else 0.0

    def report(self, wall_s: float, cpu_s: float, status: str | None = None) -> ShardReport:
        """Everything the merge needs: counters, encoded histograms, kinds, totals, health."""
        rec = self.rec
        counts = rec.counts
        dropped = int(counts[:, DROPPED].sum())
        completed = int(counts[:, OK].sum())
        failed = int(counts.sum()) - completed - dropped
        fields: dict[str, tuple[str, ...]] = {}
        for t in self.spec.templates:
            fields.setdefault(t.tag, ())
            fields[t.tag] += tuple(f for f in t.sum_fields if f not in fields[t.tag])
        return {
            "shard": self.shard, "shards": self.shards,
            "status": status or self.status,
            "scheduled": self.scheduled, "planned": self.planned(),
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
            "vus": self.vus,
            "connections": self.connection_stats(),
            "timer": self.timer_kind,
            "engine": self.engine.name,
            "loop": type(self.loop).__module__.split(".")[0] if self.loop else None,
            "pid": os.getpid(),
        }


    def connection_stats(self) -> dict:
        """Connections the engine opened (and failed to), and their handshake times."""
        hist = getattr(self.engine, "handshakes", None)  # a test's fake engine has none
        if hist is None:
            hist = hdr.new()
        return {"per_client": self.per_client, "clients": self.client_count,
                "opened": getattr(self.engine, "opened", 0),
                "open_failed": getattr(self.engine, "open_failed", 0),
                "handshake_hist": hdr.encode(hist)}


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
