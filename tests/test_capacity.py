"""The capacity search's logic on synthetic latency curves: no sockets, exact decisions."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from workbench.capacity.search import (
    BELOW_START,
    DRIVER_BOUND,
    KNEE,
    NOT_REACHED,
    SCHEMA_VERSION,
    VUS,
    SearchOptions,
    Step,
    search,
)
from workbench.errors import WorkbenchError

LIMIT_MS = 200.0  # the threshold every synthetic step is judged by: p(99)<200


def queue_p99(load: float, capacity_rps: float, step_s: float, base_ms: float = 5.0) -> float:
    """p99 of a fixed-capacity server under a constant arrival rate for ``step_s`` seconds.

    Below capacity nothing queues; above it the backlog grows by ``load - capacity`` per
    second, so the request arriving at time t waits ``(load - capacity) * t / capacity``.
    """
    if load <= capacity_rps:
        return base_ms
    return base_ms + 1000.0 * (load - capacity_rps) * 0.99 * step_s / capacity_rps


def knee(capacity_rps: float, step_s: float, base_ms: float = 5.0) -> float:
    """The load at which :func:`queue_p99` reaches the threshold."""
    return capacity_rps * (1 + (LIMIT_MS - base_ms) / (1000.0 * 0.99 * step_s))


def judged(load: float, p99: float, **extra) -> Step:
    ok = p99 < LIMIT_MS
    return Step(load=load, achieved_rate=load, p50=p99 / 2, p95=p99 * 0.9, p99=p99, passed=ok,
                valid=True, failed=() if ok else (f"p(99)<{LIMIT_MS:g} (measured {p99:.1f})",),
                **extra)


def monotone(capacity_rps: float, step_s: float):
    calls: list[float] = []

    def run(load: float, seconds: float) -> Step:
        calls.append(load)
        return judged(load, queue_p99(load, capacity_rps, seconds))
    return run, calls


def test_a_monotone_curve_is_bracketed_within_the_tolerance():
    run, calls = monotone(800.0, 20.0)
    result = search(run, SearchOptions(start=50, ceiling=20_000, step_s=20.0))
    true_knee = knee(800.0, 20.0)
    low, high = result.interval
    assert result.verdict == KNEE and result.found
    assert low <= true_knee < high
    assert high / low <= 1.05
    assert result.max_sustainable == low
    assert abs(result.max_sustainable - 800.0) / 800.0 < 0.15
    assert result.limiting_check.startswith("p(99)<200")
    # the ramp doubled from the start until the first failure, then only bisected inside it
    assert calls[:5] == [50, 100, 200, 400, 800]
    assert calls[5] == 1600 and all(800 <= c <= 1600 for c in calls[6:])
    # both ends of the bracket ran three times; the answer passed each time, the load above
    # failed each time, and the record says so with the spread of what they measured
    assert calls.count(low) == 3 and calls.count(high) == 3
    assert result.repeats["answer"]["runs"] == 3 == result.repeats["answer"]["passed"]
    assert result.repeats["above"]["runs"] == 3 and result.repeats["above"]["passed"] == 0
    assert result.repeats["step_s"] == 20.0
    p99_low, _, p99_high = result.repeats["answer"]["p99"]
    assert p99_low <= p99_high < LIMIT_MS
    assert "3 of 3 passed" in result.spread_line() and "0 of 3 passed" in result.spread_line()


def test_noisy_curves_land_near_the_knee_for_almost_every_seed():
    true = knee(800.0, 10.0)
    errors = []
    for seed in range(60):
        rng = np.random.default_rng(seed)

        def run(load: float, seconds: float, rng=rng) -> Step:
            return judged(load, queue_p99(load, 800.0, seconds) * float(rng.lognormal(0, 0.35)))
        result = search(run, SearchOptions(start=100, ceiling=10_000, step_s=10.0))
        assert result.verdict == KNEE
        errors.append(abs(result.max_sustainable - true) / true)
    errors = np.array(errors)
    # noise near the knee can only move the answer by the width of the noisy region
    assert (errors <= 0.15).mean() >= 0.95
    assert errors.max() <= 0.30


def test_a_lucky_pass_is_caught_by_its_confirmation():
    seen: dict[float, int] = {}

    def run(load: float, seconds: float) -> Step:
        seen[load] = seen.get(load, 0) + 1
        p99 = queue_p99(load, 800.0, seconds)
        if 800 < load < 900 and seen[load] == 1:
            p99 = 50.0  # passes once by chance, fails when run again
        return judged(load, p99)
    result = search(run, SearchOptions(start=100, ceiling=5_000, step_s=20.0, tolerance=0.05))
    assert result.verdict == KNEE
    assert result.max_sustainable <= knee(800.0, 20.0)
    assert any(s.confirmation and not s.passed for s in result.steps)


def test_a_load_above_the_answer_that_sometimes_passes_gets_longer_steps():
    """A wide spread at the bracket's top (it passed in one of its repeats) means the short
    step could not tell the loads apart: the repeats run again with longer steps, where a
    queue past capacity has grown long enough to fail every time."""
    seen: dict[tuple[float, float], int] = {}

    def run(load: float, seconds: float) -> Step:
        seen[load, seconds] = seen.get((load, seconds), 0) + 1
        p99 = queue_p99(load, 800.0, seconds)
        if 800 < load < 850 and seconds == 10.0 and seen[load, seconds] == 2:
            p99 = 20.0  # at 10 s steps a near miss passes now and then
        return judged(load, p99)
    result = search(run, SearchOptions(start=100, ceiling=5_000, step_s=10.0,
                                       tolerance=0.02))
    assert result.verdict == KNEE
    assert result.repeats["step_s"] == 20.0
    assert result.repeats["above"] == result.repeats["above"] | {"runs": 3, "passed": 0}
    assert result.repeats["answer"]["runs"] == 3 == result.repeats["answer"]["passed"]
    assert {s.step_s for s in result.steps} == {10.0, 20.0}
    assert all(s.step_s == 20.0 for s in result.steps if s.step_s != 10.0)
    assert "20 s steps" in result.spread_line()


def test_the_longest_step_bounds_the_lengthening():
    def run(load: float, seconds: float) -> Step:  # the top passes one run in three, always
        n = run.calls = getattr(run, "calls", 0) + 1
        p99 = queue_p99(load, 800.0, 10.0)
        return judged(load, 20.0 if p99 >= LIMIT_MS and n % 3 == 0 and load < 900 else p99)
    result = search(run, SearchOptions(start=100, ceiling=5_000, step_s=10.0,
                                       max_step_s=20.0, tolerance=0.02))
    assert result.verdict == KNEE
    assert max(s.step_s for s in result.steps) <= 20.0
    with pytest.raises(WorkbenchError, match="longest step"):
        search(run, SearchOptions(start=100, ceiling=5_000, step_s=10.0, max_step_s=5.0))


def test_repeated_searches_report_the_median_answer_and_its_range():
    rng = np.random.default_rng(7)

    def run(load: float, seconds: float) -> Step:
        return judged(load, queue_p99(load, 800.0, seconds) * float(rng.lognormal(0, 0.3)))
    result = search(run, SearchOptions(start=100, ceiling=10_000, step_s=10.0, searches=3))
    answers = sorted(s["max_sustainable"] for s in result.searches)
    assert len(result.searches) == 3 and {s["verdict"] for s in result.searches} == {"knee"}
    assert result.verdict == KNEE and result.max_sustainable == answers[1]
    assert result.answers == {"searches": 3, "knees": 3, "median": answers[1],
                              "min": answers[0], "max": answers[2],
                              "spread": (answers[2] - answers[0]) / answers[1]}
    assert {s.search for s in result.steps} == {1, 2, 3}
    assert result.interval[0] == answers[1]  # the bracket of the median search
    assert "median of 3 searches" in result.spread_line()
    assert len(result.to_dict()["steps"]) == len(result.steps)


def test_repeated_searches_that_disagree_on_the_verdict_keep_the_weaker_one():
    searches = iter([800.0, 3_000.0, 800.0])  # the second search meets a slow driver
    state = {}

    def run(load: float, seconds: float) -> Step:
        if load == 100:
            state["limit"] = next(searches)
        if state["limit"] == 3_000.0 and load > 300:
            return Step(load=load, achieved_rate=load, p50=1, p95=2, p99=3, passed=False,
                        valid=False, driver_bound=True, failed=("driver CPU 97% of a core",))
        return judged(load, queue_p99(load, 800.0, seconds))
    result = search(run, SearchOptions(start=100, ceiling=10_000, step_s=10.0, searches=3))
    assert result.verdict == DRIVER_BOUND and not result.measured
    assert [s["verdict"] for s in result.searches] == ["knee", "driver bound", "knee"]
    assert result.answers["knees"] == 2 and result.answers["median"] is None
    assert "3 searches: knee" in result.spread_line()


def test_a_driver_given_more_processes_lets_the_search_go_on():
    shards = {"n": 1}

    def run(load: float, seconds: float) -> Step:
        if load > 1000 * shards["n"]:  # each process holds 1,000 req/s
            return Step(load=load, achieved_rate=load, p50=1, p95=2, p99=3, passed=False,
                        valid=False, driver_bound=True, shards=shards["n"],
                        failed=("driver CPU 97% of a core",))
        return replace(judged(load, queue_p99(load, 2500.0, seconds)), shards=shards["n"])

    def lift(step: Step) -> bool:
        if shards["n"] >= 4:
            return False
        shards["n"] *= 2
        return True
    result = search(run, SearchOptions(start=500, ceiling=20_000, step_s=10.0),
                    lift_driver=lift)
    assert result.verdict == KNEE and shards["n"] == 4
    low, high = result.interval
    assert low <= knee(2500.0, 10.0) < high and high / low <= 1.05
    assert [s.shards for s in result.steps if s.driver_bound] == [1, 2]
    # without more processes the same driver ends the search, saying how to lift it
    shards["n"] = 1
    bound = search(run, SearchOptions(start=500, ceiling=20_000, step_s=10.0))
    assert bound.verdict == DRIVER_BOUND and "--shards" in bound.sentence()


def test_a_driver_that_cannot_keep_time_is_reported_as_such_never_as_capacity():
    def run(load: float, seconds: float) -> Step:
        if load > 3000:  # the driver's own limit, far below the server's
            return Step(load=load, achieved_rate=2900, p50=1, p95=2, p99=3, passed=False,
                        valid=False, driver_bound=True,
                        failed=("schedule-lag p99 7.10 ms > 2.0 ms",))
        return judged(load, queue_p99(load, 50_000.0, 10.0))
    result = search(run, SearchOptions(start=100, ceiling=100_000, step_s=10.0))
    assert result.verdict == DRIVER_BOUND and not result.found
    assert result.max_sustainable == 1600 and result.interval == (1600, None)
    assert "driver bound above 1,600 req/s" in result.sentence()
    assert "schedule-lag" in result.sentence()


def test_a_driver_bound_step_runs_again_before_it_ends_the_search():
    """A moment's contention on a shared host (one lagging step) must not end the search; a
    driver truly out of budget is out of budget on the re-run as well."""
    hiccups = {400}  # the first run at 400 req/s lagged; its re-run did not
    seen: list[tuple[float, bool]] = []

    def run(load: float, seconds: float) -> Step:
        if load in hiccups:
            hiccups.discard(load)
            step = Step(load=load, achieved_rate=load, p50=1, p95=2, p99=30, passed=False,
                        valid=False, driver_bound=True, failed=("schedule-lag p99 21 ms",))
        else:
            step = judged(load, queue_p99(load, 800.0, 10.0))
        seen.append((load, step.driver_bound))
        return step
    result = search(run, SearchOptions(start=100, ceiling=10_000, step_s=10.0))
    assert result.verdict == KNEE
    assert seen[2:4] == [(400, True), (400, False)]
    assert 800 <= result.max_sustainable <= knee(800.0, 10.0)
    strict = search(run, SearchOptions(start=100, ceiling=10_000, step_s=10.0,
                                       driver_retries=0))
    assert strict.verdict == KNEE  # no hiccup left: the same answer without retries
    with pytest.raises(WorkbenchError, match="driver_retries"):
        search(run, SearchOptions(start=100, ceiling=1000, driver_retries=-1))


def test_every_step_passing_up_to_the_ceiling_is_a_lower_bound():
    run, calls = monotone(50_000.0, 10.0)
    result = search(run, SearchOptions(start=100, ceiling=1000, step_s=10.0))
    assert result.verdict == NOT_REACHED
    assert calls == [100, 200, 400, 800, 1000] and result.max_sustainable == 1000
    assert "above 1,000 req/s" in result.sentence() and "--ceiling" in result.sentence()


def test_a_first_step_that_fails_bounds_the_capacity_from_above():
    run, calls = monotone(10.0, 10.0)
    result = search(run, SearchOptions(start=100, ceiling=1000, step_s=10.0))
    assert result.verdict == BELOW_START and calls == [100]
    assert result.max_sustainable is None and result.interval == (None, 100)
    assert "below 100 req/s" in result.sentence() and "--start" in result.sentence()


def test_a_virtual_user_search_steps_through_whole_users():
    def run(vus: float, seconds: float) -> Step:
        assert vus == int(vus)
        return judged(vus, 10.0 if vus <= 37 else 500.0)
    result = search(run, SearchOptions(start=4, ceiling=400, step_s=10.0, unit=VUS))
    assert result.verdict == KNEE
    assert result.interval == (37, 38)  # adjacent integers: nothing left to bisect
    assert result.sentence().startswith("capacity: 37 vus")


def test_the_search_never_runs_more_than_its_step_budget():
    run, calls = monotone(800.0, 20.0)
    result = search(run, SearchOptions(start=100, ceiling=1e6, step_s=20.0, max_steps=8,
                                       tolerance=0.001))
    assert len(calls) == 8 == len(result.steps)
    assert result.verdict == KNEE and result.interval[1] / result.interval[0] > 1.001


def test_a_knee_whose_repeats_the_budget_cut_short_says_it_is_unconfirmed():
    """A bracket found, then the steps ran out before the answer repeated: the answer is
    named, but not as if it had held every repeat."""
    run, calls = monotone(800.0, 20.0)
    full = search(run, SearchOptions(start=100, ceiling=1e6, step_s=20.0))
    assert full.verdict == KNEE and not full.budget_spent
    assert "unconfirmed" not in full.sentence()
    bracketed = next(i for i, s in enumerate(full.steps) if s.confirmation)
    calls.clear()
    cut = search(run, SearchOptions(start=100, ceiling=1e6, step_s=20.0,
                                    max_steps=bracketed + 1))
    assert cut.verdict == KNEE and cut.budget_spent
    assert cut.interval == full.interval
    assert cut.repeats["answer"]["runs"] < full.options.repeats
    assert "unconfirmed: the step budget ran out" in cut.sentence()


def test_a_load_that_failed_only_in_short_steps_is_searched_above():
    """At 20 s the loads from 100 up pass one run in two (a stall lands in some); at 40 s
    everything under 120 passes. The answer is found with the longer steps, above 100, and the
    load named as failing fails at the length that judged the answer."""
    coin = {"n": 0}

    def run(load: float, seconds: float) -> Step:
        if seconds < 40 and 100 <= load < 120:
            coin["n"] += 1
            return judged(load, 10.0 if coin["n"] % 2 else 500.0)
        return judged(load, 10.0 if load < (120 if seconds >= 40 else 100) else 500.0)

    result = search(run, SearchOptions(start=50, ceiling=1000, step_s=20.0, max_steps=64,
                                       max_step_s=40.0))
    assert result.verdict == KNEE and not result.budget_spent
    low, high = result.interval
    assert 100 <= low < 120 <= high <= 120 * 1.05 ** 2
    assert result.repeats["step_s"] == 40.0
    assert result.repeats["above"]["passed"] == 0


def test_a_ramp_that_spends_its_budget_says_so():
    run, calls = monotone(800.0, 20.0)
    result = search(run, SearchOptions(start=1, ceiling=1e6, step_s=20.0, max_steps=6))
    assert calls == [1, 2, 4, 8, 16, 32]
    assert result.verdict == NOT_REACHED and result.budget_spent
    assert "step budget ran out" in result.sentence()


def test_the_result_serializes_with_every_step():
    run, _ = monotone(800.0, 20.0)
    data = search(run, SearchOptions(start=100, ceiling=5000, step_s=20.0)).to_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["max_sustainable_rate"] == data["max_sustainable"]
    assert {"load", "achieved_rate", "p50", "p95", "p99", "passed", "valid"} <= set(
        data["steps"][0])
    assert all(isinstance(s["failed"], list) for s in data["steps"])


@pytest.mark.parametrize("options, needle", [
    (dict(start=500, ceiling=100), "ceiling 100 is below the start 500"),
    (dict(start=0, ceiling=100), "start must be a positive load"),
    (dict(start=10, ceiling=100, growth=1.0), "growth factor must be above 1"),
    (dict(start=10, ceiling=100, step_s=math.nan), "step duration"),
    (dict(start=10, ceiling=100, tolerance=2), "tolerance"),
    (dict(start=0.5, ceiling=100, unit=VUS), "starts at 1 VU"),
])
def test_bad_options_are_refused_before_any_step(options, needle):
    calls = []
    with pytest.raises(WorkbenchError, match=needle):
        search(lambda load, seconds: calls.append(load), SearchOptions(**options))
    assert calls == []
