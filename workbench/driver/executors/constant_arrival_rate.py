"""``constant-arrival-rate``: ``rate`` iterations per second for ``duration_s`` (open loop)."""

from __future__ import annotations

from workbench.driver.executors.arrival_rate import ArrivalRateExecutor
from workbench.driver.schedule import planned_arrivals
from workbench.driver.spec import DriveSpec, is_positive, register_executor


@register_executor
class ConstantArrivalRate(ArrivalRateExecutor):
    """Arrival i intended at ``i / rate`` seconds after the start."""

    name = "constant-arrival-rate"

    @classmethod
    def check(cls, spec: DriveSpec) -> list[str]:
        out = []
        if not is_positive(spec.rate):
            out.append(f"rate must be a positive number of requests/s, got {spec.rate!r}")
        if not is_positive(spec.duration_s):
            out.append(f"duration must be positive seconds, got {spec.duration_s!r}")
        elif not out and planned_arrivals(spec) < 1:
            out.append(f"{spec.rate:g} requests/s for {spec.duration_s:g} s schedules no "
                       "request; raise the rate or the duration")
        return out
