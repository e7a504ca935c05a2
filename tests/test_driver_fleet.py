"""The agent fleet and connections per client: schedules and drops with a fake engine, own
connections counted by real HTTP/1.1 and HTTP/2 servers, the open-files refusal before any
load, and the fleet scenario driven against the embedded target."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.loopback import LoopbackServer
from tests.test_driver_executors import FakeEngine
from tests.test_driver_http2 import Oracle, tls  # noqa: F401 - the module's TLS fixture
from workbench import driver, scenarios, seed
from workbench.driver import DriveSpec, RequestTemplate, limits, merge_reports, run_shard
from workbench.driver import schedule as fleet_schedule
from workbench.errors import WorkbenchError


def fleet_spec(agents: int, url: str = "http://fake", **kw) -> DriveSpec:
    templates = []
    for i in range(agents):
        templates += [RequestTemplate("POST", f"/agents/{i}/heartbeat", "heartbeat", "{}"),
                      RequestTemplate("GET", f"/agents/{i}/work", "work_poll")]
    settings = {"duration_s": 1.2, "heartbeat_s": 0.6, "poll_s": 0.3, "max_vus": 2 * agents}
    return DriveSpec(url, tuple(templates), executor="agent-fleet", agents=agents,
                     **(settings | kw))


def run_fake(tmp_path, spec, engine=None):
    engine = engine or FakeEngine()
    report = run_shard(spec, tmp_path, engine=engine, handle_signals=False)
    rows = pq.read_table(tmp_path / "requests.parquet").to_pandas()
    return engine, merge_reports(spec, [report]), rows


@pytest.mark.parametrize("start", ["spread", "fleet_restart"])
def test_every_agent_heartbeats_once_per_two_polls_and_all_start_at_once(tmp_path, start):
    spec = fleet_spec(20, fleet_start=start, start_window_s=0.1)
    engine, result, rows = run_fake(tmp_path, spec)
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    assert result["planned"] == result["scheduled"] == 20 * (2 + 4)
    assert result["by_tag"]["heartbeat"]["count"] * 2 == result["by_tag"]["work_poll"]["count"]
    assert sorted(engine.sent) == sorted(
        [f"/agents/{i}/heartbeat" for i in range(20)] * 2 + [f"/agents/{i}/work"
                                                            for i in range(20)] * 4)
    heartbeats = np.sort(rows.loc[rows["tag"].astype(str) == "heartbeat", "intended_ns"])
    last_first = (heartbeats[19] - result["t0_epoch_ns"]) / 1e9  # the 20 agents' first ones
    if start == "fleet_restart":  # every agent's first requests inside the window
        assert last_first < 0.1
    else:  # starts spread evenly over one heartbeat interval: the last at 19/20 of it
        assert last_first == pytest.approx(0.57, abs=1e-6)


def test_a_request_due_while_the_agents_last_one_of_its_kind_is_in_flight_is_dropped(tmp_path):
    spec = fleet_spec(3, duration_s=1.2)
    engine, result, rows = run_fake(tmp_path, spec, FakeEngine(delay_s=0.45))
    # each poll takes 0.45 s, so of an agent's polls at 0, 0.3, 0.6, 0.9 every second one is
    # still waiting for the previous answer; heartbeats (0.6 s apart) never are
    assert result["by_tag"]["work_poll"]["dropped"] == 6
    assert result["by_tag"]["heartbeat"]["dropped"] == 0
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    assert not result["valid"]


def test_the_schedule_of_shards_is_the_whole_fleets_split_by_agent():
    spec = fleet_spec(7, fleet_start="spread")
    whole = fleet_schedule.fleet_events(spec)
    parts = [fleet_schedule.fleet_events(spec, k, 3) for k in range(3)]
    assert sorted(np.concatenate([p[1] for p in parts]).tolist()) == sorted(whole[1].tolist())
    for k, (_, templates) in enumerate(parts):
        assert {t // 2 % 3 for t in templates.tolist()} == {k}


def test_bad_fleet_specs_are_refused_with_every_problem_named():
    spec = fleet_spec(2, fleet_start="herd", poll_s=0.0)
    with pytest.raises(WorkbenchError, match="poll_s must be positive.*unknown fleet start"):
        spec.validate()
    with pytest.raises(WorkbenchError, match="2 request templates per agent"):
        DriveSpec("http://x", spec.templates[:3], executor="agent-fleet", agents=2,
                  duration_s=1.0).validate()


def test_each_agent_gets_its_own_http2_connection_and_handshakes_are_counted(tls, tmp_path):  # noqa: F811
    with Oracle(tls) as srv:
        spec = DriveSpec(srv.url, tuple(
            RequestTemplate("GET", "/tiny", tag) for _ in range(12)
            for tag in ("heartbeat", "work_poll")), executor="agent-fleet", agents=12,
            max_vus=24, duration_s=1.2, heartbeat_s=0.6, poll_s=0.3, ca_file=srv.ca_file,
            protocol="h2", connection_per_client=True, fleet_start="fleet_restart",
            start_window_s=0.2)
        result = merge_reports(spec, [run_shard(spec, tmp_path, handle_signals=False)])
        served = srv.connections
    assert served == 12 and result["failed"] == 0
    conns = result["connections"]
    assert conns["opened"] == conns["clients"] == 12 and conns["open_failed"] == 0
    assert conns["handshake_ms"]["p50"] > 0
    assert result["protocol"] == "h2" and result["completed"] == 12 * 6


@pytest.mark.parametrize("protocol", ["h1", "h2"])
def test_connection_per_client_gives_each_vu_its_own_connection(tls, tmp_path, protocol):  # noqa: F811
    template = (RequestTemplate("GET", "/tiny" if protocol == "h2" else "/delay?ms=1", "t"),)
    settings = dict(executor="constant-vus", vus=5, max_vus=5, duration_s=0.5,
                    connection_per_client=True, protocol=protocol)
    if protocol == "h2":
        with Oracle(tls) as srv:
            spec = DriveSpec(srv.url, template, ca_file=srv.ca_file, **settings)
            report = run_shard(spec, tmp_path, handle_signals=False)
            assert srv.connections == 5
    else:
        with LoopbackServer() as srv:
            spec = DriveSpec(srv.url, template, **settings)
            report = run_shard(spec, tmp_path, handle_signals=False)
    assert report["connections"]["opened"] == 5 and report["connections"]["clients"] == 5
    assert report["failed"] == 0 and report["completed"] > 5


def test_arrival_rate_vus_each_send_on_their_own_connection(tmp_path):
    with LoopbackServer() as srv:
        spec = DriveSpec(srv.url, (RequestTemplate("GET", "/delay?ms=1", "t"),), rate=50.0,
                         duration_s=0.5, max_vus=4, connection_per_client=True)
        report = run_shard(spec, tmp_path, handle_signals=False)
    assert report["connections"]["opened"] == 4 and report["failed"] == 0
    assert report["scheduled"] == report["completed"] + report["failed"] + report["dropped"]


def test_a_fleet_beyond_the_open_files_limit_is_refused_before_any_load(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(limits, "open_files_limit", lambda: (1024, 1024))
    spec = fleet_spec(2000, url="https://127.0.0.1:9", connection_per_client=True)
    with pytest.raises(WorkbenchError) as refused:
        driver.drive(spec, tmp_path, shards=1)
    message = str(refused.value)
    assert "2,256 open files" in message and "open-files limit is 1,024" in message
    assert "ulimit -Hn 2256" in message and "--shards 3" in message
    assert not (tmp_path / "requests.parquet").exists()
    assert driver.launch.auto_shards(spec) == 3  # enough processes by default
    limits.check_limits(spec, 3)


def test_loopback_shards_connect_from_their_own_source_address():
    spec = fleet_spec(4, url="https://127.0.0.1:8443", connection_per_client=True)
    assert [limits.source_host(spec, k) for k in range(3)] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert limits.source_host(fleet_spec(4, url="https://certctl.example:8443",
                                         connection_per_client=True), 1) is None
    assert limits.source_host(fleet_spec(4, url="https://127.0.0.1:8443"), 1) is None


def test_the_fleet_scenario_on_the_embedded_target(embedded_target, target_token, tmp_path):
    fleet = scenarios.get("agent_fleet")
    params = fleet.params_for("smoke", {"fleet_size": 40, "duration_s": 6.0})
    fleet.seed(embedded_target.dsn, params)
    spec = DriveSpec(embedded_target.url, fleet.templates(params),
                     **fleet.executor_settings(params), ca_file=embedded_target.ca_file,
                     token_env="FLEET_TEST_TOKEN", scenario="agent_fleet")
    result = driver.drive(spec, tmp_path, env={"FLEET_TEST_TOKEN": target_token},
                          echo=lambda line: None)
    assert result["protocol"] == "h2" and result["failed"] == 0
    assert result["connections"]["opened"] >= 40 == result["connections"]["clients"]
    assert result["by_tag"]["work_poll"]["count"] == 2 * result["by_tag"]["heartbeat"][
        "count"] == 2 * 40
    assert result["response_totals"]["work_poll"]["count"] == 0  # the fleet has no jobs
    assert seed.fixture_number(1) in spec.templates[0].path


def test_the_stand_ins_work_poll_answers_an_unknown_agent_as_certctl_does(client, auth):
    response = client.get("/api/v1/agents/ag-nobody/work", headers=auth)
    assert response.status_code == 500
    assert response.json()["message"] == "Failed to get pending work"
