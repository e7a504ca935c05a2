"""Safety: no secret lands in any file a run writes; remote databases need explicit consent."""

from __future__ import annotations

import json

import pytest

from workbench import seed
from workbench.errors import WorkbenchError
from workbench.run import launcher

TOKEN = "tok-Distinctive-9f8e7d6c5b4a-NEVER-WRITE"
PASSWORD = "pw-Distinctive-0a1b2c3d-NEVER-WRITE"


def test_token_and_dsn_password_never_land_in_run_files(embedded_env, target_token, tmp_path,
                                                        monkeypatch):
    info = embedded_env  # the session's target: its token is random, as distinctive as any
    # trust auth on the socket ignores the password, so the DSN works and carries a secret
    dsn = info.dsn.replace("postgres@", f"postgres:{PASSWORD}@")
    # libpq reads sslpassword only to decrypt a client key, so it is a harmless secret here
    dsn += ("&" if "?" in dsn else "?") + f"sslpassword={PASSWORD}"
    monkeypatch.setenv("CERTCTL_TOKEN", target_token)
    monkeypatch.setenv("CERTCTL_DSN", dsn)
    run_dir, code = launcher.execute("agent_storm", "smoke", target_url=info.url,
                                     ca_file=info.ca_file,
                                     overrides={"duration_s": 2.0, "fleet_size": 100})
    record = json.loads((run_dir / "record.json").read_text())
    assert code == (0 if record["passed"] else 99)  # a busy machine may breach the smoke SLO
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"agent_storm.ipynb", "report.html", "result.json",
                                       "record.json", "requests.parquet", "spec.json"}
    for path in files:
        data = path.read_bytes()
        assert target_token.encode() not in data, path
        assert PASSWORD.encode() not in data, path
    record = json.loads((run_dir / "record.json").read_text())
    assert record["target"]["kind"] == "certctl"  # given by URL: the workbench cannot tell
    assert record["target"]["dsn"].startswith("postgresql+psycopg://postgres@/certctl")


def test_redacted_dsn_drops_the_password():
    assert seed.redact_dsn(f"postgresql://u:{PASSWORD}@127.0.0.1:5432/certctl") == (
        "postgresql://u@127.0.0.1:5432/certctl")


@pytest.mark.parametrize("query", [f"password={PASSWORD}", f"sslpassword={PASSWORD}",
                                   f"passfile=/home/{PASSWORD}/.pgpass",
                                   f"sslmode=require&PASSWORD={PASSWORD}&application_name=wb"])
def test_redacted_dsn_drops_a_password_given_in_the_query_string(query):
    redacted = seed.redact_dsn(f"postgresql://u:{PASSWORD}@127.0.0.1:5432/certctl?{query}")
    assert PASSWORD not in redacted
    assert redacted.startswith("postgresql://u@127.0.0.1:5432/certctl")


def test_redacted_dsn_keeps_the_query_parameters_that_are_not_secret():
    assert seed.redact_dsn("postgresql://u@/certctl?host=/tmp/s&password=x&sslmode=disable") == (
        "postgresql://u@/certctl?host=%2Ftmp%2Fs&sslmode=disable")


@pytest.mark.parametrize("host", ["10.1.2.3", "db.example.test", "192.168.0.10"])
def test_a_non_loopback_database_needs_explicit_consent_before_any_write(host):
    # refused before a connection is even attempted: no traffic leaves the machine
    with pytest.raises(WorkbenchError, match="not on this machine.*--allow-remote-db"):
        seed.load_fixture(f"postgresql://u:p@{host}:5432/certctl", "02_agent_fleet.sql",
                          {"fleet_size": 10}, ("agents", "SELECT 1"))


@pytest.mark.parametrize("dsn,env", [
    ("postgresql://u@127.0.0.1/certctl?host=10.1.2.3", {}),
    ("postgresql://u@/certctl?host=/tmp/s&host=db.example.test", {}),
    ("postgresql://u@/certctl?host=127.0.0.1,10.1.2.3:5433", {}),
    ("postgresql://u@127.0.0.1,db.example.test/certctl", {}),
    ("postgresql://u@localhost/certctl?hostaddr=10.1.2.3", {}),
    ("postgresql://u@/certctl?service=prod", {}),
    ("postgresql://u@/certctl", {"PGHOST": "db.example.test"}),
    ("postgresql://u@/certctl", {"PGSERVICE": "prod"}),
    ("postgresql://u@localhost/certctl", {"PGHOSTADDR": "10.1.2.3"}),
])
def test_every_effective_database_host_needs_consent_when_remote(dsn, env, monkeypatch):
    for name in ("PGHOST", "PGHOSTADDR", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(WorkbenchError, match="not on this machine.*--allow-remote-db"):
        seed.engine_for(dsn)
    seed.engine_for(dsn, allow_remote=True).dispose()


def test_pghost_does_not_count_when_the_url_names_the_host(monkeypatch):
    monkeypatch.setenv("PGHOST", "db.example.test")  # libpq ignores it: the URL gives a host
    seed.engine_for("postgresql://u@127.0.0.1/x?host=/tmp/s,[::1]:5432").dispose()


@pytest.mark.parametrize("dsn", ["postgresql://u@127.0.0.1:5432/x", "postgresql://u@[::1]/x",
                                 "postgresql://u@localhost/x", "postgresql://u@/x?host=/tmp/s"])
def test_loopback_and_socket_databases_need_no_consent(dsn):
    seed.engine_for(dsn).dispose()


FOREIGN = {  # rows a real certctl database holds that are not the workbench's
    "agents": ("INSERT INTO agents (id, name, hostname, status, api_key_hash, os, architecture,"
               " ip_address, version) VALUES ('ag-prod-1', 'prod-agent-1', 'h', 'Offline', 'k',"
               " 'linux', 'amd64', '', ''), ('ag-loadtest-x1', 'not-a-fixture', 'h', 'Degraded',"
               " 'k', '', '', '', '')"),
    "managed_certificates": (
        "INSERT INTO managed_certificates (id, name, common_name, environment, owner_id, team_id,"
        " issuer_id, renewal_policy_id, status, expires_at) VALUES ('mc-prod-1', 'prod-cert-1',"
        " 'prod.example.test', 'production', 'o-alice', 't-platform', 'iss-local', 'rp-standard',"
        " 'RenewalInProgress', now() + interval '3 days'), ('mc-loadtest-bulk-x', 'lookalike',"
        " 'l.example.test', 'production', 'o-alice', 't-platform', 'iss-local', 'rp-standard',"
        " 'Expired', now())"),
    "certificate_versions": (
        "INSERT INTO certificate_versions (id, certificate_id, serial_number, not_before,"
        " not_after, fingerprint_sha256, pem_chain) VALUES ('cv-prod-1', 'mc-prod-1', 'abc123',"
        " now(), now() + interval '3 days', 'fp-prod-1', 'pem')"),
    "jobs": ("INSERT INTO jobs (id, type, certificate_id, status) VALUES"
             " ('job-prod-1', 'Renewal', 'mc-prod-1', 'AwaitingCSR'),"
             " ('job-prod-2', 'Renewal', 'mc-loadtest-bulk-x', 'Pending')"),
    "acme_accounts": ("INSERT INTO acme_accounts (account_id, jwk_thumbprint, jwk_pem, contact,"
                      " status, profile_id) VALUES ('acme-acc-prod', 'tp-prod', 'pem',"
                      " ARRAY['mailto:ops@example.test'], 'valid', 'prof-standard-tls')"),
    "acme_orders": ("INSERT INTO acme_orders (order_id, account_id, identifiers, status,"
                    " expires_at) VALUES ('ord-prod-1', 'acme-acc-prod',"
                    " '[{\"type\":\"dns\",\"value\":\"prod.example.test\"}]', 'ready',"
                    " now() + interval '1 day')"),
}
FOREIGN_IDS = {"agents": ("ag-prod-1", "ag-loadtest-x1"),
               "managed_certificates": ("mc-prod-1", "mc-loadtest-bulk-x"),
               "certificate_versions": ("cv-prod-1",), "jobs": ("job-prod-1", "job-prod-2"),
               "acme_accounts": ("acme-acc-prod",), "acme_orders": ("ord-prod-1",)}
KEY = {"acme_accounts": "account_id", "acme_orders": "order_id"}  # others: id


def test_seeding_and_resetting_every_scenario_leaves_foreign_rows_untouched(embedded_target):
    import sqlalchemy as sa

    from workbench import scenarios

    engine = sa.create_engine(embedded_target.dsn)

    def snapshot() -> dict:
        with engine.connect() as conn:
            return {table: conn.execute(sa.text(
                        f"SELECT * FROM {table} WHERE {KEY.get(table, 'id')} = ANY(:ids)"
                        f" ORDER BY {KEY.get(table, 'id')}"), {"ids": list(ids)}).all()
                    for table, ids in FOREIGN_IDS.items()}

    with engine.begin() as conn:
        for sql in FOREIGN.values():
            conn.execute(sa.text(sql))
    try:
        before = snapshot()
        assert all(len(rows) == len(FOREIGN_IDS[t]) for t, rows in before.items())
        for name in scenarios.names():
            spec = scenarios.get(name)
            params = spec.defaults("smoke")
            spec.seed(embedded_target.dsn, params)
            spec.seed(embedded_target.dsn, params)  # again: idempotent
            spec.reset(embedded_target.dsn, params)
        assert snapshot() == before
    finally:
        with engine.begin() as conn:
            for table in ("acme_orders", "acme_accounts", "jobs", "certificate_versions",
                          "managed_certificates", "agents"):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {KEY.get(table, 'id')}"
                                     " = ANY(:ids)"), {"ids": list(FOREIGN_IDS[table])})
        engine.dispose()


# --- the API token: RFC 6750 characters only, never echoed, sent only where the user means ----

def _workbench(*args, env=None, timeout=120):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("bad", [f"{TOKEN}\r\nX-Injected: 1", f"{TOKEN}\nX-Injected: 1",
                                 f"Bearer {TOKEN}", f"{TOKEN}\u00e9", f"{TOKEN}=x", " "])
def test_a_token_outside_rfc6750_is_refused_before_any_request_and_never_echoed(bad,
                                                                                monkeypatch):
    from workbench.target import preflight

    monkeypatch.setenv(preflight.TOKEN_ENV, bad)
    target = preflight.Target(url="https://127.0.0.1:9", ca_file=None, insecure=False,
                              embedded=False)
    with pytest.raises(WorkbenchError, match="not a valid Bearer token") as err:
        preflight.token_for(target)
    assert TOKEN not in str(err.value) and "X-Injected" not in str(err.value)


@pytest.mark.parametrize("good", [TOKEN, "YWxhZGRpbjpvcGVuc2VzYW1l==", "a.b_c~d+e/f"])
def test_rfc6750_tokens_are_accepted(good, monkeypatch):
    from workbench.target import preflight

    monkeypatch.setenv(preflight.TOKEN_ENV, good)
    assert preflight.token_for(preflight.Target(url="https://db.example.test", ca_file=None,
                                                insecure=False, embedded=False)) == good


def test_drive_refuses_a_token_with_a_line_break_in_one_line_without_echoing_it(tmp_path):
    from tests.loopback import LoopbackServer

    with LoopbackServer() as srv:
        out = _workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", "{}",
                         "--rate", "5", "--duration", "1", "--send-token",
                         "--out", str(tmp_path / "run"),
                         env={"CERTCTL_TOKEN": f"{TOKEN}\r\nX-Injected: 1"})
        assert srv.bulk_headers == {}  # no request was sent
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert out.stderr.count("\n") == 1 and "Bearer token" in out.stderr
    assert TOKEN not in out.stderr + out.stdout
    assert not (tmp_path / "run").exists()


def test_drive_sends_the_token_only_with_send_token(tmp_path):
    from tests.loopback import LoopbackServer

    with LoopbackServer() as srv:
        for flag, expected in (([], None), (["--send-token"], f"Bearer {TOKEN}")):
            srv.bulk_headers = {}
            out = _workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", "{}",
                             "--rate", "5", "--duration", "1", *flag,
                             "--out", str(tmp_path / f"run{len(flag)}"),
                             env={"CERTCTL_TOKEN": TOKEN})
            assert out.returncode == 0, out.stderr
            assert srv.bulk_headers.get("Authorization") == expected
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("url", ["http://10.255.255.1:9/x", "http://db.example.test/"])
def test_drive_never_sends_the_token_over_plain_http_off_this_machine(url, tmp_path):
    out = _workbench("drive", url, "--rate", "5", "--duration", "1", "--send-token",
                     "--out", str(tmp_path / "run"), env={"CERTCTL_TOKEN": TOKEN})
    assert out.returncode == 2 and "plain HTTP" in out.stderr, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_scenario_target_over_plain_http_off_this_machine_gets_no_token(monkeypatch):
    from workbench.target import preflight

    monkeypatch.setenv(preflight.TOKEN_ENV, TOKEN)
    target = preflight.resolve_target("http://10.255.255.1:8080")
    with pytest.raises(WorkbenchError, match="plain HTTP"):
        preflight.token_for(target)


def test_drive_never_sends_the_token_unverified_off_this_machine(tmp_path):
    out = _workbench("drive", "https://10.255.255.1:9/x", "--rate", "5", "--duration", "1",
                     "--send-token", "--insecure", "--out", str(tmp_path / "run"),
                     env={"CERTCTL_TOKEN": TOKEN})
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert out.stderr.count("\n") == 1 and "--insecure" in out.stderr and "--ca-file" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("url,allowed", [("https://10.255.255.1:8443", False),
                                         ("https://certctl.example.test", False),
                                         ("https://127.0.0.1:8443", True),
                                         ("https://localhost:8443", True)])
def test_an_insecure_target_gets_the_token_only_on_this_machine(url, allowed, monkeypatch):
    from workbench.target import preflight

    monkeypatch.setenv(preflight.TOKEN_ENV, TOKEN)
    target = preflight.resolve_target(url, insecure=True)
    if allowed:
        assert preflight.token_for(target) == TOKEN
    else:
        with pytest.raises(WorkbenchError, match="--ca-file"):
            preflight.token_for(target)


@pytest.mark.parametrize("address", ["tcp://10.255.255.1:8786", "tcp://scheduler.example.test:8786",
                                     "ucx://10.255.255.1:8786", "tcp://:8786"])
def test_drive_never_sends_the_token_to_a_dask_scheduler_in_clear_off_this_machine(address,
                                                                                   tmp_path):
    out = _workbench("drive", "https://127.0.0.1:9/x", "--rate", "5", "--duration", "1",
                     "--send-token", "--cluster", address, "--out", str(tmp_path / "run"),
                     env={"CERTCTL_TOKEN": TOKEN})
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert out.stderr.count("\n") == 1 and "tls://" in out.stderr
    # a scheduler that is off this machine is refused for trust; a malformed one for its form
    assert "trust" in out.stderr or "not a Dask scheduler address" in out.stderr
    assert TOKEN not in out.stderr + out.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("address,allowed", [
    ("tls://10.255.255.1:8786", True), ("tcp://127.0.0.1:8786", True),
    ("tcp://localhost:8786", True), ("tcp://[::1]:8786", True), ("inproc://10.0.0.1/1/2", True),
    ("tcp://10.255.255.1:8786", False), ("tcp://127.0.0.1.example.test:8786", False)])
def test_the_token_goes_to_a_scheduler_only_over_tls_or_on_this_machine(address, allowed):
    from workbench.target import preflight

    if allowed:
        preflight.check_cluster_destination(address)
    else:
        with pytest.raises(WorkbenchError, match="tls://"):
            preflight.check_cluster_destination(address)


# --- secret headers: sent, never written ------------------------------------------------------

SECRET_HEADER_VALUE = "Basic c2VjcmV0LWhlYWRlci1EaXN0aW5jdGl2ZQ-NEVER-WRITE"


@pytest.mark.parametrize("shards", ["1", "2"])
def test_a_secret_header_is_sent_but_lands_in_no_file(tmp_path, shards):
    from tests.loopback import LoopbackServer

    with LoopbackServer() as srv:
        out = _workbench("drive", f"{srv.url}/bulk", "--method", "post", "--body", "{}",
                         "--header", f"Authorization: {SECRET_HEADER_VALUE}",
                         "--header", "X-Api-Key: k-NEVER-WRITE", "--header", "X-Trace: t-1",
                         "--rate", "10", "--duration", "1", "--shards", shards,
                         "--out", str(tmp_path / "run"))
        assert out.returncode == 0, out.stderr
        assert srv.bulk_headers["Authorization"] == SECRET_HEADER_VALUE
        assert srv.bulk_headers["X-Api-Key"] == "k-NEVER-WRITE"
    assert "NEVER-WRITE" not in out.stdout + out.stderr
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert "spec.json" in {p.name for p in files}
    for path in files:
        assert b"NEVER-WRITE" not in path.read_bytes(), path
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())["spec"]
    assert dict(map(tuple, spec["templates"][0]["headers"]))["X-Trace"] == "t-1"  # not secret


def test_a_spec_json_whose_secret_header_is_not_in_the_environment_is_refused(monkeypatch):
    from workbench.driver.spec import DriveSpec, RequestTemplate

    spec = DriveSpec("http://127.0.0.1:9", (RequestTemplate(
        "GET", "/", "t", headers=(("Cookie", "sid=NEVER-WRITE"),)),), rate=1, duration_s=1)
    text = spec.to_json()
    assert "NEVER-WRITE" not in text
    for name, value in spec.secret_env().items():
        monkeypatch.setenv(name, value)
    assert DriveSpec.from_json(text) == spec  # resolved from the environment
    for name in spec.secret_env():
        monkeypatch.delenv(name)
    with pytest.raises(WorkbenchError, match="secret kept out of spec.json"):
        DriveSpec.from_json(text).validate()


@pytest.mark.parametrize("shards", [1, 2])
def test_a_link_planted_at_the_old_temporary_names_is_never_written_through(tmp_path, shards):
    """The driver wrote requests.parquet through ``requests.parquet.tmp`` (and a shard merge
    likewise): a link planted there sent the run's requests over the link's target. (The
    command refuses an output folder holding files; ``drive()`` writes into the run folder
    it is given.)"""
    from tests.loopback import LoopbackServer
    from workbench.driver import DriveSpec, RequestTemplate, drive

    run, victim = tmp_path / "run", tmp_path / "victim"
    victim.write_text("untouched")
    run.mkdir()
    (run / "requests.parquet.tmp").symlink_to(victim)
    with LoopbackServer() as srv:
        spec = DriveSpec(base_url=srv.url, templates=(RequestTemplate("GET", "/status/200",
                                                                       "get"),),
                         rate=20, duration_s=1.0)
        result = drive(spec, run, echo=lambda _: None, shards=shards)
    assert result["completed"] == 20
    assert victim.read_text() == "untouched"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
