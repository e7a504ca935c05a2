"""Capacity search: the highest load a target sustains while every check holds.

A pass/fail run says nothing about headroom; this finds the knee. Load rises in steps (open
loop: arrival rate in requests/s; closed loop: virtual users), each step a short run of its own:

1. **Ramp.** ``start``, ``start * growth``, ... up to ``ceiling``, until a step fails.
2. **Bisect** between the last passing and the first failing load (geometric midpoint, as load
   and latency scale multiplicatively) until their ratio is within ``1 + tolerance``.
3. **Confirm** the answer by running its step again; a confirmation that fails moves the
   failing bound down to it and the bisection continues (a noisy step cannot pass twice by
   chance as easily as once).

A step *fails* when a threshold breaks or errors pass their limit, including the saturation
signs of an open loop: arrivals dropped because every VU was busy, or achieved throughput short
of the offered rate. A step is *driver bound* when the driver could not keep its own timing
(schedule lag or its CPU over the validity limits): then the search stops and says "driver
bound above N", never reporting the driver's limit as the target's.

The search is pure: it calls ``run_step(load)`` for each step and decides from the returned
:class:`Step`, so tests drive it with synthetic latency curves and ``workbench`` with real runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from workbench.errors import WorkbenchError

CAPACITY_FILE = "capacity.json"
SCHEMA_VERSION = 1
RATE, VUS = "req/s", "vus"

# Verdicts: what the search established.
KNEE = "knee"  # a passing load and a failing load bracket the capacity
DRIVER_BOUND = "driver bound"  # the driver's timing broke first: a lower bound only
NOT_REACHED = "not reached"  # every step up to the ceiling passed: a lower bound only
BELOW_START = "below start"  # the first step already failed: an upper bound only


@dataclass(frozen=True)
class SearchOptions:
    """How the load rises: ``start`` times ``growth`` per step up to ``ceiling``, each step
    ``step_s`` long, then bisection until the bracket's ratio is at most ``1 + tolerance``."""

    start: float
    ceiling: float
    growth: float = 2.0
    step_s: float = 20.0
    tolerance: float = 0.05
    max_steps: int = 24
    confirmations: int = 2  # re-runs of the answer before it is believed
    driver_retries: int = 1  # re-runs of a driver-bound step before the search believes it
    unit: str = RATE

    def validate(self) -> None:
        """Refuse options that cannot describe a search, every problem in one message."""
        problems = []
        if not _positive(self.start):
            problems.append(f"start must be a positive load, got {self.start!r}")
        if not _positive(self.ceiling):
            problems.append(f"ceiling must be a positive load, got {self.ceiling!r}")
        elif _positive(self.start) and self.ceiling < self.start:
            problems.append(f"ceiling {self.ceiling:g} is below the start {self.start:g}; "
                            "raise --ceiling or lower --start")
        if not _finite(self.growth) or self.growth <= 1.0:
            problems.append(f"growth factor must be above 1, got {self.growth!r}")
        if not _positive(self.step_s):
            problems.append(f"step duration must be positive seconds, got {self.step_s!r}")
        if not _finite(self.tolerance) or not 0.0 < self.tolerance < 1.0:
            problems.append(f"tolerance must be between 0 and 1, got {self.tolerance!r}")
        if isinstance(self.driver_retries, bool) or not isinstance(self.driver_retries, int) \
                or self.driver_retries < 0:
            problems.append(f"driver_retries must be an integer of at least 0, got "
                            f"{self.driver_retries!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) \
                or self.max_steps < 2:
            problems.append(f"max_steps must be an integer of at least 2, got {self.max_steps!r}")
        if self.unit not in (RATE, VUS):
            problems.append(f"unit must be {RATE!r} or {VUS!r}, got {self.unit!r}")
        elif self.unit == VUS and _positive(self.start) and self.start < 1:
            problems.append(f"a virtual-user search starts at 1 VU at least, got {self.start!r}")
        if problems:
            raise WorkbenchError("capacity search: " + "; ".join(problems))

    def next_load(self, load: float) -> float:
        """The ramp's next load after ``load`` (never beyond the ceiling)."""
        return min(self._round(load * self.growth), self.ceiling)

    def midpoint(self, low: float, high: float) -> float | None:
        """A load strictly between ``low`` and ``high``, or None when there is none left."""
        mid = self._round(math.sqrt(low * high))
        return mid if low < mid < high else None

    def _round(self, load: float) -> float:
        if self.unit == VUS:
            return float(max(1, round(load)))
        return float(f"{load:.4g}")  # readable steps: 167 -> 334 -> 668 -> 1336


@dataclass(frozen=True)
class Step:
    """One step of the search: its load, what it measured, and the decision."""

    load: float  # offered rate (req/s) or virtual users
    achieved_rate: float  # requests per second actually sent
    p50: float | None
    p95: float | None
    p99: float | None
    passed: bool  # every check held
    valid: bool  # the driver kept its timing
    failed: tuple[str, ...] = ()  # the checks that broke, each with what was measured
    driver_bound: bool = False  # the driver's own limits broke (implies not valid)
    requests: int = 0
    errors: int = 0
    run_dir: str | None = None
    confirmation: bool = False  # a re-run of an earlier load
    throughput: float | None = None  # responses/s from the first intended start to the last
    # response: what the target served (achieved_rate counts sends, which a queue accepts)

    @property
    def limiting(self) -> str | None:
        """The first check that broke, as recorded."""
        return self.failed[0] if self.failed else None


@dataclass
class Capacity:
    """The search's outcome: ``capacity.json`` (without the target and run context)."""

    unit: str
    verdict: str
    max_sustainable: float | None  # the highest load that passed (a lower bound, or the answer)
    interval: tuple[float | None, float | None]  # (last passing, first failing) load
    limiting_check: str | None
    options: SearchOptions
    steps: list[Step] = field(default_factory=list)
    budget_spent: bool = False  # the ramp ran out of steps before any failed

    @property
    def found(self) -> bool:
        return self.verdict == KNEE

    def sentence(self) -> str:
        """One line a person reads: what the capacity is, or what bounds it."""
        unit = self.unit
        low, high = self.interval
        if self.verdict == KNEE:
            return (f"capacity: {_fmt(low)} {unit} (fails at {_fmt(high)} {unit}: "
                    f"{self.limiting_check})")
        if self.verdict == DRIVER_BOUND:
            above = f"above {_fmt(low)} {unit}" if low is not None else "from the first step"
            return (f"capacity: not measured, driver bound {above} ({self.limiting_check}); "
                    "protect or shard the driver, or load from another host")
        if self.verdict == NOT_REACHED and self.budget_spent:
            return (f"capacity: above {_fmt(low)} {unit} (the step budget ran out before a "
                    "step failed; raise --start or --max-steps)")
        if self.verdict == NOT_REACHED:
            return (f"capacity: above {_fmt(low)} {unit} (every step up to the ceiling "
                    "passed; raise --ceiling)")
        return (f"capacity: below {_fmt(high)} {unit}, the first step failed "
                f"({self.limiting_check}); lower --start")

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "unit": self.unit, "verdict": self.verdict,
                "max_sustainable": self.max_sustainable,
                "max_sustainable_rate": self.max_sustainable if self.unit == RATE else None,
                "interval": list(self.interval), "limiting_check": self.limiting_check,
                "budget_spent": self.budget_spent, "options": asdict(self.options),
                "steps": [self._step_dict(s) for s in self.steps]}

    def _step_dict(self, step: Step) -> dict:
        """A step as capacity.json shows it: its load named as what it is (``offered_rate``
        in requests/s for an open loop, ``vus`` for a closed one) beside the measurements."""
        load = {"offered_rate": step.load if self.unit == RATE else None,
                "vus": int(step.load) if self.unit == VUS else None}
        return load | asdict(step) | {"failed": list(step.failed)}


def search(run_step: Callable[[float], Step], options: SearchOptions,
           echo: Callable[[str], None] | None = None) -> Capacity:
    """Find the highest load that passes; ``run_step(load)`` runs and judges one step."""
    options.validate()
    steps: list[Step] = []

    def step(load: float, confirmation: bool = False) -> Step:
        # A driver-bound step runs again before it ends the search: on a shared host another
        # tenant can hold the driver's core for a moment, while a driver truly out of budget
        # at this load is out of budget every time.
        for _ in range(1 + options.driver_retries):
            result = run_step(load)
            if confirmation:
                result = replace(result, confirmation=True)
            steps.append(result)
            if echo:
                echo(_describe(result, options.unit))
            if not result.driver_bound:
                break
        return result

    def outcome(verdict: str, low: Step | None, high: Step | None, limiting: str | None
                ) -> Capacity:
        return Capacity(options.unit, verdict, low.load if low else None,
                        (low.load if low else None, high.load if high else None), limiting,
                        options, steps)

    passing: Step | None = None
    failing: Step | None = None
    load = options._round(options.start)
    while failing is None:  # the ramp
        current = step(load)
        if current.driver_bound:
            return outcome(DRIVER_BOUND, passing, None, current.limiting)
        if current.passed:
            passing = current
            if load >= options.ceiling:
                return outcome(NOT_REACHED, passing, None, None)
            if len(steps) >= options.max_steps:
                result = outcome(NOT_REACHED, passing, None, None)
                result.budget_spent = True
                return result
            load = options.next_load(load)
        else:
            failing = current
    if passing is None:
        return outcome(BELOW_START, None, failing, failing.limiting)

    confirmations = 0
    while len(steps) < options.max_steps:
        mid = None
        if failing.load / passing.load > 1 + options.tolerance:
            mid = options.midpoint(passing.load, failing.load)
        if mid is None:  # the bracket is tight: believe the answer only once it repeats
            if confirmations >= options.confirmations or len(steps) >= options.max_steps:
                break
            confirmations += 1
            again = step(passing.load, confirmation=True)
            if again.driver_bound:
                return outcome(DRIVER_BOUND, _highest_passing(steps, below=again.load), None,
                               again.limiting)
            if again.passed:
                break
            failing = again  # the earlier pass was luck: search below it
            passing = _highest_passing(steps, below=again.load)
            if passing is None:
                return outcome(BELOW_START, None, failing, failing.limiting)
            continue
        current = step(mid)
        if current.driver_bound:
            return outcome(DRIVER_BOUND, passing, None, current.limiting)
        if current.passed:
            passing = current
        else:
            failing = current
    return outcome(KNEE, passing, failing, failing.limiting)


def _highest_passing(steps: list[Step], below: float) -> Step | None:
    """The highest load below ``below`` that passed every time it ran."""
    loads: dict[float, bool] = {}
    for s in steps:
        if s.load < below and not s.driver_bound:  # a driver-bound run judged nothing
            loads[s.load] = loads.get(s.load, True) and s.passed
    passed = [load for load, ok in loads.items() if ok]
    if not passed:
        return None
    best = max(passed)
    return next(s for s in reversed(steps) if s.load == best)


def _describe(step: Step, unit: str) -> str:
    verdict = "pass" if step.passed else "driver bound" if step.driver_bound else "FAIL"
    p99 = "-" if step.p99 is None else f"{step.p99:.1f}"
    why = f": {'; '.join(step.failed)}" if step.failed else ""
    again = " (again)" if step.confirmation else ""
    return (f"[capacity] {_fmt(step.load)} {unit}{again}: achieved {step.achieved_rate:.1f}"
            f" req/s, p99 {p99} ms, {verdict}{why}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"


def _finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _positive(value: object) -> bool:
    return _finite(value) and value > 0
