"""``constant-vus``: ``vus`` virtual users repeat iterations for ``duration_s`` (closed loop).

Each VU starts its next iteration when the previous one (and its think time) ends; the
intended start of an iteration is the moment its VU was ready, so a closed loop offers no
rate and drops nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from workbench.capacity.search import VUS
from workbench.driver.engine import Engine
from workbench.driver.executors.base import Executor, Progress, local_share
from workbench.driver.recorder import Recorder
from workbench.driver.spec import DriveSpec, is_int, is_positive, register_executor


@register_executor
class ConstantVUs(Executor):
    """This shard's share of ``vus`` VUs, each iterating until the duration is over."""

    name = "constant-vus"
    open_loop = False
    fields = ("vus", "duration_s")
    capacity_unit = VUS

    def __init__(self, spec: DriveSpec, engine: Engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "", progress: Progress | None = None) -> None:
        super().__init__(spec, engine, recorder, shard=shard, shards=shards, token=token,
                         progress=progress)
        self.vus = local_share(spec.vus, shard, shards)
        self._local_iteration = 0

    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        out = []
        if not is_positive(spec.duration_s):
            out.append(f"duration must be positive seconds, got {spec.duration_s!r}")
        if not is_int(spec.vus) or spec.vus < 1:
            out.append(f"constant-vus needs at least 1 VU (vus), got {spec.vus!r}")
        return out

    @classmethod
    def concurrency(cls, spec: DriveSpec) -> int:
        return spec.vus

    @classmethod
    def settings(cls, params: Mapping, size_param: str | None) -> dict:
        vus = int(params["vus"])
        return {"vus": vus, "max_vus": vus, "sleep_s": float(params["sleep_s"])}

    @classmethod
    def load_of(cls, params: Mapping, steps: int, size_param: str | None) -> float:
        return float(params["vus"])

    @classmethod
    def params_at_load(cls, load: float, steps: int, size_param: str | None) -> dict:
        return {"vus": int(load)}

    @classmethod
    def spec_at_load(cls, spec: DriveSpec, load: float) -> dict:
        return {"vus": int(load), "max_vus": int(load)}

    @classmethod
    def load_text(cls, params: Mapping, sends: str, duration: str,
                  size_param: str | None) -> str:
        think = f", {params['sleep_s']:g} s think time" if params.get("sleep_s") else ""
        return f"{params['vus']} VUs: {sends}{think}, {duration}"

    def warm_connections(self) -> int:
        """One connection per VU."""
        return self.vus

    def begin(self) -> None:
        self.busy = self.vus
        delay = max(0.0, (self.t0 - self.now()) / 1e9)
        self.loop.call_later(delay, self._start_vus)
        self.loop.call_later(delay + self.spec.run_s, self._schedule_over)

    def _start_vus(self) -> None:
        for slot in range(self.vus):
            self._iterate(slot)

    def _iterate(self, slot: int) -> None:
        now = self.now()
        if self.stopping or now >= self.end_ns:
            self.busy -= 1  # this VU retires
            return
        index = self.shard + self.shards * self._local_iteration  # global iteration number
        self._local_iteration += 1
        self.iterations += 1
        self._issue(now, index * self.steps, 0, slot)

    def _iteration_over(self, slot: int) -> None:
        self._iterate(slot)
