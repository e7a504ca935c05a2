"""Capacity search: the highest load a target sustains while every check holds.

A pass/fail run says nothing about headroom; this finds the knee. Load rises in steps (open
loop: arrival rate in requests/s; closed loop: virtual users; an agent fleet: agents), each
step a short run of its own:

1. **Ramp.** ``start``, ``start * growth``, ... up to ``ceiling``, until a step fails.
2. **Bisect** between the last passing and the first failing load (geometric midpoint, as load
   and latency scale multiplicatively) until their ratio is within ``1 + tolerance``.
3. **Repeat** both ends of the bracket until each has run ``repeats`` times (default 3). The
   answer must pass every time: one failure moves the failing bound down to it and the
   bisection continues (a noisy step cannot pass three times by chance as easily as once).
   When the load above passes in some repeats (a wide spread: the bracket is not where the
   target breaks), the steps get longer (doubled, up to ``max_step_s``) and the repeats run
   again: past its capacity a target's queue grows with time, so a longer step separates a
   load just above it from one just below. The bracket and the spread of its repeats are kept.

A step *fails* when a threshold breaks or errors pass their limit, including the saturation
signs of an open loop: arrivals dropped because every VU was busy, or achieved throughput short
of the offered rate. A step is *driver bound* when the driver, not the target, set its pace
(judged by :func:`workbench.capacity.runner.judge`): it runs again (with more driver processes
when ``lift_driver`` gives them, else ``driver_retries`` times) and otherwise the search stops
and says "driver bound above N" and how to lift it, never reporting the driver's limit as the
target's.

``searches`` runs the whole search that many times (``--repeat-search K``) and reports the
median answer with the range (:func:`combine`): one search's answer alone does not say how far
the next one would land from it.

The search is pure: it calls ``run_step(load, step_s)`` for each step and decides from the
returned :class:`Step`, so tests drive it with synthetic latency curves and ``workbench``
with real runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from workbench.errors import WorkbenchError

CAPACITY_FILE = "capacity.json"
SCHEMA_VERSION = 1
RATE, VUS, AGENTS = "req/s", "vus", "agents"
UNITS = (RATE, VUS, AGENTS)

# Verdicts: what the search established.
KNEE = "knee"  # a passing load and a failing load bracket the capacity
DRIVER_BOUND = "driver bound"  # the driver's timing broke first: a lower bound only
NOT_REACHED = "not reached"  # every step up to the ceiling passed: a lower bound only
BELOW_START = "below start"  # the first step already failed: an upper bound only
MEASURED = (KNEE, NOT_REACHED)  # verdicts that measured the target (the others did not)
LIFT_DRIVER = ("lift the driver's limit: --shards N (a driver process per core; --auto-shard "
               "adds them as the search goes) or load from another host")


@dataclass(frozen=True)
class SearchOptions:
    """How the load rises: ``start`` times ``growth`` per step up to ``ceiling``, each step
    ``step_s`` long, then bisection until the bracket's ratio is at most ``1 + tolerance``,
    then ``repeats`` runs at each end of the bracket (longer steps, up to ``max_step_s``, when
    the load above passes in some of them). ``searches``: the whole search that many times."""

    start: float
    ceiling: float
    growth: float = 2.0
    step_s: float = 20.0
    tolerance: float = 0.05
    max_steps: int = 32  # per search
    repeats: int = 3  # runs at the answer and at the load above it, the first included
    max_step_s: float | None = None  # longest step when the spread is wide; None: 4 x step_s
    searches: int = 1
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
        elif self.max_step_s is not None and (not _finite(self.max_step_s)
                                              or self.max_step_s < self.step_s):
            problems.append(f"the longest step ({self.max_step_s!r} s) must be at least the "
                            f"step duration {self.step_s:g} s")
        if not _finite(self.tolerance) or not 0.0 < self.tolerance < 1.0:
            problems.append(f"tolerance must be between 0 and 1, got {self.tolerance!r}")
        for name, least in (("driver_retries", 0), ("max_steps", 2), ("repeats", 1),
                            ("searches", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                problems.append(f"{name} must be an integer of at least {least}, got {value!r}")
        if self.unit not in UNITS:
            problems.append(f"unit must be one of {', '.join(map(repr, UNITS))}, got "
                            f"{self.unit!r}")
        elif self.unit != RATE and _positive(self.start) and self.start < 1:
            one = "1 VU" if self.unit == VUS else "1 agent"
            problems.append(f"a search over {self.unit} starts at {one} at least, got "
                            f"{self.start!r}")
        if problems:
            raise WorkbenchError("capacity search: " + "; ".join(problems))

    @property
    def first(self) -> float:
        """The first step's load (``start``, rounded as every step is)."""
        return self._round(self.start)

    @property
    def longest_step_s(self) -> float:
        return self.max_step_s if self.max_step_s is not None else 4 * self.step_s

    def next_load(self, load: float) -> float:
        """The ramp's next load after ``load`` (never beyond the ceiling)."""
        return min(self._round(load * self.growth), self.ceiling)

    def above(self, load: float) -> float:
        """The next load up by the tolerance (at least one whole user or agent more), never
        beyond the ceiling."""
        up = self._round(load * (1 + self.tolerance))
        return min(max(up, load + 1) if self.unit != RATE else up, self.ceiling)

    def midpoint(self, low: float, high: float) -> float | None:
        """A load strictly between ``low`` and ``high``, or None when there is none left."""
        mid = self._round(math.sqrt(low * high))
        return mid if low < mid < high else None

    def _round(self, load: float) -> float:
        if self.unit != RATE:  # whole users or agents
            return float(max(1, round(load)))
        return float(f"{load:.4g}")  # readable steps: 167 -> 334 -> 668 -> 1336


@dataclass(frozen=True)
class Step:
    """One step of the search: its load, what it measured, and the decision."""

    load: float  # offered rate (req/s), virtual users or agents
    achieved_rate: float  # requests per second actually sent
    p50: float | None
    p95: float | None
    p99: float | None
    passed: bool  # every check held
    valid: bool  # the driver kept its timing (by the capacity rule: ``driver_rule``)
    failed: tuple[str, ...] = ()  # the checks that broke, each with what was measured
    driver_bound: bool = False  # the driver's own limits broke (implies not valid)
    requests: int = 0
    errors: int = 0
    run_dir: str | None = None
    confirmation: bool = False  # a repeat of an earlier load
    throughput: float | None = None  # responses/s from the first intended start to the last
    # response: what the target served (achieved_rate counts sends, which a queue accepts)
    step_s: float | None = None  # seconds of load
    search: int = 1  # which search it belongs to (``--repeat-search``)
    fixture: dict[str, int] | None = None  # the fixture this step measured (agents, ...)
    shards: int | None = None  # driver processes
    schedule_lag_p99: float | None = None  # ms
    driver_cpu: float | None = None  # the busiest driver process, share of a core
    driver_rule: str | None = None  # the rule that judged the driver: what it allowed

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
    budget_spent: bool = False  # the steps ran out: before any failed, or before the repeats
    repeats: dict[str, Any] | None = None  # the bracket's repeats and their spread
    searches: list[dict[str, Any]] = field(default_factory=list)  # each search, when several
    answers: dict[str, Any] | None = None  # several searches: median, min, max, spread

    @property
    def found(self) -> bool:
        return self.verdict == KNEE

    @property
    def measured(self) -> bool:
        """Whether the search measured the target (a knee, or every step passing): a
        driver-bound search or one whose first step failed measured no capacity."""
        return self.verdict in MEASURED

    def answer_step(self) -> Step | None:
        """The last step run at the answer (what its fixture and spread were)."""
        low = self.interval[0]
        return next((s for s in reversed(self.steps) if s.load == low and s.passed), None)

    def sentence(self) -> str:
        """One line a person reads: what the capacity is, or what bounds it."""
        unit = self.unit
        low, high = self.interval
        if self.verdict == KNEE:
            unconfirmed = ("; unconfirmed: the step budget ran out before its repeats, raise "
                           "--max-steps") if self.budget_spent else ""
            return (f"capacity: {fmt(low)} {unit} (fails at {fmt(high)} {unit}: "
                    f"{self.limiting_check}{unconfirmed})")
        if self.verdict == DRIVER_BOUND:
            above = f"above {fmt(low)} {unit}" if low is not None else "from the first step"
            return (f"capacity: not measured, driver bound {above} ({self.limiting_check}); "
                    f"{LIFT_DRIVER}")
        if self.verdict == NOT_REACHED and self.budget_spent:
            return (f"capacity: above {fmt(low)} {unit} (the step budget ran out before a "
                    "step failed; raise --start or --max-steps)")
        if self.verdict == NOT_REACHED:
            return (f"capacity: above {fmt(low)} {unit} (every step up to the ceiling "
                    "passed; raise --ceiling)")
        return (f"capacity: below {fmt(high)} {unit}, the first step failed "
                f"({self.limiting_check}); lower --start")

    def spread_line(self) -> str | None:
        """How the answer repeated: the bracket's repeats, and several searches' range."""
        parts = []
        if self.repeats:
            ends = [self.repeats[k] for k in ("answer", "above") if self.repeats.get(k)]
            parts.append("repeats: " + ", ".join(
                f"{e['passed']} of {e['runs']} passed at {fmt(e['load'])} {self.unit}"
                + (f" (p99 {_span(e['p99'])} ms)" if e.get("p99") else "") for e in ends)
                + f", {self.repeats['step_s']:g} s steps")
        if self.answers:
            a = self.answers
            if a["knees"] == a["searches"]:
                parts.append(f"median of {a['searches']} searches; range {fmt(a['min'])}-"
                             f"{fmt(a['max'])} {self.unit} ({a['spread']:.1%} of the median)")
            else:
                parts.append(f"{a['searches']} searches: " + "; ".join(
                    f"{s['verdict']} {fmt(s['max_sustainable'])}" for s in self.searches))
        return "; ".join(parts) or None

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "unit": self.unit, "verdict": self.verdict,
                "max_sustainable": self.max_sustainable,
                "max_sustainable_rate": self.max_sustainable if self.unit == RATE else None,
                "interval": list(self.interval), "limiting_check": self.limiting_check,
                "budget_spent": self.budget_spent, "options": asdict(self.options),
                "repeats": self.repeats, "searches": self.searches, "answers": self.answers,
                "spread": self.spread_line(),
                "steps": [self._step_dict(s) for s in self.steps]}

    def summary(self) -> dict:
        """This search in a line of ``searches``: verdict, answer, bracket, steps."""
        return {"verdict": self.verdict, "max_sustainable": self.max_sustainable,
                "interval": list(self.interval), "limiting_check": self.limiting_check,
                "steps": len(self.steps), "repeats": self.repeats,
                "budget_spent": self.budget_spent}

    def _step_dict(self, step: Step) -> dict:
        """A step as capacity.json shows it: its load named as what it is (``offered_rate``
        in requests/s for an open loop, ``vus`` for a closed one) beside the measurements."""
        load = {"offered_rate": step.load if self.unit == RATE else None,
                "vus": int(step.load) if self.unit == VUS else None}
        return load | asdict(step) | {"failed": list(step.failed)}


RunStep = Callable[[float, float], Step]  # (load, seconds) -> the judged step


def search(run_step: RunStep, options: SearchOptions,
           echo: Callable[[str], None] | None = None,
           lift_driver: Callable[[Step], bool] | None = None) -> Capacity:
    """Find the highest load that passes; ``run_step(load, step_s)`` runs and judges one step.

    ``lift_driver(step)``, given a driver-bound step, gives the driver more room (more
    processes) and says whether it did; the step then runs again. ``options.searches`` > 1
    runs the whole search that many times (:func:`combine`)."""
    options.validate()
    results = []
    for number in range(1, options.searches + 1):
        if echo and options.searches > 1:
            echo(f"[capacity] search {number} of {options.searches}")
        results.append(_search_once(run_step, options, echo, lift_driver, number))
    return results[0] if len(results) == 1 else combine(results)


def _search_once(run_step: RunStep, options: SearchOptions,
                 echo: Callable[[str], None] | None,
                 lift_driver: Callable[[Step], bool] | None, number: int) -> Capacity:
    steps: list[Step] = []
    step_s = options.step_s

    def step(load: float, confirmation: bool = False) -> Step:
        # A driver-bound step runs again before it ends the search: on a shared host another
        # tenant can hold the driver's core for a moment, while a driver truly out of budget
        # at this load is out of budget every time (unless it gets more processes).
        retries = options.driver_retries
        while True:
            result = replace(run_step(load, step_s), step_s=step_s, search=number,
                             confirmation=confirmation)
            steps.append(result)
            if echo:
                echo(_describe(result, options.unit))
            if not result.driver_bound:
                return result
            if lift_driver is not None and lift_driver(result):
                continue
            if retries == 0:
                return result
            retries -= 1

    def runs(load: float) -> list[Step]:
        return [s for s in steps if s.load == load and s.step_s == step_s
                and not s.driver_bound]

    def repeat(load: float, until_failure: bool) -> Step | None:
        """Run ``load`` until it has ``repeats`` runs of this length; a driver-bound run,
        or (``until_failure``) a failed one, stops it and is returned."""
        while len(runs(load)) < options.repeats and len(steps) < options.max_steps:
            current = step(load, confirmation=True)
            if current.driver_bound or (until_failure and not current.passed):
                return current
        return None

    def outcome(verdict: str, low: Step | None, high: Step | None, limiting: str | None
                ) -> Capacity:
        return Capacity(options.unit, verdict, low.load if low else None,
                        (low.load if low else None, high.load if high else None), limiting,
                        options, steps)

    passing: Step | None = None
    failing: Step | None = None

    def climb(load: float, up: Callable[[float], float]) -> Capacity | None:
        """Step up from ``load`` (each next load ``up(load)``) until a step fails (None: the
        bracket is set), or return what ended the climb: the driver, the ceiling, the budget."""
        nonlocal passing, failing
        while True:
            current = step(load)
            if current.driver_bound:
                return outcome(DRIVER_BOUND, passing, None, current.limiting)
            if not current.passed:
                failing = current
                return None
            passing = current
            if load >= options.ceiling:
                return outcome(NOT_REACHED, passing, None, None)
            if len(steps) >= options.max_steps:
                result = outcome(NOT_REACHED, passing, None, None)
                result.budget_spent = True
                return result
            load = up(load)

    ended = climb(options.first, options.next_load)  # the ramp
    if ended is not None:
        return ended
    if passing is None:
        return outcome(BELOW_START, None, failing, failing.limiting)

    while len(steps) < options.max_steps:
        if failing is None:  # the load above held at longer steps: climb by the tolerance
            if passing.load >= options.ceiling:
                return outcome(NOT_REACHED, passing, None, None)
            ended = climb(options.above(passing.load), options.above)
            if ended is not None:
                return ended
            continue
        mid = None
        if failing.load / passing.load > 1 + options.tolerance:
            mid = options.midpoint(passing.load, failing.load)
        if mid is not None:
            current = step(mid)
            if current.driver_bound:
                return outcome(DRIVER_BOUND, passing, None, current.limiting)
            if current.passed:
                passing = current
            else:
                failing = current
            continue
        # the bracket is tight: believe the answer only once it repeats, and see the spread
        stopped = repeat(passing.load, until_failure=True)
        if stopped is not None and stopped.driver_bound:
            return outcome(DRIVER_BOUND, _highest_passing(steps, below=stopped.load), None,
                           stopped.limiting)
        if stopped is not None:  # the earlier pass was luck: search below it
            failing = stopped
            passing = _highest_passing(steps, below=stopped.load)
            if passing is None:
                return outcome(BELOW_START, None, failing, failing.limiting)
            continue
        stopped = repeat(failing.load, until_failure=False)
        if stopped is not None:
            return outcome(DRIVER_BOUND, passing, None, stopped.limiting)
        above = runs(failing.load)
        wide = any(s.passed for s in above)
        if wide and step_s * 2 <= options.longest_step_s:
            step_s *= 2
            if echo:
                echo(f"[capacity] {sum(s.passed for s in above)} of {len(above)} runs passed "
                     f"at {fmt(failing.load)} {options.unit}: repeating with {step_s:g} s "
                     "steps")
            continue
        if len(above) >= options.repeats and all(s.passed for s in above):
            passing, failing = above[-1], None  # it failed only in shorter steps
            if echo:
                echo(f"[capacity] every {step_s:g} s run passed at {fmt(passing.load)} "
                     f"{options.unit}: searching above it")
            continue
        break
    if failing is None:  # the steps ran out while searching above a load that held
        result = outcome(NOT_REACHED, passing, None, None)
        result.budget_spent = True
        return result
    result = outcome(KNEE, passing, failing, failing.limiting)
    # the steps can run out before the answer and the load above had all their repeats
    result.budget_spent = min(len(runs(passing.load)), len(runs(failing.load))) < options.repeats
    result.repeats = {"step_s": step_s, "answer": _spread(runs(passing.load)),
                      "above": _spread(runs(failing.load))}
    return result


def combine(results: list[Capacity]) -> Capacity:
    """Several whole searches as one: the median answer (of an even count the lower middle,
    an answer that was measured) with the range, or, when not every search found a knee, the
    first that did not (its verdict stands) with every search listed. Every step is kept."""
    knees = [r for r in results if r.verdict == KNEE]
    if len(knees) == len(results):
        ordered = sorted(results, key=lambda r: r.max_sustainable)
        base = ordered[(len(ordered) - 1) // 2]
    else:
        base = next(r for r in results if r.verdict != KNEE)
    answers = [r.max_sustainable for r in knees]
    median = base.max_sustainable if len(knees) == len(results) else None
    return replace(base, steps=[s for r in results for s in r.steps],
                   searches=[r.summary() for r in results],
                   answers={"searches": len(results), "knees": len(knees), "median": median,
                            "min": min(answers) if answers else None,
                            "max": max(answers) if answers else None,
                            "spread": (max(answers) - min(answers)) / median if median
                            else None})


def _spread(runs: list[Step]) -> dict[str, Any] | None:
    """Repeated runs at one load: how many passed, and their p99 and throughput ranges."""
    if not runs:
        return None
    return {"load": runs[0].load, "runs": len(runs), "passed": sum(s.passed for s in runs),
            "p99": _range([s.p99 for s in runs]),
            "throughput": _range([s.throughput for s in runs])}


def _range(values: list[float | None]) -> list[float] | None:
    """``[min, median, max]`` of the values measured (None: none were)."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    median = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
    return [known[0], median, known[-1]]


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
    fixture = "".join(f", {n:,} {k}" for k, n in (step.fixture or {}).items())
    length = f" for {step.step_s:g} s" if step.step_s else ""
    return (f"[capacity] {fmt(step.load)} {unit}{again}{length}{fixture}: achieved "
            f"{step.achieved_rate:.1f} req/s, p99 {p99} ms, {verdict}{why}")


def _span(values: list[float]) -> str:
    low, _, high = values
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"


def _finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _positive(value: object) -> bool:
    return _finite(value) and value > 0


def describe_fixture(fixture: Mapping[str, int] | None) -> str:
    """``76,740 agents`` (what a step's fixture held), or "" without one."""
    return ", ".join(f"{n:,} {k}" for k, n in (fixture or {}).items())
