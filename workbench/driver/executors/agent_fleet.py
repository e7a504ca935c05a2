"""``agent-fleet``: certctl's agent loop for every agent, each on its own open-loop schedule.

Agent i starts at its offset s (:func:`workbench.driver.schedule.fleet_starts_s`) and then
sends its heartbeat (template 2i) every ``heartbeat_s`` and its work poll (template 2i+1) every
``poll_s``, both at once at s, as certctl's agent does. Agents belong to shard ``i mod
shards``. With ``connection_per_client`` each agent has its own connection: opened before
the start in the ``spread`` steady state, and at the agent's first request after a
``fleet_restart``, so the herd's handshakes are inside the measured run, as for certctl.

One timer (timerfd) wakes the loop at each intended time; latency is measured from it. A
request due while the same agent's previous request of that kind is still in flight is
dropped and counted (an agent's loop waits for its request, so it would skip that tick):
``scheduled = completed + failed + dropped``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from workbench.capacity.search import AGENTS
from workbench.driver import schedule
from workbench.driver.engine import Engine
from workbench.driver.executors.base import Executor, Progress
from workbench.driver.recorder import Recorder
from workbench.driver.spec import (
    FLEET_STARTS,
    DriveSpec,
    is_int,
    is_positive,
    register_executor,
)
from workbench.driver.timer import precise_timer

CONNECT_BATCH = 256  # connections opened at once before a steady-state start (listen backlogs)


@register_executor
class AgentFleet(Executor):
    """This shard's agents, each with a heartbeat and a work-poll schedule of its own."""

    name = "agent-fleet"
    open_loop = True
    fields = ("agents", "duration_s", "heartbeat_s", "poll_s", "fleet_start", "start_window_s")
    per_request = False  # each agent's requests keep their connection, as certctl's agent's
    capacity_unit = AGENTS  # each agent runs its own loop: the agents are the load

    def __init__(self, spec: DriveSpec, engine: Engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "", progress: Progress | None = None) -> None:
        super().__init__(spec, engine, recorder, shard=shard, shards=shards, token=token,
                         progress=progress)
        offsets, templates = schedule.fleet_events(spec, shard, shards)
        self.vus = len(range(shard, spec.agents, shards))
        self._offsets = offsets.tolist()
        self._templates = templates.tolist()
        self._times: list[int] = []
        self._pos = 0
        # slot 2k + kind: local agent k's heartbeat (0) or poll (1); 1 while it is in flight
        self._busy = bytearray(2 * self.vus)

    @classmethod
    def clients(cls, spec: DriveSpec) -> int:
        return spec.agents

    @classmethod
    def peak_rate(cls, spec: DriveSpec) -> float:
        """Requests/s of the steady state (a restart's herd comes on top of it)."""
        return spec.agents * (1 / spec.heartbeat_s + 1 / spec.poll_s)

    @classmethod
    def planned_arrivals(cls, spec: DriveSpec) -> int:
        return len(schedule.fleet_events(spec)[0])

    @classmethod
    def steady_rate(cls, spec: DriveSpec) -> float:
        return cls.peak_rate(spec)  # one request per arrival, whatever ``steps`` says

    @classmethod
    def settings(cls, params: Mapping, size_param: str | None) -> dict:
        agents = int(params[size_param])
        return {"agents": agents, "max_vus": 2 * agents,  # each agent's two loops
                "heartbeat_s": float(params["heartbeat_s"]), "poll_s": float(params["poll_s"]),
                "fleet_start": params["start"], "start_window_s": float(params["start_window_s"])}

    @classmethod
    def load_of(cls, params: Mapping, steps: int, size_param: str | None) -> float:
        return float(params[size_param])

    @classmethod
    def params_at_load(cls, load: float, steps: int, size_param: str | None) -> dict:
        return {size_param: int(load)}

    @classmethod
    def load_text(cls, params: Mapping, sends: str, duration: str,
                  size_param: str | None) -> str:
        return (f"{params[size_param]:,} agents, one connection each, open loop "
                f"({params['start']}): {sends}, {duration}")

    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        out = []
        if not is_int(spec.agents) or spec.agents < 1:
            out.append(f"agent-fleet needs at least 1 agent (agents), got {spec.agents!r}")
        elif len(spec.templates) != 2 * spec.agents:
            out.append(f"agent-fleet needs 2 request templates per agent (heartbeat, poll): "
                       f"{2 * spec.agents}, got {len(spec.templates)}")
        if not is_positive(spec.duration_s):
            out.append(f"duration must be positive seconds, got {spec.duration_s!r}")
        for name in ("heartbeat_s", "poll_s", "start_window_s"):
            if not is_positive(getattr(spec, name)):
                out.append(f"{name} must be positive seconds, got {getattr(spec, name)!r}")
        if spec.fleet_start not in FLEET_STARTS:
            out.append(f"unknown fleet start {spec.fleet_start!r}; choose "
                       f"{' or '.join(FLEET_STARTS)}")
        return out

    def warm_connections(self) -> int:
        return 1  # shared pool only (per client: each agent connects at its own start)

    def own_connections(self) -> int:
        return self.vus

    async def open_clients(self) -> None:
        """Steady state: every agent is connected before the start. A restart: each agent
        connects at its first request, so the herd's handshakes are inside the run."""
        if self.spec.fleet_start == "spread":
            for first in range(0, len(self.senders), CONNECT_BATCH):
                await asyncio.gather(*(sender.open() for sender in
                                       self.senders[first:first + CONNECT_BATCH]))
        # both of an agent's loops (slots 2k, 2k+1) share its one connection
        self.senders = [sender for sender in self.senders for _ in (0, 1)]

    def planned(self) -> int:
        return len(self._offsets)

    def begin(self) -> None:
        self._times = [self.t0 + o for o in self._offsets]
        self.timer = precise_timer(self.loop, self._on_timer)
        self.timer_kind = self.timer.kind
        if self._times:
            self.timer.arm(self._times[0])
        else:
            self._schedule_over()

    def _on_timer(self) -> None:
        if self.stopping:
            return
        now = self.now()
        times, pos, n = self._times, self._pos, len(self._times)
        while pos < n and times[pos] <= now:
            self._due(self._templates[pos], times[pos])
            pos += 1
        self._pos = pos
        if pos >= n:
            self.timer.close()
            self._schedule_over()
        else:
            self.timer.arm(times[pos])

    def _due(self, template: int, intended: int) -> None:
        agent, kind = divmod(template, 2)
        slot = 2 * ((agent - self.shard) // self.shards) + kind
        self.iterations += 1
        if self._busy[slot]:
            self.iterations_dropped += 1
            self.scheduled += 1
            self.rec.dropped(intended, self.tag_of[template])
            return
        self._busy[slot] = 1
        self.busy += 1
        self._issue(intended, template, 0, slot)

    def _iteration_over(self, slot: int) -> None:
        self._busy[slot] = 0
        self.busy -= 1
