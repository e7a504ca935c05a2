"""Certificate endpoints: create and list (certctl's api_tier) and bulk renewal (scenario A).

Each handler issues certctl's statements in certctl's order, one autocommit statement per
pooled connection as Go's ``database/sql`` does outside a transaction (contract section 5):

* ``GET /api/v1/certificates``: ``COUNT(*)``, the page ``ORDER BY created_at`` (no index), the
  target mappings of the page; ``{"data","total","page","per_page"}``.
* ``POST /api/v1/certificates``: certctl's required-field checks, one INSERT, 201 with the row;
  any database error, a duplicate ``name`` included, is a 500.
* ``POST /api/v1/certificates/bulk-renew``: criteria mode lists at most 50 certificates (the
  repository clamps ``PerPage`` 10000 to 50), oldest ``created_at`` first; ``certificate_ids``
  mode fetches each id. Per certificate: skip ``Archived``/``Revoked``/``Expired``/
  ``RenewalInProgress``, else a full-row UPDATE to ``RenewalInProgress`` (``updated_at`` not
  bumped), then a jobs INSERT (``AwaitingCSR`` in agent keygen mode). One audit row at the end.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workbench.target.standin.core import (
    API_USER,
    CONFIG,
    GO_ZERO_TIME,
    POOL,
    BodyTooLarge,
    generate_id,
    go_time,
    handler_error,
    json_response,
    log,
    read_body,
    record_audit_event,
)
from workbench.target.standin.godecode import STR, STR_MAP, STRS, TIME, GoDecodeError, decode_struct

CERT_COLUMNS = (
    "id, name, common_name, sans, environment, owner_id, team_id, issuer_id, renewal_policy_id,"
    " certificate_profile_id, status, expires_at, tags, last_renewal_at, last_deployment_at,"
    " revoked_at, revocation_reason, source, created_at, updated_at"
)
SKIPPED_STATUSES = frozenset({"Archived", "Revoked", "Expired", "RenewalInProgress"})
BULK_PER_PAGE = 10_000  # what certctl's bulk service asks for; the repository clamps it to 50
MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50

# certctl's sort names for ?sort= (anything else keeps created_at).
_SORT_FIELDS = {
    "notAfter": "expires_at", "expiresAt": "expires_at", "createdAt": "created_at",
    "updatedAt": "updated_at", "commonName": "common_name", "name": "name",
    "status": "status", "environment": "environment",
}  # fmt: skip
# domain.ManagedCertificate's JSON fields, for decoding a create body.
_CERT_FIELDS = {
    "id": STR, "name": STR, "common_name": STR, "sans": STRS, "environment": STR,
    "owner_id": STR, "team_id": STR, "issuer_id": STR, "target_ids": STRS,
    "renewal_policy_id": STR, "certificate_profile_id": STR, "status": STR,
    "expires_at": TIME, "tags": STR_MAP, "last_renewal_at": TIME, "last_deployment_at": TIME,
    "revoked_at": TIME, "revocation_reason": STR, "created_at": TIME, "updated_at": TIME,
    "source": STR,
}  # fmt: skip
_BULK_FIELDS = {"profile_id": STR, "owner_id": STR, "agent_id": STR, "issuer_id": STR,
                "team_id": STR, "certificate_ids": STRS}
_REQUIRED = ("owner_id", "team_id", "issuer_id", "name", "renewal_policy_id")
_BULK_EMPTY = ("At least one filter criterion is required (profile_id, owner_id, agent_id,"
               " issuer_id, team_id, or certificate_ids)")


class ScanError(ValueError):
    """A row certctl's ``rows.Scan`` would refuse (a NULL in a Go string or time field...)."""


# --- rows --------------------------------------------------------------------------------------


def scan_certificate(row: dict[str, Any]) -> dict[str, Any]:
    """Check a row as certctl's scan does; returns it with Go's zero values filled in."""
    if row["environment"] is None:
        raise ScanError(f"failed to scan certificate {row['id']}: NULL environment")
    if row["expires_at"] is None:
        raise ScanError(f"failed to scan certificate {row['id']}: NULL expires_at")
    tags = row["tags"]
    if tags is not None and (not isinstance(tags, dict)
                             or not all(isinstance(v, str) for v in tags.values())):
        raise ScanError(f"failed to unmarshal tags of {row['id']}: not string to string")
    return {**row, "certificate_profile_id": row["certificate_profile_id"] or "",
            "revocation_reason": row["revocation_reason"] or "", "source": row["source"] or ""}


def certificate_json(cert: dict[str, Any], target_ids: list[str] | None) -> dict[str, Any]:
    """``domain.ManagedCertificate`` as Go encodes it: field order, omitempty fields dropped."""
    out: dict[str, Any] = {
        "id": cert["id"], "name": cert["name"], "common_name": cert["common_name"],
        "sans": cert["sans"], "environment": cert["environment"], "owner_id": cert["owner_id"],
        "team_id": cert["team_id"], "issuer_id": cert["issuer_id"], "target_ids": target_ids,
        "renewal_policy_id": cert["renewal_policy_id"],
    }  # fmt: skip
    if cert["certificate_profile_id"]:
        out["certificate_profile_id"] = cert["certificate_profile_id"]
    out["status"] = cert["status"]
    out["expires_at"] = go_time(cert["expires_at"])
    out["tags"] = cert["tags"]
    for column in ("last_renewal_at", "last_deployment_at", "revoked_at"):
        if cert[column] is not None:
            out[column] = go_time(cert[column])
    if cert["revocation_reason"]:
        out["revocation_reason"] = cert["revocation_reason"]
    out["created_at"] = go_time(cert["created_at"])
    out["updated_at"] = go_time(cert["updated_at"])
    if cert["source"]:
        out["source"] = cert["source"]
    return out


async def _fetch(pool: AsyncConnectionPool, query: str, params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = await conn.cursor(row_factory=dict_row).execute(query, params)
        return await cursor.fetchall()


async def get_certificate(pool: AsyncConnectionPool, cert_id: str) -> dict[str, Any] | None:
    """certctl's ``CertificateRepository.Get``: the row, then its target ids (two statements)."""
    rows = await _fetch(pool, f"SELECT {CERT_COLUMNS} FROM managed_certificates WHERE id = %s",
                        (cert_id,))
    if not rows:
        return None
    cert = scan_certificate(rows[0])
    mappings = await _fetch(pool, "SELECT target_id FROM certificate_target_mappings"
                                  " WHERE certificate_id = %s ORDER BY target_id ASC", (cert_id,))
    cert["target_ids"] = [m["target_id"] for m in mappings]
    return cert


async def list_certificates(pool: AsyncConnectionPool, filters: dict[str, str], page: int,
                            per_page: int, sort: str = "created_at",
                            descending: bool = False) -> tuple[list[dict[str, Any]], int]:
    """certctl's ``CertificateRepository.List``: COUNT, page, target mappings of the page."""
    if per_page == 0 or per_page > MAX_PER_PAGE:
        per_page = DEFAULT_PER_PAGE  # the clamp that caps criteria-mode bulk renewal at 50
    page = max(page, 1)
    where, args = [], []
    for column in ("status", "environment", "owner_id", "team_id", "issuer_id"):
        if filters.get(column):
            where.append(f"{column} = %s")
            args.append(filters[column])
    if filters.get("profile_id"):
        where.append("certificate_profile_id = %s")
        args.append(filters["profile_id"])
    if filters.get("agent_id"):
        where.append("id IN (SELECT DISTINCT certificate_id FROM certificate_target_mappings ctm"
                     " JOIN deployment_targets dt ON ctm.target_id = dt.id"
                     " WHERE dt.agent_id = %s)")
        args.append(filters["agent_id"])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    async with pool.connection() as conn:
        cursor = await conn.execute(f"SELECT COUNT(*) FROM managed_certificates {clause}", args)
        total = (await cursor.fetchone())[0]
    rows = await _fetch(
        pool,
        f"SELECT {CERT_COLUMNS} FROM managed_certificates {clause}"
        f" ORDER BY {sort} {'DESC' if descending else 'ASC'} LIMIT %s OFFSET %s",
        [*args, per_page, (page - 1) * per_page],
    )
    certs = [scan_certificate(row) for row in rows]
    if certs:
        mappings = await _fetch(
            pool, "SELECT certificate_id, target_id FROM certificate_target_mappings"
                  " WHERE certificate_id = ANY(%s) ORDER BY certificate_id, target_id ASC",
            ([c["id"] for c in certs],))
        by_cert: dict[str, list[str]] = {}
        for m in mappings:
            by_cert.setdefault(m["certificate_id"], []).append(m["target_id"])
        for cert in certs:
            cert["target_ids"] = by_cert.get(cert["id"], [])
    return certs, total


# --- GET /api/v1/certificates ------------------------------------------------------------------


def _positive_int(text: str | None, limit: int | None = None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    if value is None or value <= 0 or (limit is not None and value > limit):
        return None
    return value


async def list_handler(request: web.Request) -> web.Response:
    query = request.query
    filters = {k: query.get(k, "") for k in ("status", "environment", "owner_id", "team_id",
                                             "issuer_id", "agent_id", "profile_id")}
    page = _positive_int(query.get("page")) or 1
    per_page = _positive_int(query.get("per_page"), MAX_PER_PAGE) or DEFAULT_PER_PAGE
    page_size = _positive_int(query.get("page_size"), MAX_PER_PAGE)
    sort, descending = query.get("sort", ""), False
    if sort.startswith("-"):
        sort, descending = sort[1:], True
    elif sort:
        descending = query.get("sort_desc") == "true"
    try:
        certs, total = await list_certificates(
            request.app[POOL], filters, page, page_size or per_page,
            _SORT_FIELDS.get(sort, "created_at"), descending)
    except (psycopg.Error, ScanError) as exc:
        log.error("list certificates failed: %s", exc)
        return handler_error(request, 500, "Failed to list certificates")
    return json_response(200, {
        "data": [certificate_json(c, c["target_ids"]) for c in certs],
        "total": total, "page": page, "per_page": per_page,
    })  # fmt: skip


# --- POST /api/v1/certificates -----------------------------------------------------------------


def common_name_problem(cn: str) -> str | None:
    """certctl's ``ValidateCommonName`` message for a bad common name, else None."""
    if len(cn) > 253:
        return "common_name must be 253 characters or fewer"
    if "@" in cn:
        _, address = parseaddr(cn)
        return None if "@" in address else "invalid email format for S/MIME common name"
    try:
        ipaddress.ip_address(cn)
        return None
    except ValueError:
        pass
    for char in cn:
        if not (char.isascii() and (char.isalnum() or char in ".-_*")):
            return f"invalid hostname format: hostname contains invalid character: {char}"
    for label in cn.split("."):
        if not label:
            return "invalid hostname format: hostname has empty label"
        if label.startswith("-") or label.endswith("-"):
            return "invalid hostname format: hostname labels cannot start or end with hyphen"
    return None


_INSERT_CERT = (
    f"INSERT INTO managed_certificates ({CERT_COLUMNS})"
    " VALUES (%(id)s, %(name)s, %(common_name)s, %(sans)s, %(environment)s, %(owner_id)s,"
    " %(team_id)s, %(issuer_id)s, %(renewal_policy_id)s, %(certificate_profile_id)s, %(status)s,"
    " %(expires_at)s, %(tags)s::jsonb, %(last_renewal_at)s, %(last_deployment_at)s,"
    " %(revoked_at)s, %(revocation_reason)s, %(source)s, %(created_at)s, %(updated_at)s)"
    " RETURNING id"
)


async def create_handler(request: web.Request) -> web.Response:
    try:
        body = decode_struct(await read_body(request), _CERT_FIELDS)
    except (GoDecodeError, BodyTooLarge):
        return handler_error(request, 400, "Invalid request body")
    cn = body.get("common_name", "")
    if not cn:
        return handler_error(request, 400, "common_name is required")
    if problem := common_name_problem(cn):
        return handler_error(request, 400, problem)
    for field in _REQUIRED:
        if not body.get(field):
            return handler_error(request, 400, f"{field} is required")
    now = datetime.now(UTC)
    cert = {
        "id": body.get("id") or generate_id("cert"), "name": body["name"], "common_name": cn,
        "sans": body.get("sans"), "environment": body.get("environment", ""),
        "owner_id": body["owner_id"], "team_id": body["team_id"],
        "issuer_id": body["issuer_id"], "renewal_policy_id": body["renewal_policy_id"],
        "certificate_profile_id": body.get("certificate_profile_id", ""),
        "status": body.get("status") or "Pending",
        "expires_at": body.get("expires_at", GO_ZERO_TIME),  # Go's zero time, as certctl stores
        "tags": body.get("tags", {}), "last_renewal_at": body.get("last_renewal_at"),
        "last_deployment_at": body.get("last_deployment_at"),
        "revoked_at": body.get("revoked_at"),
        "revocation_reason": body.get("revocation_reason", ""),
        "source": body.get("source", ""), "created_at": body.get("created_at", now),
        "updated_at": body.get("updated_at", now),
    }  # fmt: skip
    row = {**cert, "tags": json.dumps(cert["tags"]),
           "certificate_profile_id": cert["certificate_profile_id"] or None,
           "revocation_reason": cert["revocation_reason"] or None}
    try:
        async with request.app[POOL].connection() as conn:
            await conn.execute(_INSERT_CERT, row)
    except psycopg.Error as exc:  # certctl: a duplicate name or a missing FK row is a 500 too
        log.error("failed to create certificate %s: %s", cert["name"], exc)
        return handler_error(request, 500, "Failed to create certificate")
    return json_response(201, certificate_json(cert, body.get("target_ids")))


# --- POST /api/v1/certificates/bulk-renew ------------------------------------------------------

_UPDATE_CERT = (
    "UPDATE managed_certificates SET name = %(name)s, common_name = %(common_name)s,"
    " sans = %(sans)s, environment = %(environment)s, owner_id = %(owner_id)s,"
    " team_id = %(team_id)s, issuer_id = %(issuer_id)s,"
    " certificate_profile_id = %(certificate_profile_id)s, status = %(status)s,"
    " expires_at = %(expires_at)s, tags = %(tags)s::jsonb, last_renewal_at = %(last_renewal_at)s,"
    " last_deployment_at = %(last_deployment_at)s, revoked_at = %(revoked_at)s,"
    " revocation_reason = %(revocation_reason)s, source = %(source)s,"
    " updated_at = %(updated_at)s WHERE id = %(id)s"
)
_INSERT_JOB = (
    "INSERT INTO jobs (id, type, certificate_id, target_id, agent_id, status, attempts,"
    " max_attempts, last_error, scheduled_at, started_at, completed_at, created_at)"
    " VALUES (%s, %s, %s, NULL, NULL, %s, 0, 3, NULL, %s, NULL, NULL, %s) RETURNING id"
)


async def _resolve(pool: AsyncConnectionPool, criteria: dict[str, Any]) -> list[dict[str, Any]]:
    """certctl's ``resolveCertificates``: ids one by one, or one clamped page of the filter."""
    ids = criteria.get("certificate_ids") or []
    filters = {k: criteria.get(k, "") for k in ("owner_id", "team_id", "issuer_id", "agent_id",
                                                "profile_id")}
    if ids and not any(filters.values()):
        certs = []
        for cert_id in ids:
            try:
                cert = await get_certificate(pool, cert_id)
            except ScanError:
                cert = None  # certctl drops any id whose Get fails, silently
            if cert is not None:
                certs.append(cert)
        return certs
    certs, _ = await list_certificates(pool, filters, 1, BULK_PER_PAGE)
    if ids:
        wanted = set(ids)
        certs = [c for c in certs if c["id"] in wanted]
    return certs


def _update_row(cert: dict[str, Any]) -> dict[str, Any]:
    return {**cert, "tags": json.dumps(cert["tags"]),
            "certificate_profile_id": cert["certificate_profile_id"] or None,
            "revocation_reason": cert["revocation_reason"] or None}


async def bulk_renew_handler(request: web.Request) -> web.Response:
    try:
        criteria = decode_struct(await read_body(request), _BULK_FIELDS)
    except (GoDecodeError, BodyTooLarge):
        return handler_error(request, 400, "Invalid request body")  # not 413, as in certctl
    if not any(criteria.get(k) for k in _BULK_FIELDS):
        return handler_error(request, 400, _BULK_EMPTY)
    pool = request.app[POOL]
    try:
        certs = await _resolve(pool, criteria)
    except (psycopg.Error, ScanError) as exc:
        return handler_error(request, 500, "Bulk renewal failed: failed to resolve "
                                           f"certificates: {exc}")
    job_status = "AwaitingCSR" if request.app[CONFIG].keygen_mode == "agent" else "Pending"
    matched, enqueued, skipped, failed = len(certs), 0, 0, 0
    jobs: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    for cert in certs:
        if cert["status"] in SKIPPED_STATUSES:
            skipped += 1
            continue
        try:  # no transaction: a failed job INSERT leaves the status flipped, as in certctl
            async with pool.connection() as conn:
                cursor = await conn.execute(_UPDATE_CERT,
                                            _update_row({**cert, "status": "RenewalInProgress"}))
            if cursor.rowcount == 0:
                raise LookupError("certificate not found")
        except (psycopg.Error, LookupError) as exc:
            failed += 1
            errors.append({"certificate_id": cert["id"],
                           "error": f"failed to update certificate status: {exc}"})
            continue
        expires = cert["expires_at"]
        job_type = "Issuance" if expires.year < 2000 else "Renewal"
        job_id, now = generate_id("job"), datetime.now(UTC)
        try:
            async with pool.connection() as conn:
                await conn.execute(_INSERT_JOB, (job_id, job_type, cert["id"], job_status,
                                                 now, now))
        except psycopg.Error as exc:
            failed += 1
            errors.append({"certificate_id": cert["id"],
                           "error": f"failed to create renewal job: {exc}"})
            continue
        enqueued += 1
        jobs.append({"certificate_id": cert["id"], "job_id": job_id})

    details: dict[str, Any] = {k: criteria[k] for k in ("profile_id", "owner_id", "agent_id",
                                                        "issuer_id", "team_id") if criteria.get(k)}
    if criteria.get("certificate_ids"):
        details["certificate_ids"] = ",".join(criteria["certificate_ids"])
    details |= {"total_matched": matched, "total_enqueued": enqueued,
                "total_skipped": skipped, "total_failed": failed}
    await record_audit_event(pool, request.get(API_USER, "api"), "bulk_renewal_initiated",
                             "certificate", "bulk", details)
    result: dict[str, Any] = {"total_matched": matched, "total_enqueued": enqueued,
                              "total_skipped": skipped, "total_failed": failed}
    if jobs:
        result["enqueued_jobs"] = jobs
    if errors:
        result["errors"] = errors
    return json_response(200, result)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/certificates", list_handler)
    app.router.add_post("/api/v1/certificates", create_handler)
    app.router.add_post("/api/v1/certificates/bulk-renew", bulk_renew_handler)
