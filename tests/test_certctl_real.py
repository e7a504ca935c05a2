"""Opt-in: ``workbench target up --certctl`` on a real certctl checkout named by ``CERTCTL_SRC``
(a git clone of certctl; nothing of it is kept here). Skipped without it.

It builds the checkout (cached per commit in a private state folder), runs it with the benchmark
profile on the embedded PostgreSQL, checks that the server names its build, that the ARI issuer
fix left ``iss-local`` alone so every seeded certificate's renewal-info answers 200, that
acme_burst runs at smoke size with no --target and no exports (every request
answered as expected), and that ``down`` leaves no
certctl and no PostgreSQL.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest

from tests.loopback import free_port
from workbench import scenarios
from workbench.run import launcher
from workbench.scenarios import acme_burst
from workbench.target import certctl, embedded, preflight

SRC = os.environ.get("CERTCTL_SRC", "")
pytestmark = pytest.mark.skipif(not SRC, reason="opt-in: export CERTCTL_SRC=<a certctl "
                                                "checkout> to build and run the real server")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    state = tmp_path_factory.mktemp("real-certctl")
    try:
        made = certctl.build(SRC, state=state)
        yield state, made, certctl.up(made, state, port=free_port())
    finally:
        embedded.down(state)


@pytest.fixture()
def env(up, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(up[0]))
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    for name in ("CERTCTL_TOKEN", "CERTCTL_DSN", "CERTCTL_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    return up


def test_the_server_names_its_build(env):
    _, made, info = env
    describe = subprocess.run(["git", "-C", SRC, "describe", "--tags", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "-C", SRC, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    resolved = preflight.resolve_target()
    identity = preflight.preflight(resolved, preflight.token_for(resolved), traps=())
    assert (identity["kind"], identity["version"], identity["commit"]) == (
        "certctl", describe, head)
    assert not identity["standin"] and made.module == certctl.module_path(Path(SRC) / "go.mod")
    status = embedded.status()
    assert (status["version"], status["commit"], status["database"]) == (
        describe, head, info.database)


def test_only_iss_local_is_enabled_so_ari_finds_every_fixture(env):
    _, _, info = env
    socket_dir = embedded.start_postgres(Path(info.pg_pgdata))
    with psycopg.connect(embedded.postgres_url(socket_dir, info.database)) as conn:
        enabled = conn.execute("SELECT id FROM issuers WHERE enabled").fetchall()
    assert enabled == [("iss-local",)]
    burst = scenarios.get("acme_burst")
    params = burst.params_for("smoke", {"ari_size": 21})
    burst.seed(info.dsn, params)
    token = embedded.read_token()
    with httpx.Client(base_url=info.url, timeout=10.0,
                      verify=ssl.create_default_context(cafile=info.ca_file),
                      headers={"Authorization": f"Bearer {token}"}) as client:
        statuses = [client.get(f"/acme/profile/{params['profile_id']}/renewal-info/{cert_id}")
                    .status_code for cert_id in acme_burst.ari_cert_ids(21)]
    assert statuses == [200] * 21  # with seven issuers enabled, about 6 in 7 answer 404


def test_acme_burst_runs_on_it_with_no_target_and_no_exports(env):
    """Every request answered as expected (ARI 200 for the fixtures); latency thresholds are
    left to the machine (a busy one breaches them, which says nothing about this path)."""
    run_dir, _ = launcher.execute("acme_burst", "smoke")
    record = json.loads((run_dir / "record.json").read_text())
    assert record["target"]["kind"] == "certctl" and record["run"]["target_exit"] is None
    assert record["load"]["completed"] > 0 and record["load"]["failed"] == 0
    statuses = pd.read_parquet(run_dir / "requests.parquet", columns=["tag", "status"])
    assert set(statuses[statuses["tag"] == "renewal_info"]["status"]) == {200}


def test_down_leaves_no_certctl_and_no_postgresql(env):
    state, made, info = env
    postmaster = embedded.status()["pg_pid"]
    embedded.down(state)
    assert not embedded.server_alive(info) and embedded.running(postmaster) is None
