"""Opt-in: the fixtures and every registered scenario, at smoke size, against a real certctl.

Enabled by ``CERTCTL_BASE`` (the server's URL), ``CERTCTL_TOKEN`` (one of its API keys) and
``CERTCTL_DSN`` (its database, SQLAlchemy URL); ``CERTCTL_CA_FILE`` names the CA of a self-signed
server certificate. Without them the module is skipped. Start the server as
docs/certctl-by-hand.md describes (benchmark profile, fixtures seeded after boot); for a checkout
on this machine, tests/test_certctl_real.py runs the same path through `target up --certctl`.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl

import httpx
import pytest
import sqlalchemy as sa

from workbench import scenarios, seed
from workbench.run import launcher
from workbench.scenarios import _fleet
from workbench.target import preflight

BASE = os.environ.get("CERTCTL_BASE", "").rstrip("/")
TOKEN = os.environ.get("CERTCTL_TOKEN", "")
DSN = os.environ.get("CERTCTL_DSN", "")
CA_FILE = os.environ.get("CERTCTL_CA_FILE") or None

_missing = [name for name, value in (("CERTCTL_BASE", BASE), ("CERTCTL_TOKEN", TOKEN),
                                     ("CERTCTL_DSN", DSN)) if not value]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"real-certctl tests are opt-in: export {', '.join(_missing)} (see "
           "docs/certctl-by-hand.md)")

VERSION_FIELDS = {"version": str, "commit": str, "modified": bool, "build_time": str,
                  "go_version": str}


def _without_timings(seeded):
    """A seed report minus its durations, which differ from run to run."""
    if isinstance(seeded, dict):
        return {k: _without_timings(v) for k, v in seeded.items() if "second" not in k}
    return seeded


def _client() -> httpx.Client:
    verify = ssl.create_default_context(cafile=CA_FILE) if CA_FILE else True
    return httpx.Client(base_url=BASE, verify=verify, timeout=10.0)


@pytest.fixture(scope="module")
def real_target() -> preflight.Target:
    target = preflight.resolve_target(BASE, CA_FILE)
    assert target.dsn == DSN and not target.embedded
    return target


def test_the_server_is_certctl_and_takes_the_token(real_target):
    identity = preflight.preflight(real_target, TOKEN)
    assert identity["kind"] == "certctl" and not identity["standin"]
    with _client() as client:
        version = client.get("/api/v1/version")
        health = client.get("/health")
        ready = client.get("/ready")
    assert version.status_code == 200
    assert {k: type(v) for k, v in version.json().items()} == VERSION_FIELDS
    assert health.json() == {"status": "healthy"}
    assert ready.json() == {"status": "ready", "db": "reachable"}


def test_the_dsn_is_the_database_the_server_uses(real_target):
    storm = scenarios.get("agent_storm")
    storm.seed(DSN, storm.params_for("smoke", {"fleet_size": 1}))
    agent = _fleet.agent_ids(1)[0]
    marker = f"loadtest-probe-{secrets.token_hex(6)}.example.test"
    with _client() as client:  # a heartbeat writes the hostname it carries into agents
        response = client.post(f"/api/v1/agents/{agent}/heartbeat",
                               headers={"Authorization": f"Bearer {TOKEN}"},
                               json={"hostname": marker})
    assert response.status_code == 200
    engine = seed.engine_for(DSN)
    try:
        seed.check_certctl_schema(engine)
        with engine.connect() as conn:
            hostname = conn.execute(sa.text("SELECT hostname FROM agents WHERE id = :id"),
                                    {"id": agent}).scalar_one()
    finally:
        engine.dispose()
    assert hostname == marker


@pytest.mark.parametrize("name", scenarios.names())
def test_fixtures_load_unchanged_into_the_real_schema_and_reseed_idempotently(name):
    scenario = scenarios.get(name)
    params = scenario.defaults("smoke")
    first = scenario.seed(DSN, params)
    second = scenario.seed(DSN, params)  # idempotent: the same rows again, nothing added
    assert _without_timings(first) == _without_timings(second)


def test_heartbeats_on_the_seeded_fleet_answer_200():
    storm = scenarios.get("agent_storm")
    fleet = storm.defaults("smoke")["fleet_size"]
    storm.seed(DSN, storm.defaults("smoke"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _client() as client:
        statuses = [client.post(f"/api/v1/agents/{agent}/heartbeat", headers=auth).status_code
                    for agent in _fleet.agent_ids(fleet)]
        unauthenticated = client.post(f"/api/v1/agents/{_fleet.agent_ids(1)[0]}/heartbeat")
    assert statuses == [200] * fleet
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("name", scenarios.names())
def test_every_scenario_passes_at_smoke_size_against_the_real_server(
        name, real_target, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    run_dir, code = launcher.execute(name, "smoke", target_url=BASE, ca_file=CA_FILE)
    record_path = run_dir / "record.json"
    assert record_path.exists(), f"{name}: the notebook stopped before its record; see {run_dir}"
    record = json.loads(record_path.read_text())
    load = record["load"]
    assert load["scheduled"] == load["completed"] + load["failed"] + load["dropped"]
    failed = [f"{t['metric']} {t['threshold']} measured {t['value']}"
              for t in record["thresholds"] if not t["ok"]]
    assert code == 0, f"{name} on certctl: exit {code}, breached {failed}; see {run_dir}"
    with _client() as client:
        commit = client.get("/api/v1/version").json()["commit"]
    assert record["target"]["kind"] == "certctl" and record["target"]["commit"] == commit
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
