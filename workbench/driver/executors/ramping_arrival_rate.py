"""``ramping-arrival-rate``: a piecewise-linear rate curve through ``stages`` (open loop)."""

from __future__ import annotations

import numpy as np

from workbench.driver import schedule
from workbench.driver.executors.arrival_rate import ArrivalRateExecutor
from workbench.driver.spec import DriveSpec, is_number, register_executor


@register_executor
class RampingArrivalRate(ArrivalRateExecutor):
    """From ``start_rate``, each stage ``(seconds, target)`` ramps linearly to ``target``;
    arrival i is where the curve's integral reaches i (:mod:`workbench.driver.schedule`)."""

    name = "ramping-arrival-rate"
    fields = ("start_rate", "stages")

    @classmethod
    def run_s(cls, spec: DriveSpec) -> float:
        return float(sum(d for d, _ in spec.stages))

    @classmethod
    def peak_rate(cls, spec: DriveSpec) -> float:
        return max([spec.start_rate] + [r for _, r in spec.stages])

    @classmethod
    def planned_arrivals(cls, spec: DriveSpec) -> int:
        return schedule.ramping_count(spec.start_rate, spec.stages)

    @classmethod
    def offsets_ns(cls, spec: DriveSpec, indices: np.ndarray) -> np.ndarray:
        return schedule.ramping_offsets_ns(spec.start_rate, spec.stages, indices)

    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        if not spec.stages:
            return ["ramping-arrival-rate needs stages: ((duration_s, rate), ...)"]
        out = []
        if not is_number(spec.start_rate) or spec.start_rate < 0:
            out.append(f"start_rate must be zero or a positive rate, got {spec.start_rate!r}")
        bad = [s for s in spec.stages if len(s) != 2 or not is_number(s[0]) or s[0] < 0
               or not is_number(s[1]) or s[1] < 0]
        out += [f"stage {stage!r} must be (duration_s >= 0, rate >= 0)" for stage in bad]
        if bad or out:
            return out  # the totals below need well-formed stages
        total = spec.run_s
        if total <= 0:
            out.append("the stages' durations add up to 0 s; give a stage a duration")
        if spec.duration_s and abs(spec.duration_s - total) > 1e-9:
            out.append(f"duration {spec.duration_s} s disagrees with the stages' total "
                       f"{total} s; leave duration_s 0 for ramping-arrival-rate")
        if spec.peak_rate <= 0:
            out.append("every stage rate is 0: the ramp would send nothing; give a stage a "
                       "positive rate")
        return out
