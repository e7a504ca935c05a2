"""The stand-in's certificate endpoints over real HTTPS and PostgreSQL, against certctl's contract:
create and list (k6 api_tier) and bulk renewal (scenario A)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from workbench.target.embedded import TargetInfo
from workbench.target.standin.certificates import common_name_problem
from workbench.target.standin.godecode import GoDecodeError, decode_struct

CERTS = "/api/v1/certificates"
BULK = "/api/v1/certificates/bulk-renew"
TEAM = "t-bulk-test"  # a team of its own, so criteria mode sees only this module's rows


@pytest.fixture(scope="module")
def client(embedded_target: TargetInfo) -> Iterator[httpx.Client]:
    verify = ssl.create_default_context(cafile=embedded_target.ca_file)
    with httpx.Client(base_url=embedded_target.url, verify=verify, timeout=20.0) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def engine(embedded_target: TargetInfo) -> Iterator[sa.Engine]:
    """The database, with TEAM created for this module and removed (with its rows) after it."""
    engine = sa.create_engine(embedded_target.dsn)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO teams (id, name) VALUES (:id, :name)"
                             " ON CONFLICT (id) DO NOTHING"), {"id": TEAM, "name": TEAM})
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM managed_certificates WHERE team_id = :id"), {"id": TEAM})
        conn.execute(sa.text("DELETE FROM teams WHERE id = :id"), {"id": TEAM})
    engine.dispose()


@pytest.fixture
def make_cert(engine: sa.Engine) -> Iterator[Callable[..., str]]:
    """Insert ``test-cert-*`` rows of TEAM directly; delete them (and their jobs) afterwards."""
    created: list[str] = []

    def make(**columns) -> str:
        cert_id = f"test-cert-{uuid.uuid4().hex[:12]}"
        row = {"id": cert_id, "name": cert_id, "common_name": f"{cert_id}.example.test",
               "environment": "production", "owner_id": "o-alice", "team_id": TEAM,
               "issuer_id": "iss-local", "renewal_policy_id": "rp-standard", "status": "Active",
               "expires_at": datetime.now(UTC) + timedelta(days=10),
               "created_at": datetime.now(UTC) - timedelta(days=1), **columns}
        names = ", ".join(row)
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO managed_certificates ({names})"
                                 f" VALUES ({', '.join(':' + k for k in row)})"), row)
        created.append(cert_id)
        return cert_id

    yield make
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM managed_certificates WHERE id = ANY(:ids)"),
                     {"ids": created})


def rows(engine: sa.Engine, sql: str, **params) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def create_body(name: str, **overrides) -> dict:
    return {"name": name, "common_name": f"{name}.example.test", "issuer_id": "iss-local",
            "owner_id": "o-alice", "team_id": TEAM, "renewal_policy_id": "rp-standard",
            "environment": "production", "sans": [f"{name}.example.test"], **overrides}


def assert_handler_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": httpx.codes.get_reason_phrase(status),
                               "message": message,
                               "request_id": response.headers["x-request-id"]}


# --- create ------------------------------------------------------------------------------------


def test_create_answers_201_with_the_pending_certificate(client, auth, engine):
    name = f"test-cert-{uuid.uuid4().hex[:8]}"
    response = client.post(CERTS, headers=auth, json=create_body(name))
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    cert = response.json()
    assert list(cert) == ["id", "name", "common_name", "sans", "environment", "owner_id",
                          "team_id", "issuer_id", "target_ids", "renewal_policy_id", "status",
                          "expires_at", "tags", "created_at", "updated_at"]  # Go field order
    assert cert["id"].startswith("cert-") and cert["status"] == "Pending"
    assert cert["expires_at"] == "0001-01-01T00:00:00Z"  # Go's zero time, as certctl stores it
    assert cert["tags"] == {} and cert["target_ids"] is None
    stored = rows(engine, "SELECT status, expires_at, sans, tags FROM managed_certificates"
                          " WHERE id = :id", id=cert["id"])
    assert stored[0].status == "Pending" and stored[0].expires_at.year == 1
    assert stored[0].sans == [f"{name}.example.test"] and stored[0].tags == {}


def test_duplicate_name_is_500_as_in_certctl(client, auth):
    name = f"test-cert-{uuid.uuid4().hex[:8]}"
    assert client.post(CERTS, headers=auth, json=create_body(name)).status_code == 201
    again = client.post(CERTS, headers=auth, json=create_body(name))
    assert_handler_error(again, 500, "Failed to create certificate")


@pytest.mark.parametrize(("change", "message"), [
    ({"common_name": ""}, "common_name is required"),
    ({"common_name": "bad host!"}, "invalid hostname format: hostname contains invalid"
                                   " character:  "),
    ({"owner_id": ""}, "owner_id is required"),
    ({"renewal_policy_id": None}, "renewal_policy_id is required"),
])
def test_create_validates_required_fields_in_certctls_order(client, auth, change, message):
    body = create_body("test-cert-invalid") | change
    assert_handler_error(client.post(CERTS, headers=auth, json=body), 400, message)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"name": 5}', b'{"expires_at": "tomorrow"}'])
def test_create_refuses_what_gos_decoder_refuses(client, auth, body):
    response = client.post(CERTS, headers=auth, content=body)
    assert_handler_error(response, 400, "Invalid request body")


def test_a_missing_parent_row_is_500(client, auth):
    body = create_body(f"test-cert-{uuid.uuid4().hex[:8]}", owner_id="o-nobody")
    assert_handler_error(client.post(CERTS, headers=auth, json=body), 500,
                         "Failed to create certificate")


# --- list --------------------------------------------------------------------------------------


def test_list_pages_oldest_first_with_total(client, auth, make_cert):
    now = datetime.now(UTC)
    ids = [make_cert(created_at=now - timedelta(days=900 - i)) for i in range(3)]
    response = client.get(CERTS, headers=auth, params={"team_id": TEAM, "per_page": 2})
    assert response.status_code == 200
    page = response.json()
    assert list(page) == ["data", "total", "page", "per_page"]
    assert page["total"] >= 3 and page["page"] == 1 and page["per_page"] == 2
    assert [c["id"] for c in page["data"]] == ids[:2]
    assert page["data"][0]["target_ids"] == []  # the list fills target ids, create does not
    second = client.get(CERTS, headers=auth, params={"team_id": TEAM, "per_page": 2, "page": 2})
    assert second.json()["data"][0]["id"] == ids[2]


def test_list_per_page_outside_1_to_500_falls_back_to_50(client, auth):
    for per_page in ("0", "501", "x"):
        body = client.get(CERTS, headers=auth, params={"per_page": per_page}).json()
        assert body["per_page"] == 50 and len(body["data"]) <= 50


def test_list_fails_like_certctls_row_scan_on_a_null_environment(client, auth, make_cert):
    make_cert(environment=None)
    response = client.get(CERTS, headers=auth, params={"team_id": TEAM})
    assert_handler_error(response, 500, "Failed to list certificates")


# --- bulk renew --------------------------------------------------------------------------------


def test_criteria_mode_matches_the_50_oldest_and_enqueues_awaiting_csr_jobs(
        client, auth, engine, make_cert):
    now = datetime.now(UTC)
    ids = [make_cert(created_at=now - timedelta(days=800, seconds=-i)) for i in range(55)]
    first = client.post(BULK, headers=auth, json={"team_id": TEAM, "issuer_id": "iss-local"})
    assert first.status_code == 200
    body = first.json()
    assert list(body) == ["total_matched", "total_enqueued", "total_skipped", "total_failed",
                          "enqueued_jobs"]  # errors omitted when empty
    assert (body["total_matched"], body["total_enqueued"], body["total_skipped"],
            body["total_failed"]) == (50, 50, 0, 0)
    assert [j["certificate_id"] for j in body["enqueued_jobs"]] == ids[:50]  # oldest first
    assert all(j["job_id"].startswith("job-") for j in body["enqueued_jobs"])
    jobs = rows(engine, "SELECT j.type, j.status, j.attempts, j.max_attempts, j.target_id,"
                        " mc.status AS cert_status FROM jobs j JOIN managed_certificates mc"
                        " ON mc.id = j.certificate_id WHERE mc.team_id = :team", team=TEAM)
    assert len(jobs) == 50
    assert {(j.type, j.status, j.attempts, j.max_attempts, j.target_id, j.cert_status)
            for j in jobs} == {("Renewal", "AwaitingCSR", 0, 3, None, "RenewalInProgress")}
    untouched = rows(engine, "SELECT status FROM managed_certificates WHERE id = ANY(:ids)",
                     ids=ids[50:])
    assert {r.status for r in untouched} == {"Active"}

    again = client.post(BULK, headers=auth, json={"team_id": TEAM}).json()
    assert again == {"total_matched": 50, "total_enqueued": 0, "total_skipped": 50,
                     "total_failed": 0}  # the same 50 again, now RenewalInProgress


def test_the_update_keeps_updated_at_and_renewal_policy(client, auth, engine, make_cert):
    stamp = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert_id = make_cert(updated_at=stamp)
    body = client.post(BULK, headers=auth, json={"certificate_ids": [cert_id]}).json()
    assert body["total_enqueued"] == 1
    row = rows(engine, "SELECT status, updated_at, renewal_policy_id FROM managed_certificates"
                       " WHERE id = :id", id=cert_id)[0]
    assert (row.status, row.updated_at, row.renewal_policy_id) == (
        "RenewalInProgress", stamp, "rp-standard")


def test_ids_mode_skips_statuses_drops_unknown_ids_and_makes_issuance_jobs(
        client, auth, engine, make_cert):
    skipped = [make_cert(status=s) for s in ("Archived", "Revoked", "Expired",
                                             "RenewalInProgress")]
    active = make_cert()
    never_issued = make_cert(expires_at=datetime(1, 1, 1, tzinfo=UTC), status="Pending")
    lowercase = make_cert(status="active")  # not a skipped status: renewed, as in certctl
    ids = [*skipped, active, never_issued, lowercase, "test-cert-does-not-exist"]
    body = client.post(BULK, headers=auth, json={"certificate_ids": ids}).json()
    assert (body["total_matched"], body["total_enqueued"], body["total_skipped"],
            body["total_failed"]) == (7, 3, 4, 0)
    types = dict(rows(engine, "SELECT certificate_id, type FROM jobs WHERE certificate_id ="
                              " ANY(:ids)", ids=ids))
    assert types == {active: "Renewal", never_issued: "Issuance", lowercase: "Renewal"}


def test_keygen_server_mode_is_not_the_default(client, auth, engine, make_cert):
    cert_id = make_cert()
    client.post(BULK, headers=auth, json={"certificate_ids": [cert_id]})
    assert rows(engine, "SELECT status FROM jobs WHERE certificate_id = :id",
                id=cert_id)[0].status == "AwaitingCSR"


def test_bulk_renew_writes_one_audit_row_with_criteria_and_totals(client, auth, engine,
                                                                  make_cert):
    cert_id = make_cert()
    client.post(BULK, headers=auth, json={"certificate_ids": [cert_id, "test-cert-x"]})
    events = rows(engine, "SELECT actor, actor_type, resource_type, resource_id, details"
                          " FROM audit_events WHERE action = 'bulk_renewal_initiated'"
                          " AND details->>'certificate_ids' = :ids",
                  ids=f"{cert_id},test-cert-x")
    assert len(events) == 1
    event = events[0]
    assert (event.actor, event.actor_type, event.resource_type, event.resource_id) == (
        "standin-key", "User", "certificate", "bulk")
    assert {k: event.details[k] for k in ("total_matched", "total_enqueued", "total_skipped",
                                          "total_failed")} == {
        "total_matched": 1, "total_enqueued": 1, "total_skipped": 0, "total_failed": 0}


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "Invalid request body"),
    (b'{"certificate_ids": "mc-1"}', "Invalid request body"),
    (b"{}", "At least one filter criterion is required (profile_id, owner_id, agent_id,"
            " issuer_id, team_id, or certificate_ids)"),
    (b'{"team_id": "", "certificate_ids": []}', "At least one filter criterion is required"
                                                " (profile_id, owner_id, agent_id, issuer_id,"
                                                " team_id, or certificate_ids)"),
])
def test_bulk_renew_bad_bodies_are_400(client, auth, body, message):
    assert_handler_error(client.post(BULK, headers=auth, content=body), 400, message)


def test_an_oversized_body_is_400_not_413(client, auth):
    ids = [f"mc-{i:08d}" for i in range(90_000)]  # about 1.3 MB, over certctl's 1 MiB limit
    response = client.post(BULK, headers=auth, json={"certificate_ids": ids})
    assert_handler_error(response, 400, "Invalid request body")


def test_criteria_mode_fails_500_when_a_row_cannot_be_scanned(client, auth, make_cert):
    make_cert(environment=None, created_at=datetime(2000, 1, 1, tzinfo=UTC))
    response = client.post(BULK, headers=auth, json={"team_id": TEAM})
    assert response.status_code == 500
    assert response.json()["message"].startswith(
        "Bulk renewal failed: failed to resolve certificates: ")


def test_bulk_renew_needs_the_bearer_key(client):
    response = client.post(BULK, json={"team_id": TEAM})
    assert response.status_code == 401
    assert response.text == '{"error":"Authorization header required"}\n'


# --- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("cn", "problem"), [
    ("www.example.test", None),
    ("*.example.test", None),
    ("192.0.2.7", None),
    ("alice@example.com", None),
    ("a..b", "invalid hostname format: hostname has empty label"),
    ("-a.example", "invalid hostname format: hostname labels cannot start or end with hyphen"),
    ("x" * 254, "common_name must be 253 characters or fewer"),
])
def test_common_name_checks_follow_certctl(cn, problem):
    assert common_name_problem(cn) == problem


def test_go_decoding_reads_the_first_value_and_folds_field_case():
    fields = {"team_id": "string", "certificate_ids": "[]string"}
    assert decode_struct(b' {"TEAM_ID": "t", "other": 1} trailing', fields) == {"team_id": "t"}
    assert decode_struct(b"null", fields) == {}
    assert decode_struct(b'{"certificate_ids": ["a", null]}', fields) == {
        "certificate_ids": ["a", ""]}
    for bad in (b"", b"[1]", b'{"team_id": 1}', b'{"certificate_ids": "a"}'):
        with pytest.raises(GoDecodeError):
            decode_struct(bad, fields)
