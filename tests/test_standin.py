"""The stand-in certctl server over real HTTPS and PostgreSQL, against certctl's contract."""

from __future__ import annotations

import hashlib
import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from workbench.errors import WorkbenchError
from workbench.target import embedded
from workbench.target.embedded import TargetInfo
from workbench.target.standin.server import parse_heartbeat_metadata

HEARTBEAT = "/api/v1/agents/{}/heartbeat"
AGENT_COLUMNS = "status, last_heartbeat_at, hostname, os, architecture, ip_address, version"


@pytest.fixture
def make_agent(engine: sa.Engine) -> Iterator[Callable[..., str]]:
    """Insert ``test-agent-*`` rows directly; delete them after the test."""
    created: list[str] = []

    def make(**columns: Any) -> str:
        agent_id = f"test-agent-{uuid.uuid4().hex[:12]}"
        row = {
            "id": agent_id,
            "name": agent_id,
            "hostname": "host-old",
            "status": "Online",
            "last_heartbeat_at": datetime.now(UTC) - timedelta(hours=1),
            "api_key_hash": "unused",
            "os": "linux",
            "architecture": "amd64",
            "ip_address": "10.0.0.1",
            "version": "0.9.0",
            **columns,
        }
        placeholders = ", ".join(f":{column}" for column in row)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO agents ({', '.join(row)}) VALUES ({placeholders})"), row
            )
        created.append(agent_id)
        return agent_id

    yield make
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM agents WHERE id = ANY(:ids)"), {"ids": created})


def agent_row(engine: sa.Engine, agent_id: str) -> sa.RowMapping:
    with engine.connect() as conn:
        query = sa.text(f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = :id")
        return conn.execute(query, {"id": agent_id}).mappings().one()


# --- no-auth probes ----------------------------------------------------------------------------


def test_health_ready_version_and_auth_info_shapes(
    client: httpx.Client, embedded_target: TargetInfo
) -> None:
    expected = {
        "/health": {"status": "healthy"},
        "/ready": {"status": "ready", "db": "reachable"},
        "/api/v1/auth/info": {"auth_type": "api-key", "required": True},
    }
    for path, body in expected.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "application/json"
        assert response.json() == body
        uuid.UUID(response.headers["x-request-id"])

    version = client.get("/api/v1/version").json()
    assert version == {
        "version": version["version"],
        "commit": embedded.workbench_commit(),
        "modified": False,
        "build_time": "",
        "go_version": "",
        "standin": True,
    }
    assert version["version"].startswith("standin-")


def test_tls_below_1_3_is_refused(embedded_target: TargetInfo) -> None:
    tls12 = ssl.create_default_context(cafile=embedded_target.ca_file)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{embedded_target.url}/health", verify=tls12)


# --- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body"),
    [
        (None, '{"error":"Authorization header required"}\n'),
        (
            "Token abc",
            '{"error":"Invalid Authorization header format, expected: Bearer <token>"}\n',
        ),
        ("Bearer not-the-key", '{"error":"Invalid API key"}\n'),
    ],
)
def test_auth_failures_have_certctls_text_plain_shapes(
    client: httpx.Client, header: str | None, body: str
) -> None:
    headers = {"Authorization": header} if header else {}
    # Auth runs before routing in certctl, so an unknown path is refused the same way.
    for path in ("/api/v1/auth/check", "/api/v1/no-such-thing"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.text == body
        assert ("www-authenticate" in response.headers) == (header is None)


def test_auth_check_accepts_the_token(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/auth/check", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"status": "authenticated", "user": "standin-key", "admin": True}


def test_prometheus_metrics_are_certctls_exposition_behind_the_key(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    make_agent()
    assert client.get("/api/v1/metrics/prometheus").status_code == 401
    response = client.get("/api/v1/metrics/prometheus", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    gauges = {"certctl_certificate_total", "certctl_certificate_active",
              "certctl_certificate_expiring_soon", "certctl_certificate_expired",
              "certctl_certificate_revoked", "certctl_agent_total", "certctl_agent_online",
              "certctl_job_pending", "certctl_uptime_seconds"}
    assert {n for n, f in families.items() if f.type == "gauge"} == gauges
    assert {n for n, f in families.items() if f.type == "counter"} == {
        "certctl_job_completed", "certctl_job_failed"}  # exposed as ..._total
    assert not any(n.startswith(("process_", "go_")) for n in families)  # written by hand
    value = {f.name: f.samples[0].value for f in families.values()}
    with engine.connect() as conn:
        certificates, agents = (conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                                for t in ("managed_certificates", "agents"))
    assert value["certctl_certificate_total"] == certificates
    assert value["certctl_agent_total"] == agents >= 1
    assert value["certctl_certificate_active"] == certificates - sum(
        value[f"certctl_certificate_{k}"] for k in ("expiring_soon", "expired", "revoked"))


def test_unknown_path_and_wrong_method_answer_like_gos_mux(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    missing = client.get("/api/v1/no-such-thing", headers=auth)
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"

    wrong = client.get(HEARTBEAT.format("any"), headers=auth)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


# --- heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_records_time_and_non_empty_metadata(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    agent_id = make_agent()
    before = agent_row(engine, agent_id)
    metadata = {"version": "1.0.0", "hostname": "host-new", "os": "", "ip_address": "10.0.0.2"}
    response = client.post(HEARTBEAT.format(agent_id), headers=auth, json=metadata)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "heartbeat_recorded"}
    after = agent_row(engine, agent_id)
    assert after["last_heartbeat_at"] > before["last_heartbeat_at"]
    assert (after["version"], after["hostname"], after["ip_address"]) == (
        "1.0.0", "host-new", "10.0.0.2",
    )  # fmt: skip
    assert (after["os"], after["architecture"]) == ("linux", "amd64")  # empty or absent: kept


def test_heartbeat_with_unparseable_body_only_touches_the_timestamp(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    agent_id = make_agent()
    before = agent_row(engine, agent_id)
    response = client.post(HEARTBEAT.format(agent_id), headers=auth, content=b"{not json")
    assert response.status_code == 200
    after = agent_row(engine, agent_id)
    assert after["last_heartbeat_at"] > before["last_heartbeat_at"]
    assert {**after, "last_heartbeat_at": None} == {**before, "last_heartbeat_at": None}


def test_heartbeat_for_unknown_agent_is_500_as_a_running_certctl_answers(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    """certctl's code says 404, its running build says 500 (docs/certctl-verified.md)."""
    response = client.post(HEARTBEAT.format("test-agent-does-not-exist"), headers=auth)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "Internal Server Error",
        "message": "Failed to record heartbeat",
        "request_id": response.headers["x-request-id"],
    }


def test_heartbeat_for_retired_agent_is_410_and_changes_nothing(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    agent_id = make_agent(retired_at=datetime.now(UTC), retired_reason="decommissioned")
    before = agent_row(engine, agent_id)
    response = client.post(HEARTBEAT.format(agent_id), headers=auth, json={"os": "windows"})
    assert response.status_code == 410
    assert response.json()["error"] == "Gone"
    assert response.json()["message"] == "Agent has been retired"
    assert agent_row(engine, agent_id) == before


def test_offline_agent_goes_online_with_the_stale_row_written_back(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    """certctl's quirk: the status flip rewrites the row read before the heartbeat."""
    agent_id = make_agent(status="Offline")
    before = agent_row(engine, agent_id)
    response = client.post(HEARTBEAT.format(agent_id), headers=auth, json={"os": "windows"})
    assert response.status_code == 200
    after = agent_row(engine, agent_id)
    assert after["status"] == "Online"
    assert after["last_heartbeat_at"] == before["last_heartbeat_at"]  # stale, not now
    assert after["os"] == "linux"  # the new metadata was overwritten too

    # Once Online, the next heartbeat takes effect.
    client.post(HEARTBEAT.format(agent_id), headers=auth)
    assert agent_row(engine, agent_id)["last_heartbeat_at"] > before["last_heartbeat_at"]


def test_null_string_column_fails_like_certctls_row_scan(
    client: httpx.Client, auth: dict[str, str], make_agent: Callable[..., str]
) -> None:
    agent_id = make_agent(os=None)
    response = client.post(HEARTBEAT.format(agent_id), headers=auth)
    assert response.status_code == 500
    assert response.json()["message"] == "Failed to record heartbeat"


def test_authenticated_request_writes_an_audit_event(
    client: httpx.Client, auth: dict[str, str], engine: sa.Engine, make_agent: Callable[..., str]
) -> None:
    agent_id = make_agent()
    path = HEARTBEAT.format(agent_id)
    body = b'{"version":"2.0.0"}'
    assert client.post(path, headers=auth, content=body).status_code == 200

    query = sa.text(
        "SELECT actor, actor_type, action, resource_type, details FROM audit_events"
        " WHERE resource_id = :path"
    )
    deadline = time.monotonic() + 5
    while True:  # the INSERT is fire-and-forget: it may land just after the response
        with engine.connect() as conn:
            rows = conn.execute(query, {"path": path}).mappings().all()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) == 1
    event = rows[0]
    assert (event["actor"], event["actor_type"], event["action"], event["resource_type"]) == (
        "standin-key", "User", "api_post", "api",
    )  # fmt: skip
    details = event["details"]
    assert details["body_hash"] == hashlib.sha256(body).hexdigest()[:16]
    assert {k: details[k] for k in ("method", "path", "status")} == {
        "method": "POST", "path": path, "status": 200,
    }  # fmt: skip
    assert isinstance(details["latency_ms"], int)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", None),
        (b"[1, 2]", None),
        (b'{"version": 5}', None),  # Go's decoder fails on a type mismatch: no metadata
        (b'{"os": "", "hostname": null}', None),  # nothing non-empty
        (b'{"OS": "linux"} trailing', {"os": "linux"}),  # first value only, any key case
    ],
)
def test_heartbeat_body_decodes_like_go(body: bytes, expected: dict[str, str] | None) -> None:
    metadata = parse_heartbeat_metadata(body)
    if expected is None:
        assert metadata is None
    else:
        assert metadata is not None
        assert {k: v for k, v in metadata.items() if v} == expected


# --- lifecycle ---------------------------------------------------------------------------------


def test_up_is_idempotent_and_status_reports_running(
    embedded_target: TargetInfo, embedded_target_state: Path
) -> None:
    assert embedded.up(embedded_target_state, port=embedded_target.port) == embedded_target
    assert embedded.read_info(embedded_target_state) == embedded_target
    state = embedded.status(embedded_target_state)
    assert state["url"] == embedded_target.url
    assert (state["kind"], state["pid"]) == ("stand-in", embedded_target.pid)
    assert state["alive"] and state["ready"] and state["pg_running"]
    assert state["dsn"] == embedded_target.dsn
    info_json = json.loads((embedded_target_state / "target.json").read_text())
    token = embedded.read_token(embedded_target_state)
    assert token not in json.dumps(info_json)
    assert token not in (embedded_target_state / "standin.log").read_text()
    assert (embedded_target_state / "token").stat().st_mode & 0o777 == 0o600


def test_up_refuses_a_port_taken_by_another_program(
    embedded_target: TargetInfo, tmp_path: Path
) -> None:
    with pytest.raises(WorkbenchError, match="--port"):
        embedded.up(tmp_path, port=embedded_target.port)
    assert not (tmp_path / "pg").exists()  # refused before starting anything


def test_a_server_started_by_an_earlier_command_is_stopped_even_when_init_never_reaps_it():
    """A server whose parent has exited belongs to init (or a subreaper); a container's init
    may leave it a zombie after SIGTERM, and waiting for its pid to vanish then timed out
    (seen once: `target up` failed in a fresh-clone `make test`). Here the orphan's reaper
    may reap it, so this checks the stop, not the zombie case itself."""
    import subprocess
    import sys

    from workbench.target import embedded

    orphan = int(subprocess.run(
        [sys.executable, "-c", "import subprocess; print(subprocess.Popen(['sleep', '300'], "
                               "start_new_session=True, stdout=subprocess.DEVNULL, "
                               "stderr=subprocess.DEVNULL).pid)"],
        capture_output=True, text=True, check=True).stdout)
    assert embedded.running(orphan) is not None
    embedded._stop_pid(orphan, lambda pid: True, timeout_s=30.0)
    assert embedded.running(orphan) is None
