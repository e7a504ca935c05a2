"""Safety: no secret lands in any file a run writes; remote databases need explicit consent."""

from __future__ import annotations

import json

import pytest

from tests.loopback import free_port
from workbench import run, seed, target
from workbench.errors import WorkbenchError

TOKEN = "tok-Distinctive-9f8e7d6c5b4a-NEVER-WRITE"
PASSWORD = "pw-Distinctive-0a1b2c3d-NEVER-WRITE"


@pytest.fixture()
def target_with_distinctive_token(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text(TOKEN)  # up() keeps an existing token
    (state / "token").chmod(0o600)
    info = target.up(state, port=free_port())
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    yield info
    target.down(state)


def test_token_and_dsn_password_never_land_in_run_files(target_with_distinctive_token, tmp_path,
                                                        monkeypatch):
    info = target_with_distinctive_token
    # trust auth on the socket ignores the password, so the DSN works and carries a secret
    dsn = info.dsn.replace("postgres@", f"postgres:{PASSWORD}@")
    monkeypatch.setenv("CERTCTL_TOKEN", TOKEN)
    monkeypatch.setenv("CERTCTL_DSN", dsn)
    run_dir, code = run.execute("agent_storm", "smoke", target_url=info.url, ca_file=info.ca_file,
                                overrides={"duration_s": 2.0, "fleet_size": 100})
    assert code == 0
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"agent_storm.ipynb", "report.html", "result.json",
                                       "record.json", "requests.parquet", "spec.json"}
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data, path
        assert PASSWORD.encode() not in data, path
    record = json.loads((run_dir / "record.json").read_text())
    assert record["target"]["kind"] == "certctl"  # given by URL: the workbench cannot tell
    assert record["target"]["dsn"].startswith("postgresql+psycopg://postgres@/certctl")


def test_redacted_dsn_drops_the_password():
    assert seed.redact_dsn(f"postgresql://u:{PASSWORD}@127.0.0.1:5432/certctl") == (
        "postgresql://u@127.0.0.1:5432/certctl")


@pytest.mark.parametrize("host", ["10.1.2.3", "db.example.test", "192.168.0.10"])
def test_a_non_loopback_database_needs_explicit_consent_before_any_write(host):
    # refused before a connection is even attempted: no traffic leaves the machine
    with pytest.raises(WorkbenchError, match="not on this machine.*--allow-remote-db"):
        seed.seed_agent_fleet(f"postgresql://u:p@{host}:5432/certctl", 10)


@pytest.mark.parametrize("dsn", ["postgresql://u@127.0.0.1:5432/x", "postgresql://u@[::1]/x",
                                 "postgresql://u@localhost/x", "postgresql://u@/x?host=/tmp/s"])
def test_loopback_and_socket_databases_need_no_consent(dsn):
    seed.engine_for(dsn).dispose()
