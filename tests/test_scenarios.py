"""The scenario registry, certctl-trap preflight, and `workbench run all` end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import papermill
import pytest
import sqlalchemy as sa

from workbench import scenarios
from workbench.analyse import analysis
from workbench.driver import DriveSpec
from workbench.errors import WorkbenchError
from workbench.paths import notebooks_dir
from workbench.run import suite
from workbench.scenarios import acme_burst, bulk_renewal
from workbench.target import embedded, preflight

# --- registry ----------------------------------------------------------------------------------


def test_the_registry_finds_one_module_per_scenario():
    """Every module of the package that does not start with ``_`` is a scenario of its name."""
    modules = sorted(p.stem for p in Path(scenarios.__file__).parent.glob("*.py")
                     if not p.stem.startswith("_"))
    assert scenarios.names() == modules
    assert {"agent_storm", "bulk_renewal", "acme_burst", "api_tier", "acme_flow",
            "acme_orders"} <= set(modules)
    for name in modules:
        assert scenarios.get(name).name == name
    with pytest.raises(WorkbenchError, match="unknown scenario 'nope'; choose one of acme_burst"):
        scenarios.get("nope")


def test_a_module_without_its_scenario_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "wb_stray_scenarios"
    package.mkdir()
    (package / "stray.py").write_text("SCENARIO = None\n")
    monkeypatch.setattr(scenarios, "__path__", [str(package)])
    monkeypatch.setattr(scenarios, "__name__", package.name)
    monkeypatch.syspath_prepend(str(tmp_path))
    scenarios._registry.cache_clear()
    try:
        with pytest.raises(WorkbenchError, match=r"scenarios/stray.py must define SCENARIO"):
            scenarios.names()
    finally:
        monkeypatch.undo()
        scenarios._registry.cache_clear()
    assert "stray" not in scenarios.names()


@pytest.mark.parametrize("name", scenarios.names())
def test_each_scenario_declares_complete_profiles_and_valid_thresholds(name):
    spec = scenarios.get(name)
    for profile in scenarios.PROFILES:
        assert set(spec.defaults(profile)) == set(spec.takes)
    assert spec.defaults("smoke")["duration_s"] < spec.defaults("canonical")["duration_s"]
    assert analysis.parse_thresholds(spec.thresholds)
    assert spec.title and spec.description and spec.sends


@pytest.mark.parametrize("name", scenarios.names())
@pytest.mark.parametrize("profile", scenarios.PROFILES)
def test_every_profile_makes_a_valid_drive_spec(name, profile):
    spec = scenarios.get(name)
    params = spec.defaults(profile)
    drive = DriveSpec(base_url="https://127.0.0.1:1", templates=spec.templates(params),
                      **spec.executor_settings(params))
    drive.validate()
    assert drive.executor == spec.executor and drive.steps == spec.steps


@pytest.mark.parametrize("name", scenarios.names())
def test_the_parameters_cell_holds_the_smoke_profile_and_default_thresholds(name):
    """What papermill reads from the committed notebook is the module's smoke profile."""
    spec = scenarios.get(name)
    found = papermill.inspect_notebook(str(notebooks_dir() / spec.notebook))
    defaults = {k: eval(v["default"]) for k, v in found.items()}  # noqa: S307 - our literals
    assert list(found) == ["target_url", "ca_file", "insecure", "profile", *spec.takes,
                           "thresholds", "run_dir", "seed_fixtures"]
    assert {k: defaults[k] for k in spec.takes} == spec.defaults("smoke")
    assert defaults["thresholds"] == (None if spec.thresholds_for else  # from the params
                                      {k: list(v) for k, v in spec.thresholds.items()})
    assert defaults["profile"] == "smoke"


def test_profile_of_names_a_custom_run_and_what_differs():
    spec = scenarios.get("agent_storm")
    canonical = spec.defaults("canonical")
    assert spec.profile_of("canonical", canonical) == {
        "profile": "canonical", "profile_base": "canonical", "profile_differs": {}}
    smoke_sized = spec.params_for("canonical", {"duration_s": 10.0, "fleet_size": 500})
    assert spec.profile_of("canonical", smoke_sized) == {
        "profile": "custom", "profile_base": "canonical",
        "profile_differs": {"duration_s": {"profile": 300.0, "run": 10.0},
                            "fleet_size": {"profile": 5000, "run": 500}}}


def test_bulk_templates_criteria_and_ids_modes():
    spec = scenarios.get("bulk_renewal")
    criteria = spec.templates(spec.params_for("smoke"))
    assert len(criteria) == 1
    assert json.loads(criteria[0].body) == {"team_id": "t-platform", "issuer_id": "iss-local"}
    assert criteria[0].expect == (200,) and criteria[0].sum_fields == bulk_renewal.TOTALS
    ids = spec.templates(spec.params_for("smoke", {"bulk_size": 120, "mode": "ids",
                                                   "size_to_run": False}))
    batches = [json.loads(t.body)["certificate_ids"] for t in ids]
    assert [len(b) for b in batches] == [50, 50, 20]
    assert sum(batches, []) == bulk_renewal.certificate_ids(120)


def test_ids_mode_sizes_the_fleet_to_the_run_so_no_call_resends_a_certificate():
    spec = scenarios.get("bulk_renewal")
    params = spec.params_for("smoke", {"mode": "ids", "rate": 5.0, "duration_s": 4.1})
    assert bulk_renewal.fleet_size(params) == 21 * 50  # ceil(5/s x 4.1 s) calls of 50
    batches = [json.loads(t.body)["certificate_ids"] for t in spec.templates(params)]
    assert len(batches) == 21 and {len(b) for b in batches} == {50}
    assert len(set(sum(batches, []))) == 1050
    assert spec.fixture_sizes(params) == {"certificates": 1050}
    # a larger bulk_size is kept; criteria mode is never resized; the bound holds
    assert bulk_renewal.fleet_size(params | {"bulk_size": 5000}) == 5000
    assert bulk_renewal.fleet_size(params | {"mode": "criteria"}) == 200
    assert bulk_renewal.fleet_size(params | {"duration_s": 1e6}) == 1_000_000


def test_acme_iterations_cycle_through_the_ari_fixture():
    burst = scenarios.get("acme_burst")
    templates = burst.templates(burst.params_for("smoke", {"ari_size": 3, "profile_id": "p"}))
    assert [(t.method, t.tag) for t in templates[:3]] == [
        ("GET", "directory"), ("HEAD", "new_nonce"), ("GET", "renewal_info")]
    assert templates[0].path == "/acme/profile/p/directory"
    assert [t.path.rsplit("/", 1)[1] for t in templates[2::3]] == acme_burst.ari_cert_ids(3)
    flow = scenarios.get("acme_flow")
    renewal_info = flow.templates(flow.defaults("smoke"))[2]
    assert renewal_info.path.endswith("/renewal-info/aaaa.bbbb")
    assert renewal_info.expect == (400, 404)


def test_api_tier_alternates_create_and_list_with_fresh_names():
    spec = scenarios.get("api_tier")
    templates = spec.templates(spec.params_for("smoke", {"rate": 10.0, "duration_s": 2.0}))
    creates = [t for t in templates if t.tag == "issuance_acceptance"]
    assert [t.tag for t in templates[:2]] == ["issuance_acceptance", "list_certificates"]
    assert len(creates) >= 10 and templates[1].path == "/api/v1/certificates?per_page=50"
    names = [json.loads(t.body)["name"] for t in creates]
    assert len(set(names)) == len(names) and all(n.startswith("loadtest-api-") for n in names)


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("bulk_renewal", {"mode": "all"}, "parameter mode must be one of criteria, ids"),
    ("acme_burst", {"profile_id": "../x"}, "parameter profile_id must be a non-empty name"),
    ("acme_burst", {"vus": 0}, "parameter vus must be an integer in 1..1000000"),
    ("acme_burst", {"sleep_s": -1}, "parameter sleep_s must not be negative"),
    ("bulk_renewal", {"bulk_size": 2.5}, r"bulk_size must be an integer in 1\.\.1000000,"),
    ("agent_storm", {"fleet_size": 1_000_001}, r"fleet_size must be an integer in 1\.\.1000000,"),
    ("agent_storm", {"rate": "fast"}, "parameter rate must be a number, got 'fast'"),
    ("agent_storm", {"max_vus": True}, "parameter max_vus must be an integer"),
    ("agent_storm", {"vus": 5}, "agent_storm takes no parameter vus; it takes rate, duration_s"),
])
def test_bad_parameters_are_refused_by_name(name, params, needle):
    spec = scenarios.get(name)
    with pytest.raises(WorkbenchError, match=needle):
        spec.params_for("smoke", params)


def test_a_burst_without_think_time_is_a_valid_closed_loop():
    spec = scenarios.get("acme_burst")
    assert spec.executor_settings(spec.params_for("smoke", {"sleep_s": 0}))["sleep_s"] == 0.0


def test_response_totals_and_429_counters_read_the_driver_result():
    result = {"response_totals": {"bulk_renew": {"total_matched": 100, "total_enqueued": 50,
                                                 "total_skipped": 50, "total_failed": 0}},
              "response_kinds": {"directory": {"200 application/json": 7,
                                               "429 text/plain; charset=utf-8": 3},
                                 "new_nonce": {"429 application/problem+json": 2}}}
    totals = bulk_renewal.RESPONSE_TOTALS.table(result)
    assert totals.loc["bulk_renew"].to_dict() == {"matched": 100, "enqueued": 50,
                                                  "skipped": 50, "failed": 0}
    assert bulk_renewal.RESPONSE_TOTALS.line(result, "bulk_renew") == (
        "matched=100 enqueued=50 skipped=50 failed=0")
    counters = scenarios.RATE_LIMITED.table(result)
    assert counters.to_dict("index") == {
        "directory": {"acme_rate_limited": 0, "rest_rate_limited": 3},
        "new_nonce": {"acme_rate_limited": 2, "rest_rate_limited": 0}}
    assert scenarios.RATE_LIMITED.line(result, "directory") == (
        "429 rateLimited=0 429 text/plain=3")
    assert scenarios.RATE_LIMITED.line(result, "renewal_info") == ""


@pytest.mark.parametrize(("failed", "server_errors", "named"), [
    (400, 400, True),  # certctl v2.0.71: every poll 500
    (400, 0, False),  # failed otherwise (timeouts, resets): no known cause to name
    (399, 400, False),  # some polls answered: not that bug
])
def test_the_fleet_note_names_certctls_work_poll_bug_beside_its_breach(failed, server_errors,
                                                                       named):
    from workbench.scenarios import agent_fleet

    result = {"by_tag": {"work_poll": {"count": 400, "failed": failed}},
              "errors": {"http_5xx": server_errors},
              "response_totals": {"work_poll": {"count": 0}}}
    line = agent_fleet.CONNECTIONS.line(result, "work_poll")
    assert line.startswith("jobs handed out {'count': 0}")
    assert ("a certctl bug, see docs/certctl-verified.md" in line) is named


# --- preflight: certctl's traps ----------------------------------------------------------------


@pytest.mark.parametrize(("status", "ctype", "body", "needle"), [
    (200, "text/html; charset=utf-8", "<!doctype html>", "dashboard shadows /acme/*"),
    (401, "text/plain; charset=utf-8", '{"error":"Invalid API key"}', "behind the Bearer"),
    (404, "application/problem+json", '{"detail":"profile not found"}', "does not exist"),
    (500, "application/problem+json", '{"detail":"ACME server error"}', "does not exist"),
    (404, "text/plain; charset=utf-8", "404 page not found", "has no ACME"),
    (200, "application/json", "{}", None),
])
def test_acme_reachability_traps(status, ctype, body, needle):
    """What certctl answers in each case, played by httpx's MockTransport."""
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer k"
        return httpx.Response(status, headers={"content-type": ctype}, text=body)

    with httpx.Client(base_url="https://certctl.test",
                      transport=httpx.MockTransport(handler)) as client:
        warning = preflight._acme_warning(client, "k", "prof-standard-tls")
    assert (warning is None) if needle is None else (needle in warning)


def seed_sized(dsn: str, name: str, **sizes: int) -> dict:
    spec = scenarios.get(name)
    return spec.seed(dsn, spec.params_for("smoke", sizes))


@pytest.fixture
def trapped_database(embedded_target):
    """A second enabled issuer, an Offline fixture agent and an Expiring fixture certificate."""
    engine = sa.create_engine(embedded_target.dsn)
    seed_sized(embedded_target.dsn, "agent_storm", fleet_size=5)
    seed_sized(embedded_target.dsn, "bulk_renewal", bulk_size=60)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO issuers (id, name, type, enabled) VALUES"
                             " ('iss-loadtest-extra', 'extra issuer', 'GenericCA', true)"))
        conn.execute(sa.text("UPDATE agents SET status = 'Offline'"
                             " WHERE id = 'ag-loadtest-00002'"))
        conn.execute(sa.text("UPDATE managed_certificates SET status = 'Expiring'"
                             " WHERE id = 'mc-loadtest-bulk-00005'"))
    yield embedded_target
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM issuers WHERE id = 'iss-loadtest-extra'"))
    seed_sized(embedded_target.dsn, "agent_storm", fleet_size=5)
    seed_sized(embedded_target.dsn, "bulk_renewal", bulk_size=60)
    engine.dispose()


def test_database_traps_are_warned_with_their_fixes(trapped_database):
    warnings = preflight.database_warnings(trapped_database.dsn)
    text = " | ".join(warnings)
    assert len(warnings) == 3, text
    assert "2 enabled issuers (iss-loadtest-extra, iss-local)" in text
    assert "about 1 time in 2" in text and "restart certctl" in text
    assert "touched 1 loadtest certificates" in text
    assert "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL=720h" in text
    assert "1 loadtest agents are Offline" in text
    assert "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL=24h" in text


def test_strict_refuses_before_any_load_in_one_line(trapped_database, embedded_env, tmp_path):
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "acme_burst", "--strict"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --strict refuses ") and out.stderr.count("\n") == 1
    assert "2 enabled issuers" in out.stderr and "UPDATE issuers SET enabled=false" in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing written


def test_each_scenario_is_refused_only_for_the_traps_that_spoil_it(trapped_database,
                                                                   embedded_env):
    target_, token = preflight.resolve_target(), embedded.read_token()
    checks = scenarios.get("agent_storm").preflight_args(
        scenarios.get("agent_storm").defaults("smoke"))
    with pytest.raises(WorkbenchError) as refused:
        preflight.preflight(target_, token, strict=True, **checks)
    assert "Offline" in str(refused.value) and "issuers" not in str(refused.value)
    flow = scenarios.get("acme_flow").preflight_args(scenarios.get("acme_flow").defaults("smoke"))
    assert preflight.preflight(target_, token, strict=True, **flow)["warnings"] == []


def test_without_strict_the_warnings_are_printed_and_the_run_goes_ahead(
        trapped_database, embedded_env):
    token = embedded.read_token()
    identity = preflight.preflight(preflight.resolve_target(), token)
    assert len(identity["warnings"]) == 3


# --- workbench run all --------------------------------------------------------------------------


def test_run_all_smoke_seeds_once_runs_every_scenario_and_writes_one_report(
        embedded_env, embedded_target_state, tmp_path, monkeypatch):
    token = embedded.read_token(embedded_target_state)
    monkeypatch.setenv("CERTCTL_TOKEN", token)  # as an operator would; must never be written
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "run", "all", "--profile",
                          "smoke", "-p", "duration_s", "2"], capture_output=True, text=True,
                         timeout=600)
    runs = tmp_path / "runs"
    [suite_dir] = [d for d in runs.iterdir() if "_all_" in d.name]
    summary = pd.read_csv(suite_dir / "summary.csv")
    # SLO verdicts are the machine's (a busy one may breach a smoke threshold); on any machine
    # the exit codes say which, and nothing fails for another reason
    assert out.returncode == (0 if summary["passed"].all() else 99), out.stderr[-3000:]
    assert (summary["exit_code"] == (~summary["passed"]).astype(int) * 99).all()
    for name in summary.loc[~summary["passed"], "scenario"].unique():  # a breach, not a crash
        run_dir = next(d for d in runs.iterdir() if f"_{name}_" in d.name)
        breached = json.loads((run_dir / "record.json").read_text())["thresholds"]
        assert not all(t["ok"] for t in breached), name
    pairs = set(zip(summary["scenario"], summary["endpoint"], strict=True))
    expected = set()
    for name in scenarios.certctl_names():  # every endpoint of every scenario run, with "all"
        spec = scenarios.get(name)
        tags = {t.tag for t in spec.templates(spec.params_for("smoke", {"duration_s": 2}))}
        expected |= {(name, tag) for tag in tags | ({"all"} if len(tags) > 1 else set())}
    assert pairs == expected
    assert {("acme_orders", "new_account"), ("acme_flow", "renewal_info"),
            ("bulk_renewal", "bulk_renew"), ("agent_storm", "heartbeat")} <= pairs
    assert (summary["failed"] == 0).all() and (summary["requests"] > 0).all()
    report = json.loads((suite_dir / "summary.json").read_text())
    assert report["passed"] == summary["passed"].all() and report["target"]["kind"] == "stand-in"
    assert "run all leaves out connector_handshake" in out.stderr
    assert "bulk_renew" in out.stdout and (suite_dir / "report.html").exists()

    results = {name: json.loads((runs / next(d.name for d in runs.iterdir()
                                             if f"_{name}_" in d.name) / "result.json")
                                .read_text()) for name in scenarios.certctl_names()}
    for name in scenarios.certctl_names():  # checked once, by `run all`, for every notebook
        run_dir = next(d for d in runs.iterdir() if f"_{name}_" in d.name)
        assert json.loads((run_dir / "preflight.json").read_text())["identity"]["url"] == (
            report["target"]["url"])
    # bulk_renewal: criteria mode matches the 50 oldest on every call; totals add up.
    bulk = results["bulk_renewal"]
    totals = bulk["response_totals"]["bulk_renew"]
    assert totals["total_matched"] == 50 * bulk["completed"] == 50 * 10  # 5/s for 2 s
    assert totals["total_matched"] == totals["total_enqueued"] + totals["total_skipped"]
    assert totals["total_enqueued"] >= 50 and totals["total_failed"] == 0
    assert "enqueued=" in summary.set_index("scenario").loc["bulk_renewal", "notes"]
    # acme_burst: every renewal-info found its fixture; no 429 of either kind.
    burst = results["acme_burst"]
    assert burst["response_kinds"]["renewal_info"] == {
        "200 application/json": burst["by_tag"]["renewal_info"]["count"]}
    assert burst["executor"] == "constant-vus" and burst["offered_rate"] is None
    # acme_flow: k6's synthetic id answers 404, the expected status.
    flow = results["acme_flow"]["response_kinds"]["renewal_info"]
    assert list(flow) == ["404 application/problem+json"]
    # api_tier: every create landed, with the run's own names.
    created = results["api_tier"]["by_tag"]["issuance_acceptance"]["count"]
    engine = sa.create_engine(embedded_env.dsn)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM managed_certificates"
                                      " WHERE name LIKE 'loadtest-api-%'")).scalar_one()
    engine.dispose()
    assert stored == created == 20  # 20/s for 2 s, every other request a create
    for path in runs.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_run_all_exits_non_zero_when_a_scenario_breaches(embedded_env, monkeypatch, capsys):
    """acme_flow against a profile that does not exist: preflight warns, the run breaches."""
    suite_dir, code = suite.run_all("smoke", overrides={"profile_id": "prof-missing",
                                                        "duration_s": 2.0}, names=["acme_flow"])
    assert code == 99  # a breach, as k6 exits
    assert "ACME profile 'prof-missing' most likely does not exist" in capsys.readouterr().err
    report = json.loads((suite_dir / "summary.json").read_text())
    assert report["passed"] is False
    assert {r["exit_code"] for r in report["rows"]} == {99}
    assert "FAILED" in (suite_dir / "report.html").read_text()


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"nonsense": 1}, "no scenario takes parameter nonsense; they take"),
    ({"fleet_size": 0}, "parameter fleet_size must be an integer in 1..1000000,"),
    ({"thresholds": {"http_req_failed": ["rate<0.1"]}}, "set them per scenario"),
])
def test_run_all_refuses_bad_parameters_before_any_load(embedded_env, tmp_path, overrides,
                                                        needle):
    with pytest.raises(WorkbenchError, match=re.escape(needle)):
        suite.run_all("smoke", overrides=overrides)
    assert not (tmp_path / "runs").exists()


def test_run_all_gives_a_parameter_only_to_the_scenarios_that_take_it():
    planned = scenarios.plan_all({"rate": 7.0}, scenarios.names())
    assert {name for name, own in planned.items() if own} == {
        name for name in scenarios.names() if "rate" in scenarios.get(name).takes}
    assert {"agent_storm", "api_tier", "bulk_renewal"} <= {n for n, own in planned.items() if own}
    assert all(own in ({}, {"rate": 7.0}) for own in planned.values())


def test_every_scenario_takes_a_protocol_and_connection_model_with_real_client_defaults():
    for name in scenarios.certctl_names():  # certctl's clients; the connector tier below
        scenario = scenarios.get(name)
        smoke = scenario.defaults("smoke")
        settings = scenario.executor_settings(smoke)
        assert settings["protocol"] == smoke["protocol"] in ("h1", "h2")
        assert settings["connection_per_client"] is smoke["connection_per_client"]
        # certctl's agents, CLI and k6 tier speak h2; certbot speaks HTTP/1.1 to ACME
        assert smoke["protocol"] == ("h1" if name.startswith("acme") else "h2"), name
        assert smoke["connection_per_client"] is name.startswith("agent"), name
        overridden = scenario.params_for("smoke", {"protocol": "h1"})
        assert scenario.executor_settings(overridden)["protocol"] == "h1"
        with pytest.raises(WorkbenchError, match="protocol must be one of h1, h2"):
            scenario.params_for("smoke", {"protocol": "h3"})


def test_a_scenario_without_a_protocol_or_with_extra_profiles():
    storm = scenarios.get("agent_storm")
    bare = tuple(p for p in storm.parameters if p.name != "protocol")
    with pytest.raises(WorkbenchError, match="parameters must include protocol"):
        dataclasses.replace(storm, parameters=bare)
    big = dataclasses.replace(storm, profiles=dict(storm.profiles) | {
        "huge": {"rate": 1.0, "duration_s": 1.0, "fleet_size": 9}})
    assert big.defaults("huge")["fleet_size"] == 9
    with pytest.raises(WorkbenchError, match="profiles must include smoke, canonical"):
        dataclasses.replace(storm, profiles={"smoke": storm.profiles["smoke"]})


# --- hooks: what a scenario owns reaches the core through them ----------------------------------


def test_a_run_s_warnings_come_from_the_scenario_that_made_it():
    exhausted = {"bulk_renew": {"total_matched": 100, "total_enqueued": 0, "total_skipped": 100,
                                "total_failed": 0}}
    [warning] = scenarios.result_warnings({"scenario": "bulk_renewal",
                                           "response_totals": exhausted})
    assert warning.startswith("bulk_renew: 100 of the 100 certificates matched (100%)")
    # a scenario without the hook, and a drive no scenario made, warn of nothing
    assert scenarios.result_warnings({"scenario": "agent_storm",
                                      "response_totals": exhausted}) == []
    assert scenarios.result_warnings({"scenario": "adhoc", "response_totals": exhausted}) == []
    assert scenarios.get("api_tier").warnings({"response_totals": exhausted}) == []


def test_a_backlog_names_a_timeout_parameter_the_scenario_takes():
    bulk = scenarios.get("bulk_renewal")
    assert bulk.backlog.timeout_s(bulk.defaults("smoke")) == 10.0
    assert bulk.backlog.timeout_s(bulk.params_for("smoke", {"drain_timeout_s": 0})) == 0
    with pytest.raises(WorkbenchError, match="timeout parameter wait_s must be one of its"):
        dataclasses.replace(bulk, backlog=dataclasses.replace(bulk.backlog,
                                                              timeout_param="wait_s"))


def test_the_scenario_a_hand_run_notebook_opens_on_is_registered():
    assert scenarios.get(scenarios.DEFAULT).name == scenarios.DEFAULT
