import json
import os
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer, free_port
from workbench.analyse import hdr
from workbench.driver import DriveSpec, RequestTemplate, drive, schedule_offsets_ns
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("rate,duration", [(167, 10), (5, 300), (1000, 2.5), (0.5, 3), (333.3, 1)])
def test_constant_schedule_has_r_times_d_evenly_spaced_arrivals(rate, duration):
    offsets = schedule_offsets_ns(rate, duration)
    assert abs(len(offsets) - rate * duration) <= 1
    assert offsets[0] == 0
    gaps = np.diff(offsets)
    assert np.all(np.abs(gaps - 1e9 / rate) <= 1)  # rounding to whole ns only
    assert offsets[-1] < duration * 1e9


def _spec(url, path, **kw):
    base = dict(base_url=url, templates=(RequestTemplate("GET", path, "t"),), rate=200,
                duration_s=1.0)
    return DriveSpec(**(base | kw))


def test_response_time_counts_from_intended_start_and_service_time_from_send(tmp_path):
    with LoopbackServer() as srv:
        result = drive(_spec(srv.url, "/delay?ms=20"), tmp_path, echo=lambda _: None)
    assert result["scheduled"] == 200 == result["completed"]
    assert 20 <= result["service_time_ms"]["p50"] < 40
    # response >= service, and the difference is exactly the schedule lag
    table = pq.read_table(tmp_path / "requests.parquet").to_pandas()
    response = table["end_ns"] - table["intended_ns"]
    service = table["end_ns"] - table["send_ns"]
    lag = table["send_ns"] - table["intended_ns"]
    assert (response == service + lag).all()
    assert (lag >= 0).all()
    assert set(table.columns) >= {"intended_ns", "send_ns", "end_ns", "status", "error", "tag"}


def test_invariant_holds_with_http_errors_connect_errors_and_drops(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with LoopbackServer() as srv:
        errors = drive(DriveSpec(base_url=srv.url, rate=100, duration_s=1.0, templates=(
            RequestTemplate("GET", "/status/200", "ok"),
            RequestTemplate("GET", "/status/500", "boom"),
            RequestTemplate("POST", "/status/429", "limited", "{}"),
            RequestTemplate("GET", "/status/404", "missing"))), tmp_path / "a",
            echo=lambda _: None)
        # one VU and a 200 ms response at 50/s: most arrivals find it busy
        drops = drive(_spec(srv.url, "/delay?ms=200", rate=50, max_vus=1), tmp_path / "b",
                      echo=lambda _: None)
    refused = drive(_spec(dead, "/", rate=50), tmp_path / "c", echo=lambda _: None)
    for r in (errors, drops, refused):
        assert r["scheduled"] == r["completed"] + r["failed"] + r["dropped"]
    assert errors["errors"] == {"http_5xx": 25, "http_429": 25, "http_4xx": 25}
    assert errors["completed"] == 25
    # HTTP errors measure the target: alone they never invalidate a run (a busy shared
    # machine can still delay the schedule, which is reported as such)
    assert not [r for r in errors["invalid_reasons"] if "schedule-lag" not in r]
    assert drops["dropped"] > 30 and not drops["valid"]
    assert any("dropped" in reason for reason in drops["invalid_reasons"])
    assert refused["errors"] == {"connect": 50}
    rows = pq.read_table(tmp_path / "b" / "requests.parquet").to_pandas()
    assert len(rows) == drops["scheduled"]
    assert (rows["error"] == "dropped").sum() == drops["dropped"]
    assert rows.loc[rows["error"] == "dropped", "send_ns"].isna().all()


def test_timeouts_are_counted_and_the_run_ends_on_time(tmp_path):
    with LoopbackServer() as srv:
        result = drive(_spec(srv.url, "/delay?ms=3000", rate=10, duration_s=1.0, timeout_s=0.3),
                       tmp_path, echo=lambda _: None)
    assert result["errors"] == {"timeout": 10}
    assert result["driver"]["wall_s"] < 3


def test_spec_with_token_never_writes_it(tmp_path, monkeypatch):
    with LoopbackServer() as srv:
        spec = _spec(srv.url, "/delay", rate=20, token_env="SECRET_TOKEN_ENV")
        drive(spec, tmp_path, env={"SECRET_TOKEN_ENV": "tok-do-not-leak-7731"},
              echo=lambda _: None)
    for path in tmp_path.rglob("*"):
        assert b"tok-do-not-leak-7731" not in path.read_bytes()
    written = json.loads((tmp_path / "spec.json").read_text())
    assert written["schema_version"] == 1 and written["spec"]["token_env"] == "SECRET_TOKEN_ENV"


def test_spec_json_with_the_query_body_and_headers_is_readable_by_its_owner_only(tmp_path):
    import stat

    with LoopbackServer() as srv:
        spec = _spec(srv.url, "/delay?q=query-in-clear", rate=10, templates=(RequestTemplate(
            "POST", "/bulk?q=query-in-clear", "t", '{"b": "body-in-clear"}',
            (("X-Trace", "header-in-clear"),)),))
        drive(spec, tmp_path, echo=lambda _: None)
    path = tmp_path / "spec.json"
    assert b"body-in-clear" in path.read_bytes()  # the driver's input: it must say what to send
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("field,value", [("rate", 0), ("rate", -5), ("duration_s", 0),
                                         ("duration_s", -1), ("max_vus", 0)])
def test_bad_load_shape_is_refused_before_anything_is_sent(tmp_path, field, value):
    with pytest.raises(WorkbenchError, match=field.split("_")[0].replace("max", "VUs")):
        drive(_spec("http://127.0.0.1:9", "/", **{field: value}), tmp_path)
    assert not (tmp_path / "requests.parquet").exists()


def test_429_shapes_are_told_apart_and_bulk_totals_add_up(tmp_path):
    from tests.loopback import LoopbackServer

    fields = ("total_matched", "total_enqueued", "total_skipped", "total_failed")
    templates = (RequestTemplate("POST", "/bulk", "bulk_renew", "{}", sum_fields=fields),
                 RequestTemplate("GET", "/problem429", "acme", expect=(200,)),
                 RequestTemplate("GET", "/text429", "rest"),
                 RequestTemplate("GET", "/chunked", "chunked", sum_fields=("total_matched",)))
    with LoopbackServer() as srv:
        result = drive(DriveSpec(base_url=srv.url, templates=templates, rate=80, duration_s=0.5),
                       tmp_path, echo=lambda _: None)
    assert result["scheduled"] == 40 and result["errors"] == {"http_429": 20}
    assert result["response_totals"] == {
        "bulk_renew": {"total_matched": 100, "total_enqueued": 70, "total_skipped": 20,
                       "total_failed": 10},
        "chunked": {"total_matched": 50}}
    assert result["response_kinds"]["acme"] == {"429 application/problem+json": 10}
    assert result["response_kinds"]["rest"] == {"429 text/plain": 10}
    assert result["response_kinds"]["bulk_renew"] == {"200 application/json": 10}
    assert set(result["histograms"]) == {"bulk_renew", "acme", "rest", "chunked"}
    assert set(result["histograms"]["acme"]) == {"4xx"}
    merged = sum(hdr.decode(b).get_total_count() for per in result["histograms"].values()
                 for b in per.values())
    assert merged == result["completed"] + result["failed"]


def test_hdr_percentiles_use_the_same_nearest_rank_as_the_exact_analysis():
    from workbench.analyse import hdr

    rng = np.random.default_rng(7)
    for n in (1, 7, 100, 1670, 5001):
        values = rng.integers(1, 2_000_000, n)
        hist = hdr.new()
        hdr.record_array(hist, values)
        for q in (50, 90, 95, 99, 99.9):
            exact = np.percentile(values, q, method="inverted_cdf")
            got = hdr.value_at_percentile(hist, q)
            assert exact <= got <= exact * 1.001 + 1, (n, q, exact, got)


def test_while_starting_runs_beside_the_started_driver_and_the_load_waits_for_it(tmp_path):
    seen: dict = {}

    def while_starting() -> None:
        seen["drivers"] = [p.cmdline() for p in psutil.Process(os.getpid()).children()
                           if "workbench.driver" in p.cmdline()]
        seen["returned_ns"] = time.time_ns()

    with LoopbackServer() as srv:
        result = drive(_spec(srv.url, "/status/200"), tmp_path, echo=lambda _: None,
                       while_starting=while_starting)
    assert len(seen["drivers"]) == 1  # its process was already starting
    assert result["t0_epoch_ns"] >= seen["returned_ns"]  # the load began after it returned
    assert result["scheduled"] == result["completed"]


def test_when_ready_runs_once_every_driver_waits_at_the_start_line(tmp_path):
    """The machine's calibration goes here: after the drivers' start-up (their imports, their
    warm-up, their core claimed), while they sit idle, and before the load."""
    seen: list = []

    def while_starting() -> None:
        seen.append(("starting", time.time_ns()))

    def when_ready() -> None:
        [child] = [p for p in psutil.Process(os.getpid()).children()
                   if "workbench.driver" in p.cmdline()]
        seen.append(("ready", time.time_ns(), child.cpu_times()))
        time.sleep(0.2)  # idle: it takes no CPU while it waits
        seen.append(("idle", child.cpu_times()))

    with LoopbackServer() as srv:
        result = drive(_spec(srv.url, "/status/200"), tmp_path, echo=lambda _: None,
                       while_starting=while_starting, when_ready=when_ready)
    assert [step[0] for step in seen] == ["starting", "ready", "idle"]
    (_, _, before), (_, after) = seen[1], seen[2]
    # waiting for its start line, it takes no CPU: the machine is quiet for what runs here
    assert (after.user + after.system) - (before.user + before.system) < 0.1
    assert result["t0_epoch_ns"] > seen[1][1]  # the load began after it
    assert result["scheduled"] == result["completed"]


def test_a_failing_when_ready_sends_no_load_and_leaves_no_driver(tmp_path):
    def when_ready() -> None:
        raise RuntimeError("at the start line")

    with LoopbackServer() as srv:
        with pytest.raises(RuntimeError, match="at the start line"):
            drive(_spec(srv.url, "/status/200"), tmp_path, echo=lambda _: None,
                  when_ready=when_ready)
    # the drivers saw their start line closed without a start: they sent nothing
    if (tmp_path / "requests.parquet").exists():
        assert pq.read_metadata(tmp_path / "requests.parquet").num_rows == 0
    assert not [p for p in psutil.Process(os.getpid()).children()
                if "workbench.driver" in p.cmdline()]


def test_a_failing_while_starting_sends_no_load_and_leaves_no_driver(tmp_path):
    def while_starting() -> None:
        raise RuntimeError("before the load")

    with LoopbackServer() as srv:
        with pytest.raises(RuntimeError, match="before the load"):
            drive(_spec(srv.url, "/status/200"), tmp_path, echo=lambda _: None,
                  while_starting=while_starting)
    assert not (tmp_path / "requests.parquet").exists()
    assert not [p for p in psutil.Process(os.getpid()).children()
                if "workbench.driver" in p.cmdline()]
