"""The ACME endpoints certctl's load scenarios read: directory, new-nonce, renewal-info (ARI).

certctl's shapes (contract sections 7.1-7.4): per-profile paths ``/acme/profile/{id}/...`` and
the ``/acme/...`` shorthand (403 ``userActionRequired`` unless a default profile is set); an
unknown profile is 500 ``serverInternal``, as the running certctl answers (not its coded 404);
every URL built from ``https://`` + the request's Host header; problems as
``application/problem+json`` without ``Replay-Nonce``. Nonces are 32 random bytes in base64url,
stored in ``acme_nonces`` and consumable once with certctl's own UPDATE. ARI ignores the AKI,
renders the serial as lowercase unpadded hex and looks it up under one issuer picked at random
from the enabled issuers known at boot, exactly the trap certctl has (surprise 6).
These routes sit behind the Bearer check, as certctl's dispatcher puts them (surprise 1).
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workbench.target.standin.certificates import ScanError, get_certificate
from workbench.target.standin.core import CONFIG, ISSUERS, POOL, go_json, go_time, log

PROBLEM_CONTENT_TYPE = "application/problem+json"
ACME_ERROR = "urn:ietf:params:acme:error:"
_SHORTHAND_DETAIL = ("this server requires the per-profile path /acme/profile/<id>/* — "
                     "set CERTCTL_ACME_SERVER_DEFAULT_PROFILE_ID for /acme/* shorthand")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
EXPIRED_WINDOW = timedelta(hours=24)  # certctl's window for an already expired cert


class AcmeProblem(Exception):
    """An RFC 7807 problem in certctl's shape: ``{"type","detail","status"}``."""

    def __init__(self, kind: str, detail: str, status: int) -> None:
        super().__init__(detail)
        self.type = ACME_ERROR + kind
        self.detail = detail
        self.status = status

    def response(self) -> web.Response:
        body = go_json({"type": self.type, "detail": self.detail, "status": self.status})
        response = web.Response(status=self.status, body=body)
        response.headers["Content-Type"] = PROBLEM_CONTENT_TYPE
        return response


def _server_internal(detail: str = "ACME server error") -> AcmeProblem:
    return AcmeProblem("serverInternal", detail, 500)


# --- nonces ------------------------------------------------------------------------------------


def new_nonce_value() -> str:
    """32 random bytes, base64url without padding (43 characters), as certctl generates them."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


async def issue_nonce(pool: AsyncConnectionPool, ttl_s: float) -> str:
    nonce = new_nonce_value()
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO acme_nonces (nonce, issued_at, expires_at, used)"
                           " VALUES (%s, NOW(), %s, FALSE)",
                           (nonce, datetime.now(UTC) + timedelta(seconds=ttl_s)))
    return nonce


async def consume_nonce(conn: psycopg.AsyncConnection, nonce: str) -> bool:
    """certctl's ``ConsumeNonce``: True once for an issued, unexpired nonce; False otherwise."""
    cursor = await conn.execute("UPDATE acme_nonces SET used = TRUE WHERE nonce = %s"
                                " AND used = FALSE AND expires_at > NOW()", (nonce,))
    return cursor.rowcount == 1


# --- profiles and URLs -------------------------------------------------------------------------


async def resolve_profile(request: web.Request) -> str:
    """The path's profile (or the default for the shorthand), checked to exist."""
    profile_id = request.match_info.get("id", "")
    if not profile_id:
        profile_id = request.app[CONFIG].acme_default_profile
        if not profile_id:
            raise AcmeProblem("userActionRequired", _SHORTHAND_DETAIL, 403)
    try:
        async with request.app[POOL].connection() as conn:
            cursor = await conn.execute(
                "SELECT id, name, description, allowed_key_algorithms, max_ttl_seconds,"
                " allowed_ekus, required_san_patterns, spiffe_uri_pattern, allow_short_lived,"
                " enabled, created_at, updated_at FROM certificate_profiles WHERE id = %s",
                (profile_id,))
            found = await cursor.fetchone()
    except psycopg.Error as exc:
        log.error("acme profile lookup failed: %s", exc)
        raise _server_internal() from None
    if found is None:  # disabled profiles still resolve, as in certctl
        # certctl's code maps this to 404 "profile not found"; the running server answers 500,
        # its repository wrapping the not-found error before the check (certctl-verified.md).
        raise _server_internal()
    return profile_id


def base_url(request: web.Request) -> str:
    """certctl's directory base: scheme + request Host + the profile prefix."""
    scheme = "https" if request.secure else "http"
    profile_id = request.match_info.get("id", "")
    prefix = f"/acme/profile/{profile_id}" if profile_id else "/acme"
    return f"{scheme}://{request.host}{prefix}"


# --- handlers ----------------------------------------------------------------------------------


async def directory(request: web.Request) -> web.Response:
    """``GET .../directory``: profile check, a nonce INSERT, the directory JSON."""
    try:
        await resolve_profile(request)
    except AcmeProblem as problem:
        return problem.response()
    base = base_url(request)
    payload = {"newNonce": f"{base}/new-nonce", "newAccount": f"{base}/new-account",
               "newOrder": f"{base}/new-order", "revokeCert": f"{base}/revoke-cert",
               "keyChange": f"{base}/key-change"}
    if request.app[CONFIG].ari_enabled:
        payload["renewalInfo"] = f"{base}/renewal-info"
    response = web.Response(status=200, body=go_json(payload))
    try:
        response.headers["Replay-Nonce"] = await issue_nonce(request.app[POOL],
                                                             request.app[CONFIG].nonce_ttl_s)
    except psycopg.Error as exc:  # certctl omits the header when the nonce INSERT fails
        log.error("directory nonce failed: %s", exc)
    response.headers["Cache-Control"] = "public, max-age=0, no-cache"
    response.headers["Content-Type"] = "application/json"
    return response


async def new_nonce(request: web.Request) -> web.Response:
    """``HEAD .../new-nonce`` → 200, ``GET`` → 204; both empty with ``Replay-Nonce``."""
    try:
        await resolve_profile(request)
        try:
            nonce = await issue_nonce(request.app[POOL], request.app[CONFIG].nonce_ttl_s)
        except psycopg.Error as exc:
            log.error("nonce issuance failed: %s", exc)
            raise _server_internal("nonce issuance failed") from None
    except AcmeProblem as problem:
        return problem.response()
    response = web.Response(status=200 if request.method == "HEAD" else 204)
    response.headers["Replay-Nonce"] = nonce
    response.headers["Cache-Control"] = "no-store"
    return response


def _b64url_decode(part: str) -> bytes:
    """Go's ``base64.RawURLEncoding.DecodeString`` (no padding; CR and LF are skipped)."""
    part = part.replace("\r", "").replace("\n", "")
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise ValueError("illegal base64 data")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def parse_ari_cert_id(cert_id: str) -> tuple[bytes, bytes]:
    """(AKI, serial) from ``base64url(AKI).base64url(serial)``; ValueError when malformed."""
    parts = cert_id.split(".")
    if len(parts) != 2:
        raise ValueError(f"cert-id is not <aki>.<serial>: got {len(parts)} parts")
    if not parts[0] or not parts[1]:
        raise ValueError("cert-id has empty AKI or serial")
    aki, serial = _b64url_decode(parts[0]), _b64url_decode(parts[1])
    if not aki or not serial:
        raise ValueError("cert-id has empty AKI or serial")
    return aki, serial


def serial_hex(serial: bytes) -> str:
    """The serial as certctl matches it: unsigned big-endian, lowercase hex, no leading zeros."""
    return format(int.from_bytes(serial, "big"), "x")


def renewal_window(expires_at: datetime, not_before: datetime | None,
                   window_days: int | None, now: datetime) -> tuple[datetime, datetime]:
    """certctl's ``ComputeRenewalWindow`` (RFC 9773 suggested window)."""
    not_after = expires_at.astimezone(UTC)
    start_of_validity = not_before.astimezone(UTC) if not_before else not_after
    if now > not_after:
        return now, now + EXPIRED_WINDOW
    if window_days and window_days > 0:
        window = timedelta(days=window_days)
        start = not_after - window
        end = start + window / 2
        start = max(start, now)
        return start, max(end, start)
    validity = not_after - start_of_validity
    if validity <= timedelta(0):
        return not_after - timedelta(hours=24), not_after
    third = validity / 3
    start = max(not_after - third, now)
    return start, max(not_after - third / 3, start)


async def _fetch_one(pool: AsyncConnectionPool, query: str, params: Any) -> dict | None:
    async with pool.connection() as conn:
        cursor = await conn.cursor(row_factory=dict_row).execute(query, params)
        return await cursor.fetchone()


async def renewal_info(request: web.Request) -> web.Response:
    """``GET .../renewal-info/{cert_id}``: certctl's lookup chain and window, or its problems."""
    config = request.app[CONFIG]
    try:
        if not config.ari_enabled:
            raise AcmeProblem("malformed", "ACME Renewal Information is disabled on this server",
                              404)
        await resolve_profile(request)
        try:
            _, serial = parse_ari_cert_id(request.match_info["cert_id"])
        except ValueError:
            raise AcmeProblem("malformed", "ARI cert-id is malformed", 400) from None
        window = await _lookup_window(request, serial_hex(serial))
    except AcmeProblem as problem:
        return problem.response()
    start, end = window
    body = {"suggestedWindow": {"start": go_time(start), "end": go_time(end)}}
    response = web.Response(status=200, body=go_json(body))
    response.headers["Retry-After"] = str(max(config.ari_poll_interval_s, 1))
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


async def _lookup_window(request: web.Request, serial: str) -> tuple[datetime, datetime]:
    not_found = AcmeProblem("malformed", "resource not found", 404)
    issuers = request.app[ISSUERS]
    if not issuers:
        raise not_found
    issuer_id = random.choice(issuers)  # certctl: first key of a Go map, i.e. a random pick
    pool = request.app[POOL]
    try:
        version = await _fetch_one(
            pool,
            "SELECT cv.id, cv.certificate_id, cv.serial_number, cv.not_before, cv.not_after,"
            " cv.fingerprint_sha256, cv.pem_chain, cv.csr_pem, cv.key_algorithm, cv.key_size,"
            " cv.created_at FROM certificate_versions cv"
            " JOIN managed_certificates mc ON mc.id = cv.certificate_id"
            " WHERE mc.issuer_id = %s AND cv.serial_number = %s"
            " ORDER BY cv.created_at DESC LIMIT 1", (issuer_id, serial))
        if version is None:
            raise not_found
        cert = await get_certificate(pool, version["certificate_id"])
        if cert is None:
            raise not_found
        policy = None
        if cert["renewal_policy_id"]:
            policy = await _fetch_one(pool, "SELECT id, name, renewal_window_days FROM"
                                            " renewal_policies WHERE id = %s",
                                      (cert["renewal_policy_id"],))
    except (psycopg.Error, ScanError) as exc:
        log.error("renewal-info lookup failed: %s", exc)
        raise not_found from None  # certctl maps every lookup failure to not found
    return renewal_window(cert["expires_at"], version["not_before"],
                          policy["renewal_window_days"] if policy else None, datetime.now(UTC))


def add_routes(app: web.Application) -> None:
    """Per-profile routes and the shorthand, with Go's method rules (GET also answers HEAD)."""
    for prefix in ("/acme/profile/{id}", "/acme"):
        app.router.add_get(f"{prefix}/directory", directory)
        app.router.add_get(f"{prefix}/new-nonce", new_nonce, allow_head=False)
        app.router.add_route("HEAD", f"{prefix}/new-nonce", new_nonce)
        app.router.add_get(f"{prefix}/renewal-info/{{cert_id}}", renewal_info)
