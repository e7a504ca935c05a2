"""The stand-in's signed ACME endpoints over real HTTPS and PostgreSQL, against certctl's contract
(7.5-7.12): JWS rules in certctl's order with its problem types, accounts, orders, authzs,
finalize's 500, and the per-account limits from a second stand-in process with them on."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.loopback import free_port
from workbench import jws, scenarios
from workbench.scenarios import acme_orders
from workbench.target import preflight
from workbench.target.embedded import TargetInfo
from workbench.target.standin import acme_orders as standin_orders
from workbench.target.standin.core import config_from_env

PROFILE = "prof-standard-tls"
BASE = f"/acme/profile/{PROFILE}"
PROBLEM = "application/problem+json"
ERR = "urn:ietf:params:acme:error:"


class Account:
    """A test client for one account key: fresh nonces, signed posts, URLs on one origin."""

    def __init__(self, client: httpx.Client, token: str, alg: str = "ES256") -> None:
        self.client, self.key = client, jws.AccountKey.generate(alg)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.origin = str(client.base_url).rstrip("/")
        self.kid: str | None = None

    def nonce(self) -> str:
        return self.client.head(f"{BASE}/new-nonce", headers=self.auth).headers["replay-nonce"]

    def post(self, path: str, payload: dict | None = None, *, nonce: str | None = None,
             url: str | None = None, body: bytes | None = None,
             jwk: bool = False) -> httpx.Response:
        if body is None:
            body = self.key.sign(url or self.origin + path,
                                 self.nonce() if nonce is None else nonce, payload,
                                 kid=None if jwk else self.kid)
        return self.client.post(path, content=body,
                                headers=self.auth | {"Content-Type": "application/jose+json"})

    def register(self) -> httpx.Response:
        response = self.post(f"{BASE}/new-account", {"termsOfServiceAgreed": True,
                                                     "contact": [acme_orders.CONTACT]})
        self.kid = response.headers["location"]
        return response

    def order(self, name: str = "a.loadtest.example.test") -> httpx.Response:
        return self.post(f"{BASE}/new-order", {"identifiers": [{"type": "dns", "value": name}]})

    def path(self, url: str) -> str:
        assert url.startswith(self.origin + "/")
        return url[len(self.origin):]


def reset_accounts(dsn: str) -> None:
    spec = scenarios.get("acme_orders")
    spec.seed(dsn, spec.defaults("smoke"))


def probes(profile_id: str) -> tuple:
    """acme_orders' own preflight probes for ``profile_id``."""
    spec = scenarios.get("acme_orders")
    return spec.preflight_args(spec.params_for("smoke", {"profile_id": profile_id}))["probes"]


@pytest.fixture(scope="module")
def db(embedded_target: TargetInfo) -> Iterator[sa.Engine]:
    engine = sa.create_engine(embedded_target.dsn)
    yield engine
    reset_accounts(embedded_target.dsn)
    engine.dispose()


@pytest.fixture()
def account(client, target_token) -> Account:
    acct = Account(client, target_token)
    assert acct.register().status_code == 201
    return acct


def one(db: sa.Engine, sql: str, **params):
    with db.connect() as conn:
        return conn.execute(sa.text(sql), params).first()


def assert_problem(response: httpx.Response, status: int, kind: str, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "replay-nonce" not in response.headers  # certctl's problems carry no nonce
    assert response.json() == {"type": ERR + kind, "detail": detail, "status": status}


def nonce_used(db: sa.Engine, nonce: str) -> bool:
    return one(db, "SELECT used FROM acme_nonces WHERE nonce = :n", n=nonce).used


# --- accounts and orders -----------------------------------------------------------------------


def test_new_account_is_created_once_from_the_thumbprint_then_returned(client, target_token,
                                                                      db):
    acct = Account(client, target_token)
    created = acct.register()
    assert created.status_code == 201
    account_id = "acme-acc-" + acct.key.thumbprint
    assert created.headers["location"] == f"{acct.origin}{BASE}/account/{account_id}"
    assert created.headers["content-type"] == "application/json"
    assert len(created.headers["replay-nonce"]) == 43
    assert list(created.json().items()) == [
        ("status", "valid"), ("contact", [acme_orders.CONTACT]),
        ("orders", created.headers["location"] + "/orders")]
    again = acct.post(f"{BASE}/new-account", {"onlyReturnExisting": True}, jwk=True)
    assert again.status_code == 200 and again.headers["location"] == created.headers["location"]
    row = one(db, "SELECT jwk_thumbprint, jwk_pem, status, profile_id, contact FROM acme_accounts"
                  " WHERE account_id = :a", a=account_id)
    assert (row.jwk_thumbprint, row.status, row.profile_id) == (acct.key.thumbprint, "valid",
                                                                PROFILE)
    assert row.jwk_pem.startswith("-----BEGIN ACME ACCOUNT JWK-----\n")
    assert jws.public_jwk(standin_orders.key_from_pem(row.jwk_pem)) == acct.key.jwk
    assert one(db, "SELECT count(*) AS n FROM audit_events WHERE action = 'acme_account_created'"
                   " AND actor = :a", a=f"acme:{account_id}").n == 1
    fresh = Account(client, target_token)
    assert_problem(fresh.post(f"{BASE}/new-account", {"onlyReturnExisting": True}), 400,
                   "accountDoesNotExist", "no account exists for this JWK; submit a new-account"
                   " request without onlyReturnExisting")


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_rs256_and_eddsa_accounts_order_too(client, target_token, alg):
    acct = Account(client, target_token, alg)
    assert acct.register().status_code == 201
    assert acct.order().status_code == 201


def test_an_order_is_born_ready_with_one_valid_authz_and_challenge(account, db):
    created = account.order("Mixed.loadtest.example.test")
    assert created.status_code == 201
    order_url = created.headers["location"]
    order_id = order_url.rsplit("/", 1)[1]
    assert order_id.startswith("acme-ord-") and len(order_id) == len("acme-ord-") + 16
    body = created.json()
    assert list(body) == ["status", "expires", "identifiers", "authorizations", "finalize"]
    assert body["status"] == "ready" and body["expires"].endswith("Z")
    assert body["identifiers"] == [{"type": "dns", "value": "Mixed.loadtest.example.test"}]
    assert body["finalize"] == order_url + "/finalize"
    fetched = account.post(account.path(order_url))  # POST-as-GET
    assert fetched.status_code == 200 and fetched.json() == body and fetched.headers[
        "replay-nonce"]
    [authz_url] = body["authorizations"]
    authz = account.post(account.path(authz_url))
    assert authz.status_code == 200
    doc = authz.json()
    assert doc["identifier"] == {"type": "dns", "value": "Mixed.loadtest.example.test"}
    assert doc["status"] == "valid" and "wildcard" not in doc
    [challenge] = doc["challenges"]
    assert challenge["type"] == "http-01" and challenge["status"] == "valid"
    assert challenge["url"].startswith(f"{account.origin}{BASE}/challenge/acme-chall-")
    assert "validated" in challenge
    assert one(db, "SELECT count(*) AS n FROM audit_events WHERE action = 'acme_order_created'"
                   " AND resource_id = :o", o=order_id).n == 1


def test_identifiers_other_than_dns_are_rejected_with_subproblems(account):
    response = account.post(f"{BASE}/new-order", {"identifiers": [
        {"type": "ip", "value": "192.0.2.1"}, {"type": "DNS", "value": "ok.example.test"}]})
    assert response.status_code == 400 and "replay-nonce" not in response.headers
    assert response.json() == {
        "type": ERR + "rejectedIdentifier", "detail": "one or more identifiers were rejected",
        "status": 400, "subproblems": [{
            "type": ERR + "rejectedIdentifier",
            "detail": 'identifier type "ip" is not supported (Phase 2: dns only)',
            "status": 400, "identifier": {"type": "ip", "value": "192.0.2.1"}}]}


def test_orders_of_other_accounts_are_401_and_unknown_ones_404(account, client, target_token):
    order_url = account.order().headers["location"]
    other = Account(client, target_token)
    other.register()
    assert_problem(other.post(other.path(order_url)), 401, "unauthorized",
                   "account does not own this resource")
    assert_problem(other.post(f"{BASE}/order/acme-ord-none"), 404, "malformed",
                   "resource not found")


# --- the JWS rules, each with certctl's problem ------------------------------------------------


def es384_body(url: str, nonce: str, kid: str) -> bytes:
    """A JWS signed ES384 (P-384, raw r||s): valid JOSE, outside certctl's allow-list."""
    key = ec.generate_private_key(ec.SECP384R1())
    protected = jws.b64u(json.dumps({"alg": "ES384", "nonce": nonce, "url": url,
                                     "kid": kid}).encode())
    payload = jws.b64u(b'{"identifiers":[{"type":"dns","value":"x.example.test"}]}')
    r, s = decode_dss_signature(key.sign(f"{protected}.{payload}".encode(),
                                         ec.ECDSA(hashes.SHA384())))
    return json.dumps({"protected": protected, "payload": payload,
                       "signature": jws.b64u(r.to_bytes(48, "big") + s.to_bytes(48, "big"))
                       }).encode()


CASES = {  # name: (how to send it, status, type, detail, nonce consumed)
    "wrong url": (lambda a, n: a.post(f"{BASE}/new-order", {}, nonce=n, url=a.origin.replace(
        "127.0.0.1", "localhost") + f"{BASE}/new-order"), 401, "unauthorized",
        "protected header `url` mismatch or missing", False),
    "url with a query": (lambda a, n: a.post(f"{BASE}/new-order?x=1", {}, nonce=n), 401,
                         "unauthorized", "protected header `url` mismatch or missing", False),
    "ES384": (lambda a, n: a.post(f"{BASE}/new-order", body=es384_body(
        a.origin + f"{BASE}/new-order", n, a.kid)), 400, "malformed", "malformed JWS", False),
    "bad signature": (lambda a, n: a.post(f"{BASE}/new-order", body=jws.AccountKey.generate(
        "ES256").sign(a.origin + f"{BASE}/new-order", n, {}, kid=a.kid)), 401, "unauthorized",
        "signature did not verify", True),
    "jwk where kid is required": (lambda a, n: a.post(f"{BASE}/new-order", body=a.key.sign(
        a.origin + f"{BASE}/new-order", n, {})), 400, "malformed",
        "this endpoint requires `kid` (registered account); got `jwk`", True),
    "kid on new-account": (lambda a, n: a.post(f"{BASE}/new-account", {}, nonce=n), 400,
                           "malformed", "this endpoint requires `jwk` (new-account flow); got"
                           " `kid`", True),
    "unknown account": (lambda a, n: a.post(f"{BASE}/new-order", body=a.key.sign(
        a.origin + f"{BASE}/new-order", n, {}, kid=a.origin + f"{BASE}/account/acme-acc-none")),
        400, "accountDoesNotExist", "kid points at unknown account", True),
    "kid on another profile": (lambda a, n: a.post(f"{BASE}/new-order", body=a.key.sign(
        a.origin + f"{BASE}/new-order", n, {}, kid=a.kid.replace(PROFILE, "prof-x"))), 400,
        "malformed", "malformed JWS", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_jws_fault_gets_certctls_problem_and_burns_the_nonce_only_past_the_url(
        case, account, db):
    send, status, kind, detail, consumed = CASES[case]
    nonce = account.nonce()
    assert_problem(send(account, nonce), status, kind, detail)
    assert nonce_used(db, nonce) is consumed


def test_replayed_and_expired_nonces_are_bad_nonces(account, db):
    nonce = account.nonce()
    assert account.order().status_code == 201  # uses its own nonce
    assert account.post(f"{BASE}/new-order", {"identifiers": [
        {"type": "dns", "value": "r.example.test"}]}, nonce=nonce).status_code == 201
    assert_problem(account.post(f"{BASE}/new-order", {}, nonce=nonce), 400, "badNonce",
                   "nonce missing, replayed, or expired")
    expired = account.nonce()
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE acme_nonces SET expires_at = now() - interval '1 s'"
                             " WHERE nonce = :n"), {"n": expired})
    assert_problem(account.post(f"{BASE}/new-order", {}, nonce=expired), 400, "badNonce",
                   "nonce missing, replayed, or expired")
    made_up = jws.b64u(b"\0" * 32)
    assert_problem(account.post(f"{BASE}/new-order", {}, nonce=made_up), 400, "badNonce",
                   "nonce missing, replayed, or expired")


def test_typ_body_size_and_missing_nonce(account):
    url = account.origin + f"{BASE}/new-order"
    protected = {"alg": "ES256", "nonce": account.nonce(), "url": url, "kid": account.kid,
                 "typ": "JWT"}
    p64 = jws.b64u(json.dumps(protected).encode())
    signature = account.key.sign_bytes(f"{p64}.".encode())
    body = json.dumps({"protected": p64, "payload": "", "signature": jws.b64u(signature)})
    assert_problem(account.post(f"{BASE}/new-order", body=body.encode()), 400, "malformed",
                   "protected header `typ` must be `application/jose+json`")
    assert_problem(account.post(f"{BASE}/new-order", body=b" " * (64 * 1024 + 1)), 400,
                   "malformed", "request body too large")
    assert_problem(account.post(f"{BASE}/new-order", {}, nonce=""), 400, "badNonce",
                   "protected header `nonce` is required")
    assert_problem(account.post(f"{BASE}/new-order", body=b"not a jws"), 400, "malformed",
                   "malformed JWS")


# --- finalize ----------------------------------------------------------------------------------


def test_finalize_fails_as_certctls_does_and_leaves_the_order_processing(account, db):
    name = "fin.loadtest.example.test"
    body = account.order(name).json()
    order_id = body["finalize"].rsplit("/", 2)[1]
    csr = jws.b64u(acme_orders.build_csr(ec.generate_private_key(ec.SECP256R1()), name))
    finalize_path = account.path(body["finalize"])
    for _ in range(2):  # again on the processing order: 500 again
        assert_problem(account.post(finalize_path, {"csr": csr}), 500, "serverInternal",
                       "ACME server error")
        assert one(db, "SELECT status FROM acme_orders WHERE order_id = :o",
                   o=order_id).status == "processing"
    assert one(db, "SELECT count(*) AS n FROM managed_certificates WHERE name = :n",
               n=f"acme-{order_id}").n == 0
    assert_problem(account.post(finalize_path, {"csr": csr + "="}), 400, "badCSR",
                   "csr field is not valid base64url")
    assert_problem(account.post(finalize_path, {"csr": jws.b64u(b"junk")}), 400, "badCSR",
                   "csr did not parse as a valid PKCS#10")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE acme_orders SET status = 'valid' WHERE order_id = :o"),
                     {"o": order_id})
    assert_problem(account.post(finalize_path, {"csr": csr}), 403, "orderNotReady",
                   "order is not in the `ready` state; complete authorizations first")


def test_a_csr_for_other_names_is_a_500_and_invalidates_the_order(account, db):
    body = account.order("mine.loadtest.example.test").json()
    csr = acme_orders.build_csr(ec.generate_private_key(ec.SECP256R1()),
                                "other.loadtest.example.test")
    assert_problem(account.post(account.path(body["finalize"]), {"csr": jws.b64u(csr)}), 500,
                   "serverInternal", "ACME server error")
    row = one(db, "SELECT status, error FROM acme_orders WHERE order_id = :o",
              o=body["finalize"].rsplit("/", 2)[1])
    assert row.status == "invalid" and row.error["type"] == ERR + "badCSR"


# --- per-account limits ------------------------------------------------------------------------


def test_the_limits_parse_like_certctl_and_are_off_unless_set():
    off = config_from_env("d", "k", "c", environ={})
    assert (off.acme_orders_per_hour, off.acme_concurrent_orders) == (0, 0)
    one_set = config_from_env("d", "k", "c", environ={
        "CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS": "3"})
    assert (one_set.acme_orders_per_hour, one_set.acme_concurrent_orders) == (100, 3)
    zero = config_from_env("d", "k", "c", environ={
        "CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR": "x",
        "CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS": "0"})
    assert (zero.acme_orders_per_hour, zero.acme_concurrent_orders) == (100, 0)


@pytest.fixture(scope="module")
def limited(embedded_target: TargetInfo, embedded_target_state: Path) -> Iterator[TargetInfo]:
    """A second stand-in on the same database with per-account limits 7/h and 5 concurrent."""
    port = free_port()
    tls = embedded_target_state / "tls"
    env = os.environ | {"CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR": "7",
                        "CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS": "5"}
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.target.standin", "--dsn", embedded_target.dsn,
         "--port", str(port), "--cert", str(tls / "server.pem"),
         "--key", str(tls / "server-key.pem"), "--token-file",
         str(embedded_target_state / "token")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=embedded_target.ca_file)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/health", verify=verify, timeout=1.0)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        yield TargetInfo(url=url, host="127.0.0.1", port=port, ca_file=embedded_target.ca_file,
                         dsn=embedded_target.dsn, pid=process.pid,
                         pg_pgdata=embedded_target.pg_pgdata)
    finally:
        process.terminate()
        process.wait(10)


def test_the_concurrent_cap_trips_on_the_sixth_order_then_the_hourly_bucket(
        limited, target_token, db):
    verify = ssl.create_default_context(cafile=limited.ca_file)
    with httpx.Client(base_url=limited.url, verify=verify, timeout=10.0) as client:
        acct = Account(client, target_token)
        acct.register()
        statuses = [acct.order(f"c{n}.loadtest.example.test").status_code for n in range(5)]
        capped = acct.order()  # the sixth: five orders are ready and never finalize
        with db.begin() as conn:  # retire one so the cap lets the next through
            conn.execute(sa.text("UPDATE acme_orders SET status = 'invalid' WHERE order_id ="
                                 " (SELECT min(order_id) FROM acme_orders WHERE account_id"
                                 " = :a)"), {"a": "acme-acc-" + acct.key.thumbprint})
        seventh = acct.order()  # the bucket's 7th token
        eighth = acct.order()
    assert statuses == [201] * 5 and seventh.status_code == 201
    for response, detail in ((capped, "too many concurrent orders for this account; finish or "
                                      "cancel pending orders before submitting more"),
                             (eighth, "request rate limit exceeded; retry later")):
        assert_problem(response, 429, "rateLimited", detail)
        assert "retry-after" not in response.headers


def test_preflight_probe_finds_the_limits_and_the_default_target_has_none(
        limited, embedded_target, target_token):
    def warnings(info: TargetInfo) -> list[str]:
        target_ = preflight.Target(url=info.url, ca_file=info.ca_file, insecure=False,
                                   embedded=False)
        return preflight.trap_warnings(target_, target_token, (PROFILE,), ("acme",),
                                       probes(PROFILE))

    [warning] = warnings(limited)
    assert "per-account ACME limits are on: order 6 of one account got 429" in warning
    assert "CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS=0" in warning
    assert warnings(embedded_target) == []


def test_preflight_probe_names_a_profile_in_challenge_mode(embedded_target, target_token, db):
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO certificate_profiles (id, name, acme_auth_mode) VALUES"
                             " ('prof-loadtest-challenge', 'loadtest challenge', 'challenge')"))
    try:
        target_ = preflight.Target(url=embedded_target.url, ca_file=embedded_target.ca_file,
                                   insecure=False, embedded=True)
        [warning] = preflight.trap_warnings(target_, target_token, ("prof-loadtest-challenge",),
                                            ("acme",), probes("prof-loadtest-challenge"))
        assert "makes orders 'pending', not ready" in warning and "trust_authenticated" in warning
    finally:
        reset_accounts(embedded_target.dsn)
        with db.begin() as conn:
            conn.execute(sa.text("DELETE FROM certificate_profiles"
                                 " WHERE id = 'prof-loadtest-challenge'"))
