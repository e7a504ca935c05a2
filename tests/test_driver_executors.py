"""Executors with a fake engine (the seam the driver offers): iterations, steps, think time,
drops, success rules and response sums, exactly and without sockets."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow.parquet as pq
import pytest
from hdrh.histogram import HdrHistogram

from workbench.analyse import hdr
from workbench.driver import DriveSpec, RequestTemplate, merge_reports, run_shard
from workbench.errors import WorkbenchError


class FakeEngine:
    """Answers every request after ``delay_s`` with the status its path names (/s/429)."""

    name = "fake"
    authority = "fake"

    def __init__(self, delay_s: float = 0.001, body: bytes = b'{"n": 2, "m": 0.5}') -> None:
        self.delay_s, self.body = delay_s, body
        self.sent: list[str] = []
        self.warm = None

    def prepare(self, method, path, headers, body, want_body=False, want_head=False):
        return path, want_body

    async def start(self, warm: int = 0) -> None:
        self.loop, self.warm = asyncio.get_running_loop(), warm

    def send(self, request, done) -> None:
        path, want_body = request
        self.sent.append(path)
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/s/") else 200
        ctype = b"application/problem+json" if status == 429 else b"application/json"
        self.loop.call_later(self.delay_s, done, status, ctype, len(self.body),
                             self.body if want_body else None, 0, None)

    async def close(self) -> None:
        pass


def run_fake(tmp_path, spec: DriveSpec, engine: FakeEngine | None = None):
    engine = engine or FakeEngine()
    report = run_shard(spec, tmp_path, engine=engine, handle_signals=False)
    result = merge_reports(spec, [report])
    rows = pq.read_table(tmp_path / "requests.parquet").to_pandas()
    return engine, result, rows.sort_values(["intended_ns", "send_ns"]).reset_index(drop=True)


ABC = tuple(RequestTemplate("GET", f"/{c}", c) for c in "abc")


def test_constant_vus_iterations_take_steps_in_turn_then_think(tmp_path):
    spec = DriveSpec("http://fake", ABC, executor="constant-vus", vus=1, steps=2,
                     sleep_s=0.05, duration_s=0.5)
    engine, result, rows = run_fake(tmp_path, spec)
    iterations = result["iterations"]["scheduled"]
    assert 7 <= iterations <= 10  # 0.5 s / (2 x 1 ms + 50 ms)
    assert result["scheduled"] == 2 * iterations == len(rows) == result["completed"]
    # iteration k sends templates[(2k) % 3] and [(2k + 1) % 3]: a b | c a | b c | a b ...
    assert engine.sent == ["/a", "/b", "/c"] * (iterations * 2 // 3) + ["/a", "/b", "/c"][
        :iterations * 2 % 3]
    # step 2 is intended when step 1 ended; the next iteration after the think time
    first, second = rows.iloc[0::2].reset_index(drop=True), rows.iloc[1::2].reset_index(drop=True)
    assert (second["intended_ns"] == first["end_ns"]).all()
    gaps = first["intended_ns"].iloc[1:].to_numpy() - second["end_ns"].iloc[:-1].to_numpy()
    assert (gaps >= 48_000_000).all()  # asyncio timers may fire up to ~1 ms early
    assert engine.warm == 1 and result["offered_rate"] is None and result["valid"]


def test_open_loop_iterations_with_steps_and_drops_keep_the_invariant(tmp_path):
    # one VU, 50 ms per step: most arrivals at 100/s find it busy and drop both their steps
    spec = DriveSpec("http://fake", ABC, rate=100, duration_s=0.5, steps=2, max_vus=1)
    _, result, rows = run_fake(tmp_path, spec, FakeEngine(delay_s=0.05))
    assert result["iterations"]["scheduled"] == 50 and result["planned"] == 100
    assert result["scheduled"] == 100 == len(rows)
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    assert result["dropped"] == 2 * result["iterations"]["dropped"] > 60
    dropped = rows[rows["error"] == "dropped"]
    assert dropped["send_ns"].isna().all() and dropped["end_ns"].isna().all()
    # a dropped arrival i still names the templates it would have sent
    assert set(dropped["tag"].astype(str)) == {"a", "b", "c"}
    assert not result["valid"] and "dropped" in result["invalid_reasons"][0]


@pytest.mark.parametrize("delay_s", [0.02, 0.3])
def test_an_arrival_is_dropped_exactly_when_every_vu_is_busy_and_names_its_template(
        tmp_path, delay_s):
    """Drops are counted in bulk (no wake per arrival once every VU is busy), yet each one is
    still an arrival that came while every VU was busy, recorded with its own template; a
    hold longer than the coarse wake (0.3 s) still ends the schedule with every arrival."""
    spec = DriveSpec("http://fake", ABC, rate=2000, duration_s=0.5, max_vus=2)
    _, result, rows = run_fake(tmp_path, spec, FakeEngine(delay_s=delay_s))
    assert result["scheduled"] == 1000 == len(rows)
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    assert result["dropped"] == result["iterations"]["dropped"] > 900
    # row k is arrival k (sorted by intended start): it names templates[k % 3], sent or not
    assert list(rows["tag"].astype(str)) == ["abc"[k % 3] for k in range(1000)]
    # each drop came while both VUs held the two arrivals sent last before it (a constant
    # hold: those end last), give or take the 0.5 ms from a response to its VU being free
    ends: list[int] = []
    for row in rows.itertuples():
        if row.error == "dropped":
            assert len(ends) >= 2 and min(ends[-2:]) >= row.intended_ns - 500_000
        else:
            ends.append(int(row.end_ns))


def test_expect_decides_success_and_kinds_split_by_status_and_type(tmp_path):
    templates = (RequestTemplate("GET", "/s/200", "plain"),
                 RequestTemplate("GET", "/s/429", "acme", expect=(200, 429)),
                 RequestTemplate("GET", "/s/200", "strict", expect=(201,)),
                 RequestTemplate("GET", "/s/503", "down"))
    _, result, _ = run_fake(tmp_path, DriveSpec("http://fake", templates, rate=80,
                                                duration_s=0.5))
    assert result["scheduled"] == 40
    assert result["errors"] == {"http_5xx": 10, "unexpected_status": 10}
    assert result["by_tag"]["acme"]["failed"] == 0 and result["by_tag"]["strict"]["failed"] == 10
    assert result["response_kinds"]["acme"] == {"429 application/problem+json": 10}
    assert result["response_kinds"]["down"] == {"503 application/json": 10}
    assert set(result["histograms"]["acme"]) == {"4xx"}
    assert set(result["histograms"]["down"]) == {"5xx"}


def test_sum_fields_are_summed_per_tag(tmp_path):
    templates = (RequestTemplate("POST", "/bulk", "bulk", "{}", sum_fields=("n", "m", "absent")),
                 RequestTemplate("GET", "/other", "other"))
    _, result, _ = run_fake(tmp_path, DriveSpec("http://fake", templates, rate=40,
                                                duration_s=0.5))
    assert result["response_totals"] == {"bulk": {"n": 20, "m": 5.0, "absent": 0}}


def test_record_array_equals_record_value_one_by_one():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(0, 5000, 3000), rng.lognormal(9, 2, 3000).astype(int),
                             [0, 1, 2047, 2048, 2049, 10**9, 3_600_000_000]])
    by_loop, by_array = hdr.new(), hdr.new()
    for v in values:
        by_loop.record_value(int(v))
    hdr.record_array(by_array, values)
    assert by_array.get_total_count() == by_loop.get_total_count() == len(values)
    assert by_array.get_min_value() == by_loop.get_min_value()
    assert by_array.get_max_value() == by_loop.get_max_value()
    assert by_array.equals(by_loop)
    assert hdr.encode(by_array) == hdr.encode(by_loop)
    for q in (50, 90, 99, 99.9):
        assert by_array.get_value_at_percentile(q) == by_loop.get_value_at_percentile(q)


def test_histograms_merge_by_adding_counts():
    rng = np.random.default_rng(3)
    a, b = rng.integers(1, 10**6, 5000), rng.integers(1, 10**7, 3000)
    ha, hb, hab = hdr.new(), hdr.new(), hdr.new()
    hdr.record_array(ha, a)
    hdr.record_array(hb, b)
    hdr.record_array(hab, np.concatenate([a, b]))
    merged = hdr.merge([hdr.encode(ha), hdr.encode(hb)])
    assert merged.equals(hab) and isinstance(merged, HdrHistogram)
    assert hdr.status_class(0) == "error" and hdr.status_class(204) == "2xx"
    assert hdr.status_class(429) == "4xx" and hdr.status_class(503) == "5xx"


@pytest.mark.parametrize("executor", ["constant-arrival-rate", "constant-vus"])
def test_timing_identity_holds_for_every_row(tmp_path, executor):
    spec = DriveSpec("http://fake", ABC, rate=200, vus=3, duration_s=0.3, executor=executor)
    _, result, rows = run_fake(tmp_path, spec)
    assert ((rows["end_ns"] - rows["intended_ns"])
            == (rows["end_ns"] - rows["send_ns"]) + (rows["send_ns"] - rows["intended_ns"])).all()
    assert (rows["send_ns"] >= rows["intended_ns"]).all()
    # epoch nanoseconds: within a minute of the run's UTC start
    assert abs(int(rows["intended_ns"].min()) - result["t0_epoch_ns"]) < 60e9


def test_executors_are_registered_by_name_and_a_spec_finds_its_own():
    from workbench.driver.executors import (
        AgentFleet,
        ConstantArrivalRate,
        ConstantVUs,
        RampingArrivalRate,
        Scripted,
    )
    from workbench.driver.spec import EXECUTORS, executor_type

    specs = {
        "constant-arrival-rate": DriveSpec("http://x", ABC, rate=1, duration_s=1),
        "ramping-arrival-rate": DriveSpec("http://x", ABC, executor="ramping-arrival-rate",
                                          stages=((1.0, 5.0),)),
        "constant-vus": DriveSpec("http://x", ABC, executor="constant-vus", vus=1,
                                  duration_s=1),
        "agent-fleet": DriveSpec("http://x", ABC[:2], executor="agent-fleet", agents=1,
                                 duration_s=1),
    }
    assert set(specs) == set(EXECUTORS)
    classes = {name: executor_type(spec) for name, spec in specs.items()}
    assert classes == {"constant-arrival-rate": ConstantArrivalRate,
                       "ramping-arrival-rate": RampingArrivalRate,
                       "constant-vus": ConstantVUs, "agent-fleet": AgentFleet}
    assert all(cls.name == name for name, cls in classes.items())
    scripted = DriveSpec("http://x", ABC, executor="constant-vus", vus=1, duration_s=1,
                         script="any.module:factory")  # not loaded here
    assert executor_type(scripted) is Scripted and scripted.kind == "scripted"
    assert not Scripted.open_loop and ConstantArrivalRate.open_loop


def test_every_problem_of_a_spec_is_named_at_once():
    spec = DriveSpec("ftp://x", (RequestTemplate("GET", "no-slash", "t"),), rate=0,
                     duration_s=-1, steps=0)
    problems = spec.problems()
    assert len(problems) == 5, problems
    for needle in ("must start with http://", "rate must be a positive", "duration must be",
                   "steps per iteration", "path must start with /"):
        assert sum(needle in p for p in problems) == 1, needle
    with pytest.raises(WorkbenchError, match="; ") as err:
        spec.validate()
    assert "\n" not in str(err.value)
