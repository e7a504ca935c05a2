"""certctl's signed ACME endpoints: new-account, account, new-order, order, authz, finalize.

Every request is a JWS checked in certctl's order (contract 7.5): body at most 64 KiB; parsed
with the RS256/ES256/EdDSA allow-list (anything else: 400 ``malformed`` "malformed JWS"); ``typ``
if present; ``url`` equal to ``https://`` + request Host + path (else 401 ``unauthorized``, no
nonce consumed yet); the nonce consumed next, before key and signature (``badNonce``); ``jwk``
only on new-account and ``kid`` everywhere else (``malformed``); the kid equal to the canonical
account URL (``malformed``); the account looked up (``accountDoesNotExist``, or ``unauthorized``
when not valid); then the signature (401 ``unauthorized``). The account id is ``acme-acc-`` + the
key's RFC 7638 thumbprint. Orders are born ``ready`` in trust_authenticated mode (``pending`` in
challenge mode); the per-account new-order bucket and concurrent-order cap answer 429
``rateLimited`` without Retry-After; finalize fails with 500 ``serverInternal`` and leaves the
order ``processing``, as certctl's does (its managed-certificate insert violates the owner FK).
Success carries ``Replay-Nonce``; problems never do. Detail strings are certctl's.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from psycopg.rows import dict_row

from workbench import jws
from workbench.target.standin.acme import (
    ACME_ERROR,
    PROBLEM_CONTENT_TYPE,
    AcmeProblem,
    consume_nonce,
    issue_nonce,
    resolve_profile,
)
from workbench.target.standin.core import (
    CONFIG,
    ISSUERS,
    POOL,
    BodyTooLarge,
    RateLimit,
    generate_id,
    go_json,
    json_response,
    log,
    read_body,
)
from workbench.target.standin.ratelimit import KeyedRateLimiter

MAX_JWS_BODY_BYTES = 64 * 1024  # certctl: MaxJWSBodyBytes
ORDER_LIMITER = web.AppKey("acme_order_limiter", object)  # KeyedRateLimiter, or None when off
JWK_PEM_BEGIN, JWK_PEM_END = "-----BEGIN ACME ACCOUNT JWK-----", "-----END ACME ACCOUNT JWK-----"
_ACTIVE = ("pending", "ready", "processing")
_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # certctl's lowercase Crockford-style alphabet
_KEY_CACHE_MAX = 10_000
_keys: dict[str, object] = {}  # stored JWK text -> public key; parsing per request costs CPU

_URL_PROBLEM = ("unauthorized", "protected header `url` mismatch or missing", 401)
_ONE_OF = "protected header MUST contain exactly one of `kid` or `jwk`"


def _malformed(detail: str = "malformed JWS") -> AcmeProblem:
    return AcmeProblem("malformed", detail, 400)


def _server_error() -> AcmeProblem:
    return AcmeProblem("serverInternal", "ACME server error", 500)


def rand_id_suffix() -> str:
    """certctl's ``randIDSuffix``: 10 random bytes as 16 lowercase base32 characters."""
    value = int.from_bytes(secrets.token_bytes(10), "big")
    return "".join(_BASE32[(value >> shift) & 31] for shift in range(75, -1, -5))


def jwk_pem(jwk: dict) -> str:
    """A public JWK as certctl stores it in ``acme_accounts.jwk_pem``."""
    encoded = base64.b64encode(json.dumps(jwk, separators=(",", ":")).encode()).decode()
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([JWK_PEM_BEGIN, *lines, JWK_PEM_END]) + "\n"


def key_from_pem(text: str):
    """The public key of a stored ``jwk_pem``; JWSError when it does not parse."""
    key = _keys.get(text)
    if key is None:
        body = text.strip().removeprefix(JWK_PEM_BEGIN).split(JWK_PEM_END)[0]
        try:
            jwk = json.loads(base64.b64decode("".join(body.split()), validate=True))
        except (ValueError, binascii.Error):
            raise jws.JWSError("malformed", "stored jwk does not parse") from None
        key = jws.key_from_jwk(jwk if isinstance(jwk, dict) else {})
        if len(_keys) >= _KEY_CACHE_MAX:
            _keys.clear()
        _keys[text] = key
    return key


# --- JWS verification in certctl's order -------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    payload: Any  # decoded JSON payload; None for POST-as-GET
    account: dict | None  # the kid path's account row
    jwk: dict | None  # the jwk path's key


def _parse(body: bytes) -> jws.ParsedJWS:
    """go-jose's ParseSigned: flattened, general (one signature) or compact serialization."""
    text = body.strip()
    try:
        if text[:1] != b"{":
            parts = text.decode("ascii").split(".")
            if len(parts) != 3:
                raise jws.JWSError("malformed", "not a compact JWS")
            body = json.dumps(dict(zip(("protected", "payload", "signature"), parts,
                                       strict=True))).encode()
        else:
            outer = json.loads(text)
            if isinstance(outer, dict) and isinstance(outer.get("signatures"), list):
                if len(outer["signatures"]) != 1 or not isinstance(outer["signatures"][0], dict):
                    raise jws.JWSError("malformed", "multi-signature JWS rejected")
                body = json.dumps(outer["signatures"][0] | {"payload": outer.get("payload")}
                                  ).encode()
    except (ValueError, UnicodeDecodeError):
        raise jws.JWSError("malformed", "not a JWS") from None
    parsed = jws.parse(body)
    header = parsed.protected
    if header.get("alg") not in jws.ALLOWED_ALGS:
        raise jws.JWSError("malformed", "algorithm not allowed")
    for name in ("kid", "nonce"):
        if name in header and not isinstance(header[name], str):
            raise jws.JWSError("malformed", f"{name} is not a string")
    if "jwk" in header and (not isinstance(header["jwk"], dict) or "d" in header["jwk"]):
        raise jws.JWSError("malformed", "embedded jwk must be a public key")
    return parsed


def request_url(request: web.Request) -> str:
    """What certctl compares the JWS ``url`` with: scheme + Host header + path (no query)."""
    return f"{'https' if request.secure else 'http'}://{request.host}{request.path}"


def resource_url(request: web.Request, kind: str, resource_id: str) -> str:
    """certctl's URLs: scheme + Host header + the request's profile prefix + kind/id."""
    profile_id = request.match_info.get("id", "")
    prefix = f"/acme/profile/{profile_id}" if profile_id else "/acme"
    scheme = "https" if request.secure else "http"
    return f"{scheme}://{request.host}{prefix}/{kind}/{resource_id}"


def account_url(request: web.Request, account_id: str) -> str:
    """certctl's canonical kid for this request's profile path."""
    return resource_url(request, "account", account_id)


async def _read_jws_body(request: web.Request) -> bytes:
    try:
        body = await read_body(request)
    except BodyTooLarge:
        raise _malformed("could not read request body") from None
    if len(body) > MAX_JWS_BODY_BYTES:
        raise _malformed("request body too large")
    return body


async def verify(request: web.Request, body: bytes, new_account: bool) -> Verified:
    """Check the JWS as certctl's ``VerifyJWS`` does; AcmeProblem with its problem type."""
    try:
        parsed = _parse(body)
    except jws.JWSError:
        raise _malformed() from None
    header = parsed.protected
    if "typ" in header and header["typ"] not in ("application/jose+json", ""):
        raise _malformed("protected header `typ` must be `application/jose+json`")
    url = header.get("url")
    if not isinstance(url, str) or not url or url != request_url(request):
        raise AcmeProblem(*_URL_PROBLEM)  # no nonce consumed: a mis-addressed JWS keeps it
    nonce = header.get("nonce")
    if not nonce:
        raise AcmeProblem("badNonce", "protected header `nonce` is required", 400)
    pool = request.app[POOL]
    try:
        async with pool.connection() as conn:
            consumed = await consume_nonce(conn, nonce)
    except psycopg.Error:
        consumed = False  # certctl wraps any consume error as badNonce
    if not consumed:
        raise AcmeProblem("badNonce", "nonce missing, replayed, or expired", 400)
    has_kid, has_jwk = bool(header.get("kid")), header.get("jwk") is not None
    if has_kid == has_jwk:
        raise _malformed(_ONE_OF)
    if new_account and has_kid:
        raise _malformed("this endpoint requires `jwk` (new-account flow); got `kid`")
    if not new_account and has_jwk:
        raise _malformed("this endpoint requires `kid` (registered account); got `jwk`")
    account = None
    if has_kid:
        account = await _kid_account(request, header["kid"])
        try:
            key = key_from_pem(account["jwk_pem"])
        except jws.JWSError:
            raise _malformed("invalid or unsupported JWK") from None
    else:
        try:
            key = jws.key_from_jwk(header["jwk"])
        except jws.JWSError:
            raise _malformed("invalid or unsupported JWK") from None
    try:
        jws.verify_signature(parsed, key)
    except jws.JWSError:
        raise AcmeProblem("unauthorized", "signature did not verify", 401) from None
    return Verified(parsed.payload, account, None if has_kid else header["jwk"])


async def _kid_account(request: web.Request, kid: str) -> dict:
    at = kid.rfind("/account/")
    account_id = kid[at + len("/account/"):] if at >= 0 else ""
    if not account_id or kid != account_url(request, account_id):
        raise _malformed()
    try:
        account = await _fetch(request, "SELECT account_id, jwk_thumbprint, jwk_pem, contact,"
                                        " status, profile_id FROM acme_accounts"
                                        " WHERE account_id = %s", (account_id,))
    except psycopg.Error as exc:
        log.error("acme account lookup failed: %s", exc)
        raise _malformed("malformed request") from None  # certctl's default mapping
    if account is None:
        raise AcmeProblem("accountDoesNotExist", "kid points at unknown account", 400)
    if account["status"] != "valid":
        raise AcmeProblem("unauthorized", "account status is not `valid`", 401)
    return account


async def _fetch(request: web.Request, query: str, params: Any) -> dict | None:
    async with request.app[POOL].connection() as conn:
        cursor = await conn.cursor(row_factory=dict_row).execute(query, params)
        return await cursor.fetchone()


async def _fetch_all(request: web.Request, query: str, params: Any) -> list[dict]:
    async with request.app[POOL].connection() as conn:
        cursor = await conn.cursor(row_factory=dict_row).execute(query, params)
        return await cursor.fetchall()


# --- responses ---------------------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    """Go's ``time.RFC3339`` in UTC: whole seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _success(request: web.Request, status: int, payload: Any,
                   location: str | None = None) -> web.Response:
    """A JSON success with ``Replay-Nonce`` (omitted when the nonce INSERT fails, as certctl)."""
    response = json_response(status, payload)
    try:
        response.headers["Replay-Nonce"] = await issue_nonce(request.app[POOL],
                                                             request.app[CONFIG].nonce_ttl_s)
    except psycopg.Error as exc:
        log.error("replay nonce failed: %s", exc)
    if location:
        response.headers["Location"] = location
    return response


def _account_json(request: web.Request, account: dict) -> dict:
    out: dict[str, Any] = {"status": account["status"]}
    if account.get("contact"):
        out["contact"] = list(account["contact"])  # Go's omitempty drops an empty list
    out["orders"] = account_url(request, account["account_id"]) + "/orders"
    return out


async def _order_json(request: web.Request, order: dict) -> dict:
    authzs = await _fetch_all(request, "SELECT authz_id FROM acme_authorizations"
                                       " WHERE order_id = %s ORDER BY created_at ASC",
                              (order["order_id"],))
    out: dict[str, Any] = {"status": order["status"], "expires": rfc3339(order["expires_at"])}
    for field, column in (("notBefore", "not_before"), ("notAfter", "not_after")):
        if order.get(column):
            out[field] = rfc3339(order[column])
    out["identifiers"] = [{"type": i.get("type", ""), "value": i.get("value", "")}
                          for i in order["identifiers"]]
    out["authorizations"] = [resource_url(request, "authz", a["authz_id"]) for a in authzs]
    out["finalize"] = resource_url(request, "order", order["order_id"]) + "/finalize"
    if order["status"] == "valid" and order.get("certificate_id"):
        out["certificate"] = resource_url(request, "cert", order["certificate_id"])
    if order.get("error"):
        error = order["error"]
        out["error"] = {k: error.get(k) for k in ("type", "detail", "status")}
    return out


def _payload_object(verified: Verified, what: str) -> dict:
    """The payload as Go's json.Unmarshal into a struct accepts it (an object, or null)."""
    if not isinstance(verified.payload, dict):  # an empty payload fails Go's Unmarshal too
        raise _malformed(f"could not parse {what} payload")
    return verified.payload


def _check_types(payload: dict, fields: dict[str, type], what: str) -> None:
    for name, kind in fields.items():
        value = payload.get(name)
        if value is None:
            continue
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise _malformed(f"could not parse {what} payload")


async def _audit_tx(conn: psycopg.AsyncConnection, account_id: str, action: str,
                    resource_type: str, resource_id: str, details: dict) -> None:
    """certctl's ``RecordEventWithTx``: the audit row in the caller's transaction."""
    await conn.execute(
        "INSERT INTO audit_events (id, actor, actor_type, action, resource_type, resource_id,"
        " details, timestamp) VALUES (%s, %s, 'User', %s, %s, %s, %s::jsonb, %s)",
        (generate_id("audit"), f"acme:{account_id}", action, resource_type, resource_id,
         json.dumps(details, sort_keys=True), datetime.now(UTC)))


# --- handlers ----------------------------------------------------------------------------------


async def new_account(request: web.Request) -> web.Response:
    """``POST .../new-account`` (jwk): 201 for a new key, 200 for a known one."""
    try:
        verified = await verify(request, await _read_jws_body(request), new_account=True)
        payload = _payload_object(verified, "new-account")
        _check_types(payload, {"contact": list, "termsOfServiceAgreed": bool,
                               "onlyReturnExisting": bool, "externalAccountBinding": dict},
                     "new-account")
        profile_id = await resolve_profile(request)
        thumb = jws.thumbprint(verified.jwk)
        account, created = await _register(request, profile_id, thumb, verified.jwk, payload)
    except AcmeProblem as problem:
        return problem.response()
    return await _success(request, 201 if created else 200, _account_json(request, account),
                          location=account_url(request, account["account_id"]))


async def _register(request: web.Request, profile_id: str, thumb: str, jwk: dict,
                    payload: dict) -> tuple[dict, bool]:
    columns = "account_id, jwk_thumbprint, jwk_pem, contact, status, profile_id"
    try:
        existing = await _fetch(request, f"SELECT {columns} FROM acme_accounts"
                                         " WHERE profile_id = %s AND jwk_thumbprint = %s",
                                (profile_id, thumb))
        if existing is not None:
            return existing, False
        if payload.get("onlyReturnExisting"):
            raise AcmeProblem("accountDoesNotExist", "no account exists for this JWK; submit a"
                              " new-account request without onlyReturnExisting", 400)
        contact = payload.get("contact") or []
        account = {"account_id": "acme-acc-" + thumb, "jwk_thumbprint": thumb,
                   "jwk_pem": jwk_pem(jwk), "contact": contact, "status": "valid",
                   "profile_id": profile_id}
        now = datetime.now(UTC)
        async with request.app[POOL].connection() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO acme_accounts ({columns}, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (*account.values(), now, now))
            await _audit_tx(conn, account["account_id"], "acme_account_created", "acme_account",
                            account["account_id"],
                            {"profile_id": profile_id, "jwk_thumbprint": thumb,
                             "contact_count": len(contact),
                             "tos_agreed": bool(payload.get("termsOfServiceAgreed"))})
    except psycopg.Error as exc:  # a racing registration or the same key under another profile
        log.error("acme new-account failed: %s", exc)
        raise _server_error() from None
    return account, True


async def account(request: web.Request) -> web.Response:
    """``POST .../account/{acc_id}`` (kid): read, deactivate or replace contacts."""
    try:
        verified = await verify(request, await _read_jws_body(request), new_account=False)
        row = verified.account
        if row["account_id"] != request.match_info["acc_id"]:
            raise AcmeProblem("unauthorized", "kid does not match URL account id", 401)
        payload = verified.payload
        if payload not in (None, {}):
            payload = _payload_object(verified, "account update")
            _check_types(payload, {"contact": list, "status": str}, "account update")
            row = await _update_account(request, row, payload)
    except AcmeProblem as problem:
        return problem.response()
    return await _success(request, 200, _account_json(request, row))


async def _update_account(request: web.Request, row: dict, payload: dict) -> dict:
    status = payload.get("status") or ""
    if status not in ("", "deactivated"):
        raise _malformed(f"only `deactivated` is a valid status for account update; got {status}")
    try:
        async with request.app[POOL].connection() as conn:
            if status:
                await conn.execute("UPDATE acme_accounts SET status = %s, updated_at = NOW()"
                                   " WHERE account_id = %s", (status, row["account_id"]))
                row = row | {"status": status}
            if payload.get("contact") is not None:
                await conn.execute("UPDATE acme_accounts SET contact = %s, updated_at = NOW()"
                                   " WHERE account_id = %s",
                                   (payload["contact"], row["account_id"]))
                row = row | {"contact": payload["contact"]}
    except psycopg.Error as exc:
        log.error("acme account update failed: %s", exc)
        raise _server_error() from None
    return row


def _identifier_problems(identifiers: list[dict]) -> list[dict]:
    """certctl's ``ValidateIdentifiers``: dns only (any case), non-empty values."""
    if not identifiers:
        return [{"type": ACME_ERROR + "malformed",
                 "detail": "new-order requires at least one identifier", "status": 400}]
    problems = []
    for ident in identifiers:
        kind, value = ident.get("type", ""), ident.get("value", "")
        if kind.lower() == "dns" and value:
            continue
        detail = ("identifier value is empty" if kind.lower() == "dns" else
                  f'identifier type "{kind}" is not supported (Phase 2: dns only)')
        problems.append({"type": ACME_ERROR + "rejectedIdentifier", "detail": detail,
                         "status": 400, "identifier": {"type": kind, "value": value}})
    return problems


def _rejected(subproblems: list[dict]) -> web.Response:
    body = {"type": ACME_ERROR + "rejectedIdentifier",
            "detail": "one or more identifiers were rejected", "status": 400,
            "subproblems": subproblems}
    response = web.Response(status=400, body=go_json(body))
    response.headers["Content-Type"] = PROBLEM_CONTENT_TYPE
    return response


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


async def new_order(request: web.Request) -> web.Response:
    """``POST .../new-order`` (kid): limits, then the order, its authz and challenge rows."""
    try:
        verified = await verify(request, await _read_jws_body(request), new_account=False)
        payload = _payload_object(verified, "new-order")
        identifiers = payload.get("identifiers") or []
        if (not isinstance(identifiers, list)
                or not all(isinstance(i, dict) and all(isinstance(i.get(k, ""), str)
                                                       for k in ("type", "value"))
                           for i in identifiers)
                or not all(isinstance(payload.get(k, ""), str) for k in ("notBefore",
                                                                          "notAfter"))):
            raise _malformed("could not parse new-order payload")
        problems = _identifier_problems(identifiers)
        if problems:
            return _rejected(problems)
        account_id = verified.account["account_id"]
        await _check_limits(request, account_id)
        order = await _create_order(request, account_id, identifiers, payload)
        body = await _order_json(request, order)
    except AcmeProblem as problem:
        return problem.response()
    except psycopg.Error as exc:
        log.error("acme new-order failed: %s", exc)
        return _server_error().response()
    return await _success(request, 201, body,
                          location=resource_url(request, "order", order["order_id"]))


async def _check_limits(request: web.Request, account_id: str) -> None:
    """certctl's per-account limits: the hourly bucket first, then the active-order count."""
    limiter = request.app[ORDER_LIMITER]
    if limiter is not None and not limiter.allow(f"new_order|{account_id}"):
        raise AcmeProblem("rateLimited", "request rate limit exceeded; retry later", 429)
    cap = request.app[CONFIG].acme_concurrent_orders
    if cap > 0:
        try:
            row = await _fetch(request, "SELECT COUNT(1) AS n FROM acme_orders WHERE"
                                        " account_id = %s AND status = ANY(%s)",
                               (account_id, list(_ACTIVE)))
        except psycopg.Error:
            return  # certctl lets the order through when the count fails
        if row["n"] >= cap:
            raise AcmeProblem("rateLimited", "too many concurrent orders for this account; "
                              "finish or cancel pending orders before submitting more", 429)


async def _profile_mode(request: web.Request) -> tuple[str, str]:
    profile_id = await resolve_profile(request)
    row = await _fetch(request, "SELECT acme_auth_mode FROM certificate_profiles WHERE id = %s",
                       (profile_id,))
    if row is None:
        raise _server_error()
    mode = row["acme_auth_mode"] or "trust_authenticated"
    if mode not in ("trust_authenticated", "challenge"):
        raise AcmeProblem("serverInternal",
                          "ACME server is not fully configured; contact the operator", 500)
    return profile_id, mode


async def _create_order(request: web.Request, account_id: str, identifiers: list[dict],
                        payload: dict) -> dict:
    profile_id, mode = await _profile_mode(request)
    trusted = mode == "trust_authenticated"
    config = request.app[CONFIG]
    now = datetime.now(UTC)
    order = {"order_id": "acme-ord-" + rand_id_suffix(), "account_id": account_id,
             "identifiers": [{"type": i.get("type", ""), "value": i.get("value", "")}
                             for i in identifiers],
             "status": "ready" if trusted else "pending",
             "expires_at": now + timedelta(seconds=config.acme_order_ttl_s),
             "not_before": _parse_time(payload.get("notBefore")),
             "not_after": _parse_time(payload.get("notAfter"))}
    async with request.app[POOL].connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO acme_orders (order_id, account_id, identifiers, status, expires_at,"
            " not_before, not_after, error, csr_pem, certificate_id, created_at, updated_at)"
            " VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, NULL, '', NULL, %s, %s)",
            (order["order_id"], account_id, json.dumps(order["identifiers"]), order["status"],
             order["expires_at"], order["not_before"], order["not_after"], now, now))
        for ident in order["identifiers"]:
            authz_id = "acme-authz-" + rand_id_suffix()
            await conn.execute(
                "INSERT INTO acme_authorizations (authz_id, order_id, identifier, status,"
                " expires_at, wildcard, created_at, updated_at)"
                " VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s)",
                (authz_id, order["order_id"], json.dumps(ident),
                 "valid" if trusted else "pending",
                 now + timedelta(seconds=config.acme_authz_ttl_s),
                 ident["value"].startswith("*."), now, now))
            await conn.execute(
                "INSERT INTO acme_challenges (challenge_id, authz_id, type, status, token,"
                " validated_at, created_at) VALUES (%s, %s, 'http-01', %s, %s, %s, %s)",
                ("acme-chall-" + rand_id_suffix(), authz_id, "valid" if trusted else "pending",
                 rand_id_suffix(), now if trusted else None, now))
        await _audit_tx(conn, account_id, "acme_order_created", "acme_order", order["order_id"],
                        {"account_id": account_id, "profile_id": profile_id, "auth_mode": mode,
                         "identifier_n": len(identifiers),
                         "identifiers": [i["value"] for i in order["identifiers"]]})
    return order


_ORDER_COLUMNS = ("order_id, account_id, identifiers, status, expires_at, not_before, not_after,"
                  " error, COALESCE(csr_pem, '') AS csr_pem,"
                  " COALESCE(certificate_id, '') AS certificate_id")


async def _owned_order(request: web.Request, account_id: str) -> dict:
    order = await _fetch(request, f"SELECT {_ORDER_COLUMNS} FROM acme_orders"
                                  " WHERE order_id = %s", (request.match_info["ord_id"],))
    if order is None:
        raise AcmeProblem("malformed", "resource not found", 404)
    if order["account_id"] != account_id:
        raise AcmeProblem("unauthorized", "account does not own this resource", 401)
    return order


async def order(request: web.Request) -> web.Response:
    """``POST .../order/{ord_id}`` (kid, POST-as-GET): the account's own order."""
    try:
        verified = await verify(request, await _read_jws_body(request), new_account=False)
        found = await _owned_order(request, verified.account["account_id"])
        body = await _order_json(request, found)
    except AcmeProblem as problem:
        return problem.response()
    except psycopg.Error as exc:
        log.error("acme order lookup failed: %s", exc)
        return _server_error().response()
    return await _success(request, 200, body)


async def authz(request: web.Request) -> web.Response:
    """``POST .../authz/{authz_id}`` (kid, POST-as-GET); certctl checks no ownership here."""
    try:
        await verify(request, await _read_jws_body(request), new_account=False)
        row = await _fetch(request, "SELECT authz_id, identifier, status, expires_at, wildcard"
                                    " FROM acme_authorizations WHERE authz_id = %s",
                           (request.match_info["authz_id"],))
        if row is None:
            raise AcmeProblem("malformed", "resource not found", 404)
        challenges = await _fetch_all(
            request, "SELECT challenge_id, type, status, token, validated_at, error"
                     " FROM acme_challenges WHERE authz_id = %s ORDER BY created_at ASC",
            (row["authz_id"],))
    except AcmeProblem as problem:
        return problem.response()
    except psycopg.Error as exc:
        log.error("acme authz lookup failed: %s", exc)
        return _server_error().response()
    body: dict[str, Any] = {"identifier": {"type": row["identifier"].get("type", ""),
                                           "value": row["identifier"].get("value", "")},
                            "status": row["status"], "expires": rfc3339(row["expires_at"])}
    if row["wildcard"]:
        body["wildcard"] = True
    body["challenges"] = [_challenge_json(request, c) for c in challenges]
    return await _success(request, 200, body)


def _challenge_json(request: web.Request, row: dict) -> dict:
    out = {"type": row["type"], "url": resource_url(request, "challenge", row["challenge_id"]),
           "status": row["status"], "token": row["token"]}
    if row["validated_at"]:
        out["validated"] = rfc3339(row["validated_at"])
    if row["error"]:
        out["error"] = {k: row["error"].get(k) for k in ("type", "detail", "status")}
    return out


def csr_names(csr: x509.CertificateRequest) -> set[str]:
    """certctl's CSR identifier set: the lowercased CN plus the DNS SANs."""
    names = {a.value.lower() for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
             if a.value}
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        pass
    return names


async def finalize(request: web.Request) -> web.Response:
    """``POST .../order/{ord_id}/finalize`` (kid): certctl's checks, then its 500."""
    try:
        verified = await verify(request, await _read_jws_body(request), new_account=False)
        payload = _payload_object(verified, "finalize")
        csr_text = payload.get("csr", "")
        if not isinstance(csr_text, str):
            raise _malformed("could not parse finalize payload")
        try:
            der = jws.b64u_decode(csr_text)
        except jws.JWSError:
            raise AcmeProblem("badCSR", "csr field is not valid base64url", 400) from None
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            raise AcmeProblem("badCSR", "csr did not parse as a valid PKCS#10", 400) from None
        problem = await _finalize(request, verified.account["account_id"], csr)
    except AcmeProblem as raised:
        problem = raised
    except psycopg.Error as exc:
        log.error("acme finalize failed: %s", exc)
        problem = _server_error()
    return problem.response()


async def _finalize(request: web.Request, account_id: str,
                    csr: x509.CertificateRequest) -> AcmeProblem:
    """certctl's FinalizeOrder up to where it fails; returns the problem it answers."""
    order = await _owned_order(request, account_id)
    if order["status"] not in ("ready", "processing"):
        raise AcmeProblem("orderNotReady", "order is not in the `ready` state; complete "
                          "authorizations first", 403)
    wanted = {i["value"].lower() for i in order["identifiers"] if i.get("type") == "dns"}
    names = csr_names(csr)
    if names != wanted:
        detail = (f"CSR identifier count ({len(names)}) differs from order identifier count"
                  f" ({len(wanted)})" if len(names) != len(wanted) else
                  f'CSR is missing the order identifier "{sorted(wanted - names)[0]}"')
        error = {"type": ACME_ERROR + "badCSR", "detail": detail, "status": 400}
        async with request.app[POOL].connection() as conn:
            await conn.execute("UPDATE acme_orders SET status = 'invalid', error = %s::jsonb,"
                               " updated_at = NOW() WHERE order_id = %s",
                               (json.dumps(error), order["order_id"]))
        return _server_error()  # certctl answers a CSR mismatch with 500, not 400
    profile_id, _ = await _profile_mode(request)
    async with request.app[POOL].connection() as conn, conn.transaction():
        await conn.execute("UPDATE acme_orders SET status = 'processing', updated_at = NOW()"
                           " WHERE order_id = %s",
                           (order["order_id"],))
        await _audit_tx(conn, account_id, "acme_order_processing", "acme_order",
                        order["order_id"], {"profile_id": profile_id})
    issuers = request.app[ISSUERS]
    if not issuers:
        return _server_error()
    name = sorted(wanted)[0] if wanted else ""
    try:  # certctl's managed-certificate insert: empty owner, team and policy break its FKs
        async with request.app[POOL].connection() as conn:
            await conn.execute(
                "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id,"
                " team_id, issuer_id, renewal_policy_id, status, certificate_profile_id,"
                " source) VALUES (%s, %s, %s, %s, '', '', %s, '', 'Active', %s, 'ACME')",
                ("mc-acme-" + rand_id_suffix(), f"acme-{order['order_id']}", name,
                 sorted(wanted), issuers[0], profile_id))
    except psycopg.Error as exc:
        log.error("acme finalize: cert insert: %s", exc)
    return _server_error()  # even a successful insert leads certctl to a 500 (empty fingerprint)


def order_limiter(config) -> KeyedRateLimiter | None:
    """The per-account new-order bucket (N per hour, refilled continuously), or None when 0."""
    per_hour = config.acme_orders_per_hour
    if per_hour <= 0:
        return None
    return KeyedRateLimiter(RateLimit(enabled=True, rps=per_hour / 3600.0, burst=per_hour))


def add_routes(app: web.Application) -> None:
    """The signed endpoints, per profile and on the shorthand (POST only, as in certctl)."""
    app[ORDER_LIMITER] = order_limiter(app[CONFIG])
    for prefix in ("/acme/profile/{id}", "/acme"):
        app.router.add_post(f"{prefix}/new-account", new_account)
        app.router.add_post(f"{prefix}/account/{{acc_id}}", account)
        app.router.add_post(f"{prefix}/new-order", new_order)
        app.router.add_post(f"{prefix}/order/{{ord_id}}", order)
        app.router.add_post(f"{prefix}/order/{{ord_id}}/finalize", finalize)
        app.router.add_post(f"{prefix}/authz/{{authz_id}}", authz)
