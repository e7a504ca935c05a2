"""``constant-arrival-rate``: ``rate`` iterations per second for ``duration_s`` (open loop)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from workbench.capacity.search import RATE
from workbench.driver.executors.arrival_rate import ArrivalRateExecutor
from workbench.driver.spec import DriveSpec, is_positive, register_executor


@register_executor
class ConstantArrivalRate(ArrivalRateExecutor):
    """Arrival i intended at ``i / rate`` seconds after the start."""

    name = "constant-arrival-rate"
    fields = ("rate", "duration_s")
    capacity_unit = RATE  # requests/s: iterations/s times the requests of an iteration

    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        out = []
        if not is_positive(spec.rate):
            out.append(f"rate must be a positive number of requests/s, got {spec.rate!r}")
        if not is_positive(spec.duration_s):
            out.append(f"duration must be positive seconds, got {spec.duration_s!r}")
        elif not out and cls.planned_arrivals(spec) < 1:
            out.append(f"{spec.rate:g} requests/s for {spec.duration_s:g} s schedules no "
                       "request; raise the rate or the duration")
        return out

    @classmethod
    def peak_rate(cls, spec: DriveSpec) -> float:
        return spec.rate

    @classmethod
    def planned_arrivals(cls, spec: DriveSpec) -> int:
        return math.ceil(spec.rate * spec.duration_s - 1e-9)

    @classmethod
    def offsets_ns(cls, spec: DriveSpec, indices: np.ndarray) -> np.ndarray:
        return np.round(indices.astype(np.float64) * (1e9 / spec.rate)).astype(np.int64)

    @classmethod
    def offered_rate(cls, spec: DriveSpec) -> float:
        return spec.rate * spec.steps

    @classmethod
    def settings(cls, params: Mapping, size_param: str | None) -> dict:
        return {"rate": float(params["rate"]), "max_vus": int(params["max_vus"])}

    @classmethod
    def load_of(cls, params: Mapping, steps: int, size_param: str | None) -> float:
        return float(params["rate"]) * steps

    @classmethod
    def params_at_load(cls, load: float, steps: int, size_param: str | None) -> dict:
        return {"rate": load / steps}

    @classmethod
    def spec_at_load(cls, spec: DriveSpec, load: float) -> dict:
        return {"rate": load / spec.steps}

    @classmethod
    def load_text(cls, params: Mapping, sends: str, duration: str,
                  size_param: str | None) -> str:
        return f"{params['rate']:g} req/s open loop: {sends}, {duration}"
