"""The stand-in's ACME reads over real HTTPS and PostgreSQL, against certctl's contract (7.1-7.4):
directory, new-nonce (stored, consumable once) and renewal-info (ARI)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from workbench import scenarios
from workbench.scenarios import acme_burst
from workbench.target.embedded import TargetInfo
from workbench.target.standin import acme

PROFILE = "prof-standard-tls"
BASE = f"/acme/profile/{PROFILE}"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def ari_ids(embedded_target: TargetInfo) -> list[str]:
    burst = scenarios.get("acme_burst")
    burst.seed(embedded_target.dsn, burst.params_for("smoke", {"ari_size": 40}))
    return acme_burst.ari_cert_ids(40)


def nonce_row(dsn: str, nonce: str) -> sa.Row | None:
    engine = sa.create_engine(dsn)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT used, expires_at - issued_at AS ttl FROM"
                                        " acme_nonces WHERE nonce = :n"), {"n": nonce}).first()
    finally:
        engine.dispose()


def assert_problem(response: httpx.Response, status: int, kind: str, detail: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert "replay-nonce" not in response.headers  # certctl's problems carry no nonce
    assert response.json() == {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail,
                               "status": status}


def test_directory_lists_urls_built_from_the_host_header(client, auth, embedded_target):
    response = client.get(f"{BASE}/directory", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=0, no-cache"
    base = f"https://127.0.0.1:{embedded_target.port}{BASE}"
    assert list(response.json().items()) == [
        ("newNonce", f"{base}/new-nonce"), ("newAccount", f"{base}/new-account"),
        ("newOrder", f"{base}/new-order"), ("revokeCert", f"{base}/revoke-cert"),
        ("keyChange", f"{base}/key-change"), ("renewalInfo", f"{base}/renewal-info")]
    other_host = client.get(f"{BASE}/directory", headers=auth | {"Host": "localhost:1"})
    assert other_host.json()["newNonce"] == f"https://localhost:1{BASE}/new-nonce"
    assert len(response.headers["replay-nonce"]) == 43  # the directory issues a nonce too


def test_new_nonce_head_200_get_204_stored_and_consumable_once(client, auth, embedded_target):
    head = client.head(f"{BASE}/new-nonce", headers=auth)
    get = client.get(f"{BASE}/new-nonce", headers=auth)
    assert (head.status_code, get.status_code) == (200, 204)
    for response in (head, get):
        assert response.content == b""
        assert response.headers["cache-control"] == "no-store"
        nonce = response.headers["replay-nonce"]
        assert len(base64.urlsafe_b64decode(nonce + "=")) == 32 and "=" not in nonce
        row = nonce_row(embedded_target.dsn, nonce)
        assert row is not None and not row.used
        assert timedelta(minutes=4, seconds=59) < row.ttl < timedelta(minutes=5, seconds=1)
    assert head.headers["replay-nonce"] != get.headers["replay-nonce"]

    async def consume_twice(nonce: str) -> list[bool]:
        async with await psycopg.AsyncConnection.connect(
                embedded_target.dsn.replace("+psycopg", ""), autocommit=True) as conn:
            return [await acme.consume_nonce(conn, nonce), await acme.consume_nonce(conn, nonce)]

    assert asyncio.run(consume_twice(get.headers["replay-nonce"])) == [True, False]
    assert nonce_row(embedded_target.dsn, get.headers["replay-nonce"]).used


def test_nonces_from_any_profile_are_global_and_expired_ones_fail(client, auth, embedded_target):
    nonce = client.head(f"{BASE}/new-nonce", headers=auth).headers["replay-nonce"]
    engine = sa.create_engine(embedded_target.dsn)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE acme_nonces SET expires_at = now() - interval '1 s'"
                             " WHERE nonce = :n"), {"n": nonce})
    engine.dispose()

    async def consume() -> bool:
        async with await psycopg.AsyncConnection.connect(
                embedded_target.dsn.replace("+psycopg", ""), autocommit=True) as conn:
            return await acme.consume_nonce(conn, nonce)

    assert asyncio.run(consume()) is False


def test_unknown_profile_and_shorthand_without_default_are_problems(client, auth):
    # certctl's code says 404 "profile not found"; its running build answers 500.
    for path in ("/acme/profile/prof-test/directory", "/acme/profile/prof-test/new-nonce",
                 "/acme/profile/prof-test/renewal-info/aaaa.bbbb"):
        assert_problem(client.get(path, headers=auth), 500, "serverInternal",
                       "ACME server error")
    assert_problem(
        client.get("/acme/directory", headers=auth), 403, "userActionRequired",
        "this server requires the per-profile path /acme/profile/<id>/* — set "
        "CERTCTL_ACME_SERVER_DEFAULT_PROFILE_ID for /acme/* shorthand")


def test_acme_sits_behind_the_bearer_key_as_certctls_dispatcher_puts_it(client):
    response = client.get(f"{BASE}/directory")
    assert response.status_code == 401
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == '{"error":"Authorization header required"}\n'


def test_new_nonce_methods_follow_gos_mux(client, auth):
    post = client.post(f"{BASE}/new-nonce", headers=auth)
    assert post.status_code == 405
    assert set(post.headers["allow"].split(", ")) == {"GET", "HEAD"}
    head_directory = client.head(f"{BASE}/directory", headers=auth)  # GET patterns match HEAD
    assert head_directory.status_code == 200 and head_directory.content == b""


def test_renewal_info_answers_the_window_for_a_fixture_serial(client, auth, ari_ids):
    before = datetime.now(UTC)
    response = client.get(f"{BASE}/renewal-info/{ari_ids[0]}", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["retry-after"] == "21600"
    window = response.json()["suggestedWindow"]
    assert list(response.json()) == ["suggestedWindow"] and list(window) == ["start", "end"]
    start = datetime.fromisoformat(window["start"])
    end = datetime.fromisoformat(window["end"])
    # Expires in 1 day under rp-standard's 30-day window: start is clamped to now, end to start.
    assert before - timedelta(seconds=1) <= start <= datetime.now(UTC) and end == start
    statuses = {client.get(f"{BASE}/renewal-info/{i}", headers=auth).status_code
                for i in ari_ids}
    assert statuses == {200}


def test_renewal_info_window_math_follows_certctl():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    assert acme.renewal_window(now + 60 * day, None, 30, now) == (now + 30 * day, now + 45 * day)
    assert acme.renewal_window(now - day, None, 30, now) == (now, now + day)  # expired
    # No policy: the last third of validity, ending a ninth before expiry.
    assert acme.renewal_window(now + 90 * day, now - 0 * day, None, now) == (
        now + 60 * day, now + 80 * day)


@pytest.mark.parametrize("cert_id", ["abc", "a.b.c", ".AQ", "AQ.", "a=.b", "AQ.A+",
                                     "AQ.QUJDA"])  # last: 5 characters, no byte count fits
def test_malformed_cert_ids_are_400(client, auth, cert_id):
    assert_problem(client.get(f"{BASE}/renewal-info/{cert_id}", headers=auth), 400,
                   "malformed", "ARI cert-id is malformed")


def test_unknown_serials_and_k6s_synthetic_id_are_404(client, auth, ari_ids):
    for cert_id in ("aaaa.bbbb", "bG9hZHRlc3Q.AQ"):  # well-formed, serials 0x6db6... and 1
        assert_problem(client.get(f"{BASE}/renewal-info/{cert_id}", headers=auth), 404,
                       "malformed", "resource not found")
    # A DER-style leading 0x00 before fixture 1's serial still finds it; the AKI is ignored.
    for cert_id in ("bG9hZHRlc3Q.AKzgAAAAAAAB", "AQ.rOAAAAAAAAE"):
        assert client.get(f"{BASE}/renewal-info/{cert_id}", headers=auth).status_code == 200


def test_serials_are_matched_as_unpadded_lowercase_hex():
    aki, serial = acme.parse_ari_cert_id("bG9hZHRlc3Q.AKzgAAAAAAAB")
    assert aki == b"loadtest"
    assert acme.serial_hex(serial) == "ace0000000000001"  # a DER leading 0x00 is harmless
    assert acme.serial_hex(bytes.fromhex("0a1b")) == "a1b"
    assert acme_burst.ari_serial(1) == "ace0000000000001"
