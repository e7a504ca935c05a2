"""Intended start times against their closed forms, and the shard split of a schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.driver import DriveSpec, RequestTemplate, ramping_offsets_ns, schedule_offsets_ns
from workbench.driver.schedule import blocks, planned_arrivals, ramping_count
from workbench.errors import WorkbenchError

T = (RequestTemplate("GET", "/", "t"),)


def test_linear_ramp_from_zero_matches_sqrt_closed_form():
    # rate r(t) = R t / D, so N(t) = R t^2 / (2 D) and arrival i is at sqrt(2 D i / R)
    R, D = 400.0, 10.0
    offsets = ramping_offsets_ns(0.0, [(D, R)])
    i = np.arange(len(offsets))
    assert len(offsets) == math.ceil(R * D / 2)
    assert np.all(np.abs(offsets - np.sqrt(2 * D * i / R) * 1e9) <= 1)


def test_ramp_up_hold_down_matches_piecewise_closed_form():
    stages = [(2.0, 100.0), (3.0, 100.0), (1.0, 0.0)]  # area 100 + 300 + 50 = 450
    offsets = ramping_offsets_ns(0.0, stages)
    assert len(offsets) == 450 == ramping_count(0.0, stages)

    def closed_form(i: float) -> float:
        if i <= 100:  # N(t) = 25 t^2 on [0, 2]
            return math.sqrt(i / 25)
        if i <= 400:  # N(t) = 100 + 100 (t - 2) on [2, 5]
            return 2 + (i - 100) / 100
        # N(t) = 400 + 100 u - 50 u^2 on [5, 6], u = t - 5
        return 5 + (100 - math.sqrt(100 ** 2 - 200 * (i - 400))) / 100

    expected = np.array([closed_form(i) for i in range(450)]) * 1e9
    assert np.all(np.abs(offsets - expected) <= 2)
    assert np.all(np.diff(offsets) > 0) and offsets[-1] < 6e9


def test_start_rate_and_an_instant_jump():
    # 50/s for 2 s, jump to 200/s (a 0 s stage) and hold 1 s: 100 + 200 arrivals
    offsets = ramping_offsets_ns(50.0, [(2.0, 50.0), (0.0, 200.0), (1.0, 200.0)])
    expected = np.concatenate([np.arange(100) / 50, 2 + np.arange(200) / 200]) * 1e9
    assert len(offsets) == 300
    assert np.all(np.abs(offsets - expected) <= 1)


def test_a_constant_ramp_equals_the_constant_schedule():
    assert np.array_equal(ramping_offsets_ns(167.0, [(10.0, 167.0)]),
                          schedule_offsets_ns(167.0, 10.0))


@pytest.mark.parametrize("spec", [
    DriveSpec("http://x", T, rate=333.3, duration_s=3.0),
    DriveSpec("http://x", T, executor="ramping-arrival-rate", start_rate=10.0,
              stages=((1.5, 300.0), (1.0, 20.0))),
], ids=["constant", "ramping"])
@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_partition_the_schedule_exactly(spec, shards):
    whole = np.concatenate([o for _, o in blocks(spec, 0, 1, size=64)])
    parts = [list(blocks(spec, k, shards, size=64)) for k in range(shards)]
    for k, part in enumerate(parts):
        indices = np.concatenate([i for i, _ in part])
        assert np.all(indices % shards == k)  # arrival i goes to shard i mod N
    merged = np.sort(np.concatenate([o for part in parts for _, o in part]))
    assert len(whole) == planned_arrivals(spec) and np.array_equal(merged, whole)


@pytest.mark.parametrize("kw,needle", [
    (dict(executor="ramping-arrival-rate"), "needs stages"),
    (dict(executor="ramping-arrival-rate", stages=((1.0, -5.0),)), "must be (duration_s"),
    (dict(executor="ramping-arrival-rate", stages=((0.0, 5.0),)), "add up to 0 s"),
    (dict(executor="ramping-arrival-rate", stages=((2.0, 0.0),)), "every stage rate is 0"),
    (dict(executor="ramping-arrival-rate", stages=((2.0, 5.0),), duration_s=3.0),
     "disagrees with the stages"),
    (dict(executor="constant-vus", duration_s=1.0), "at least 1 VU"),
    (dict(executor="closed", rate=1.0, duration_s=1.0), "unknown executor"),
    (dict(rate=1.0, duration_s=1.0, steps=0), "steps per iteration"),
    (dict(rate=1.0, duration_s=1.0, sleep_s=-1.0), "sleep_s"),
    (dict(rate=1.0, duration_s=1.0, pre_allocated_vus=500), "pre_allocated_vus"),
    (dict(rate=1.0, duration_s=1.0, ca_file="/nonexistent/ca.pem"), "CA file"),
])
def test_bad_executor_settings_are_refused_with_the_fix(kw, needle):
    with pytest.raises(WorkbenchError, match=needle.replace("(", r"\(")):
        DriveSpec("http://127.0.0.1:9", T, **kw).validate()


@pytest.mark.parametrize("template,needle", [
    (RequestTemplate("GET", "no-slash", "t"), "must start with /"),
    (RequestTemplate("GET", "/a b", "t"), "no spaces"),
    (RequestTemplate("GE T", "/", "t"), "HTTP method"),
    (RequestTemplate("GET", "/", ""), "tag must be"),
    (RequestTemplate("GET", "/", "t", headers=(("X-A", "1\r\nX-B: 2"),)), "line breaks"),
    (RequestTemplate("GET", "/", "t", expect=(999,)), "not an HTTP status"),
])
def test_bad_templates_are_refused(template, needle):
    with pytest.raises(WorkbenchError, match=needle):
        DriveSpec("http://127.0.0.1:9", (template,), rate=1.0, duration_s=1.0).validate()


def test_spec_round_trips_through_json():
    spec = DriveSpec("http://x", (RequestTemplate("POST", "/b", "bulk", "{}", (("X-A", "1"),),
                                                  expect=(200, 202), sum_fields=("n",)),),
                     executor="ramping-arrival-rate", stages=((1.0, 5.0), (2.0, 1.0)), steps=2,
                     sleep_s=0.5, pre_allocated_vus=3)
    assert DriveSpec.from_json(spec.to_json()) == spec
