"""The stand-in certctl server: certctl's HTTP contract for the load scenarios, on PostgreSQL.

It is the workbench's embedded default target, not certctl: ``/api/v1/version`` says so
(``"standin": true``) and results measured against it must never be reported as certctl's.
What it reproduces, from ``certctl-contract.md``: the no-auth / auth dispatch, the REST rate
limiter (``ratelimit.py``), the Bearer-key error shapes, the handler error shape with
``request_id``, Go's mux 404/405 texts, the fire-and-forget ``audit_events`` INSERT per
authenticated request, the heartbeat's exact SQL sequence including its stale-row quirk, the
certificate endpoints (``certificates.py``), the ACME reads (``acme.py``) and the signed ACME
endpoints (``acme_orders.py``). Cross-cutting behaviour lives in middlewares, in certctl's
order: request id and recovery, rate limiter, auth, audit, router.

Configuration uses certctl's own variable names (``CERTCTL_RATE_LIMIT_*``,
``CERTCTL_KEYGEN_MODE``, ``CERTCTL_ACME_SERVER_*``); see ``core.config_from_env``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import signal
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workbench.target.standin import acme, acme_orders, certificates
from workbench.target.standin.core import (
    API_KEY_DIGEST,
    API_USER,
    AUDIT_TASKS,
    CONFIG,
    ISSUERS,
    KEY_NAME,
    POOL,
    REQUEST_ID,
    BodyTooLarge,
    StandinConfig,
    config_from_env,
    go_http_error,
    handler_error,
    json_response,
    log,
    read_body,
    record_audit_event,
)
from workbench.target.standin.h2front import AlpnDispatch
from workbench.target.standin.ratelimit import KeyedRateLimiter, source_ip_key, too_many_requests

STANDIN_VERSION = "standin-0.2.0"
POOL_MIN_SIZE = 5  # certctl: SetMaxIdleConns(5)
POOL_MAX_SIZE = 25  # certctl: SetMaxOpenConns(25), shared by requests and audit inserts
READY_PING_TIMEOUT_S = 2.0
AUDIT_FLUSH_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 1 << 20  # certctl: CERTCTL_MAX_BODY_SIZE default 1 MiB

# certctl's outer dispatcher sends exactly these paths through the no-auth chain.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/api/v1/auth/info", "/api/v1/version"})
# certctl's audit middleware skips these prefixes (so e.g. /healthz is authenticated, not audited).
AUDIT_EXCLUDED_PREFIXES = ("/health", "/ready", "/api/v1/version")
# certctl sets these on the no-auth chain always, on the auth chain only with its limiter off.
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer-when-downgrade",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STARTED = web.AppKey("started", float)  # monotonic seconds at build: the metrics' uptime
LIMITERS = web.AppKey("limiters", dict)  # chain name -> KeyedRateLimiter, empty when disabled


# --- middlewares, outermost first (certctl: RequestID, logger, recovery, ..., auth, audit) -----


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, panic recovery and security headers, for both chains."""
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp-level refusals, e.g. an oversized body
        response = go_http_error(exc.status, exc.reason)
    except Exception:
        log.exception("handler failed: %s %s", request.method, request.path)
        response = go_http_error(500, '{"error":"Internal Server Error"}')
    response.headers["X-Request-ID"] = request_id
    # certctl's rate-limited auth chain is built without its security-headers middleware.
    if request.path in PUBLIC_PATHS or not request.app[LIMITERS]:
        response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """certctl's REST limiter: before auth, so keyed by source IP; one instance per chain."""
    limiters = request.app[LIMITERS]
    if limiters:
        chain = "no-auth" if request.path in PUBLIC_PATHS else "auth"
        if not limiters[chain].allow(source_ip_key(request)):
            return too_many_requests()
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """certctl's Bearer API-key check; runs before routing, so unknown paths get 401 too."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header:
        response = go_http_error(401, '{"error":"Authorization header required"}')
        response.headers["WWW-Authenticate"] = 'Bearer realm="certctl"'
        return response
    if len(header) < 8 or not header.startswith("Bearer "):
        return go_http_error(
            401, '{"error":"Invalid Authorization header format, expected: Bearer <token>"}'
        )
    # Compare SHA-256 digests in constant time, as certctl does, so timing leaks nothing.
    presented = hashlib.sha256(header[7:].encode()).digest()
    if not hmac.compare_digest(presented, request.app[API_KEY_DIGEST]):
        return go_http_error(401, '{"error":"Invalid API key"}')
    request[API_USER] = KEY_NAME
    return await handler(request)


@web.middleware
async def audit_api_call(request: web.Request, handler: Handler) -> web.StreamResponse:
    """certctl's API audit: one ``audit_events`` row per authenticated request, not awaited.

    The INSERT competes with request queries for the 25-connection pool, as in certctl; the
    response does not wait for it.
    """
    path = request.path
    if API_USER not in request or path.startswith(AUDIT_EXCLUDED_PREFIXES):
        return await handler(request)
    started = time.perf_counter()
    try:
        body = await read_body(request)  # cached, so the handler can read it again
    except BodyTooLarge:
        body = b""  # the handler answers it (400 on bulk-renew, as certctl does)
    body_hash = hashlib.sha256(body).hexdigest()[:16] if body else ""
    response = await handler(request)
    latency_ms = int((time.perf_counter() - started) * 1000)
    details = {
        "body_hash": body_hash,
        "latency_ms": latency_ms,
        "method": request.method,
        "path": path,
        "status": response.status,
    }
    # certctl: action fmt.Sprintf("api_%s", strings.ToLower(method)), resource type "api".
    task = asyncio.create_task(record_audit_event(
        request.app[POOL], request[API_USER], f"api_{request.method.lower()}", "api", path,
        details))
    tasks = request.app[AUDIT_TASKS]
    tasks.add(task)  # keep a reference so the task is not garbage-collected mid-flight
    task.add_done_callback(tasks.discard)
    return response


@web.middleware
async def go_mux_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer unmatched paths and methods the way Go's ServeMux does (inside auth and audit)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        response = go_http_error(405, "Method Not Allowed")
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPNotFound:
        return go_http_error(404, "404 page not found")


# --- no-auth handlers --------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "healthy"})


async def ready(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            async with request.app[POOL].connection() as conn:
                await conn.execute("SELECT 1")
    except (TimeoutError, psycopg.Error) as exc:
        error = str(exc) or "context deadline exceeded"
        return json_response(503, {"error": error, "status": "db_unavailable"})
    return json_response(200, {"db": "reachable", "status": "ready"})


async def version(request: web.Request) -> web.Response:
    # certctl's VersionInfo fields in struct order, plus the flag that marks the stand-in.
    return json_response(
        200,
        {
            "version": STANDIN_VERSION,
            "commit": request.app[CONFIG].commit,
            "modified": False,
            "build_time": "",
            "go_version": "",
            "standin": True,
        },
    )


async def auth_info(request: web.Request) -> web.Response:
    return json_response(200, {"auth_type": "api-key", "required": True})


# --- authenticated handlers --------------------------------------------------------------------


async def auth_check(request: web.Request) -> web.Response:
    return json_response(200, {"admin": True, "status": "authenticated", "user": request[API_USER]})


_METADATA_FIELDS = ("version", "hostname", "os", "architecture", "ip_address")
# Columns certctl scans into Go strings: a NULL in any of them fails the scan (a 500).
_NOT_NULL_IN_GO = ("os", "architecture", "ip_address", "version")

_SELECT_AGENT = (
    "SELECT id, name, hostname, status, last_heartbeat_at, registered_at, api_key_hash,"
    " os, architecture, ip_address, version, retired_at, retired_reason"
    " FROM agents WHERE id = %s"
)
_TOUCH_HEARTBEAT = "UPDATE agents SET last_heartbeat_at = %s WHERE id = %s AND retired_at IS NULL"
_TOUCH_HEARTBEAT_WITH_METADATA = (
    "UPDATE agents SET last_heartbeat_at = %(now)s,"
    " hostname = CASE WHEN %(hostname)s = '' THEN hostname ELSE %(hostname)s END,"
    " os = CASE WHEN %(os)s = '' THEN os ELSE %(os)s END,"
    " architecture = CASE WHEN %(architecture)s = '' THEN architecture ELSE %(architecture)s END,"
    " ip_address = CASE WHEN %(ip_address)s = '' THEN ip_address ELSE %(ip_address)s END,"
    " version = CASE WHEN %(version)s = '' THEN version ELSE %(version)s END"
    " WHERE id = %(id)s AND retired_at IS NULL"
)
# certctl's AgentRepository.Update: the whole row, from the values the heartbeat read first.
_REWRITE_AGENT = (
    "UPDATE agents SET name = %(name)s, hostname = %(hostname)s, status = %(status)s,"
    " last_heartbeat_at = %(last_heartbeat_at)s, api_key_hash = %(api_key_hash)s, os = %(os)s,"
    " architecture = %(architecture)s, ip_address = %(ip_address)s, version = %(version)s"
    " WHERE id = %(id)s"
)


def parse_heartbeat_metadata(body: bytes) -> dict[str, str] | None:
    """The optional heartbeat body, decoded as Go's json.Decoder would.

    Anything Go fails to decode (not an object, a non-string field) means "no metadata"; so does
    an object whose five fields are all empty. Like Go, only the first JSON value is read, and
    field names match case-insensitively.
    """
    try:
        value, _ = json.JSONDecoder().raw_decode(body.decode("utf-8", "replace").lstrip())
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    metadata = dict.fromkeys(_METADATA_FIELDS, "")
    for key, field_value in value.items():
        field = key.lower()
        if field not in metadata or field_value is None:  # Go leaves a string unchanged on null
            continue
        if not isinstance(field_value, str):
            return None
        metadata[field] = field_value
    return metadata if any(metadata.values()) else None


async def agent_heartbeat(request: web.Request) -> web.Response:
    """``POST /api/v1/agents/{id}/heartbeat``, with certctl's queries in certctl's order."""
    agent_id = request.match_info["id"]
    try:
        metadata = parse_heartbeat_metadata(await read_body(request))
    except BodyTooLarge:
        metadata = None  # certctl's decode fails, which it treats as "no metadata"

    pool = request.app[POOL]
    try:
        # Each statement takes its own pooled connection, as database/sql does without a tx.
        async with pool.connection() as conn:
            cursor = await conn.cursor(row_factory=dict_row).execute(_SELECT_AGENT, (agent_id,))
            agent = await cursor.fetchone()
        if agent is None:
            # A running certctl answers 500, not its coded 404: its repository wraps
            # sql.ErrNoRows before comparing (docs/certctl-verified.md).
            return handler_error(request, 500, "Failed to record heartbeat")
        if any(agent[column] is None for column in _NOT_NULL_IN_GO):
            raise ValueError(f"failed to scan agent {agent_id}: NULL in a string column")
        if agent["retired_at"] is not None:
            return handler_error(request, 410, "Agent has been retired")
        now = datetime.now(UTC)  # certctl passes the Go clock, not SQL now()
        async with pool.connection() as conn:
            if metadata is None:
                cursor = await conn.execute(_TOUCH_HEARTBEAT, (now, agent_id))
            else:
                cursor = await conn.execute(
                    _TOUCH_HEARTBEAT_WITH_METADATA, {**metadata, "now": now, "id": agent_id}
                )
        if cursor.rowcount == 0:
            return handler_error(request, 404, "Agent not found")
    except (psycopg.Error, ValueError) as exc:
        log.error("heartbeat failed: agent_id=%s: %s", agent_id, exc)
        return handler_error(request, 500, "Failed to record heartbeat")

    if agent["status"] != "Online":
        # certctl quirk (contract surprise 11): flipping to Online rewrites the row read above,
        # putting back the stale last_heartbeat_at and metadata. Failures are only logged.
        try:
            async with pool.connection() as conn:
                await conn.execute(_REWRITE_AGENT, {**agent, "status": "Online"})
        except psycopg.Error as exc:
            log.error("failed to update agent status: agent_id=%s: %s", agent_id, exc)
    return json_response(200, {"status": "heartbeat_recorded"})


# certctl's JobRepository.ClaimPendingByAgentID, what it means: Pending deployment jobs of the
# agent (its own, or through its targets) are claimed and flipped to Running, AwaitingCSR
# renewal/issuance jobs of certificates mapped to its targets are listed. certctl v2.0.71 puts
# FOR UPDATE on the UNION of the first two, which PostgreSQL refuses, so every real work poll
# answers 500; the stand-in locks each part on its own and answers what certctl means to.
_CLAIM_PENDING = (
    "SELECT id, type, certificate_id, target_id, status, created_at FROM jobs"
    " WHERE id IN (SELECT id FROM jobs WHERE agent_id = %(a)s AND status = 'Pending'"
    " AND type = 'Deployment' FOR UPDATE SKIP LOCKED)"
    " OR id IN (SELECT j.id FROM jobs j JOIN deployment_targets dt ON j.target_id = dt.id"
    " WHERE j.agent_id IS NULL AND j.status = 'Pending' AND j.type = 'Deployment'"
    " AND dt.agent_id = %(a)s FOR UPDATE OF j SKIP LOCKED) ORDER BY created_at"
)
_MARK_RUNNING = "UPDATE jobs SET status = 'Running', started_at = %s WHERE id = ANY(%s)"
_AWAITING_CSR = (
    "SELECT j.id, j.type, j.certificate_id, j.target_id, j.status FROM jobs j"
    " WHERE j.status = 'AwaitingCSR' AND j.type IN ('Renewal', 'Issuance') AND EXISTS ("
    " SELECT 1 FROM certificate_target_mappings ctm JOIN deployment_targets dt"
    " ON ctm.target_id = dt.id WHERE ctm.certificate_id = j.certificate_id"
    " AND dt.agent_id = %(a)s) ORDER BY j.created_at FOR UPDATE OF j SKIP LOCKED"
)


async def agent_work(request: web.Request) -> web.Response:
    """``GET /api/v1/agents/{id}/work``: ``{"count": n, "jobs": [...]}`` (Go map: sorted keys).

    An unknown agent is a 500 "Failed to get pending work", as certctl's wrapped lookup error.
    """
    agent_id = request.match_info["id"]
    try:
        async with request.app[POOL].connection() as conn:
            found = await (await conn.execute("SELECT 1 FROM agents WHERE id = %s",
                                              (agent_id,))).fetchone()
            if found is None:
                return handler_error(request, 500, "Failed to get pending work")
            async with conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                pending = await (await cur.execute(_CLAIM_PENDING, {"a": agent_id})).fetchall()
                if pending:
                    await conn.execute(_MARK_RUNNING, (datetime.now(UTC),
                                                       [j["id"] for j in pending]))
                awaiting = await (await cur.execute(_AWAITING_CSR, {"a": agent_id})).fetchall()
    except psycopg.Error as exc:
        log.error("work poll failed: agent_id=%s: %s", agent_id, exc)
        return handler_error(request, 500, "Failed to get pending work")
    jobs = [{"id": j["id"], "type": j["type"], "certificate_id": j["certificate_id"],
             "target_id": j["target_id"], "status": j["status"]} for j in pending + awaiting]
    return json_response(200, {"count": len(jobs), "jobs": jobs})


# certctl's GetPrometheusMetrics (contract 13) from its dashboard summary, as COUNTs here:
# revoked first, then expired (status or date), then expiring within 30 days; agents online
# within 5 minutes; jobs Pending, AwaitingCSR, AwaitingApproval or Running count as pending.
_METRICS = (
    "SELECT (SELECT count(*) FROM managed_certificates),"
    " (SELECT count(*) FROM managed_certificates WHERE lower(status) = 'revoked'),"
    " (SELECT count(*) FROM managed_certificates WHERE lower(status) <> 'revoked'"
    "   AND (lower(status) = 'expired' OR expires_at < now())),"
    " (SELECT count(*) FROM managed_certificates WHERE lower(status) NOT IN ('revoked', 'expired')"
    "   AND expires_at >= now() AND expires_at < now() + interval '30 days'),"
    " (SELECT count(*) FROM agents),"
    " (SELECT count(*) FROM agents WHERE last_heartbeat_at > now() - interval '5 minutes'),"
    " (SELECT count(*) FROM jobs"
    "   WHERE status IN ('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running')),"
    " (SELECT count(*) FROM jobs WHERE status = 'Completed'),"
    " (SELECT count(*) FROM jobs WHERE status = 'Failed')"
)
_GAUGES = (("certificate_total", "Total number of managed certificates."),
           ("certificate_active", "Number of active (non-expiring, non-expired, non-revoked) "
                                  "certificates."),
           ("certificate_expiring_soon", "Number of certificates expiring within 30 days."),
           ("certificate_expired", "Number of expired certificates."),
           ("certificate_revoked", "Number of revoked certificates."),
           ("agent_total", "Total number of registered agents."),
           ("agent_online", "Number of agents currently online."),
           ("job_pending", "Number of jobs currently pending."))


async def prometheus_metrics(request: web.Request) -> web.Response:
    """``GET /api/v1/metrics/prometheus``: certctl's hand-written exposition (its gauges, its two
    job counters and uptime; no ``process_*`` or ``go_*`` series), behind the API key."""
    try:
        async with request.app[POOL].connection() as conn:
            row = await (await conn.execute(_METRICS)).fetchone()
    except psycopg.Error as exc:
        log.error("metrics failed: %s", exc)
        return handler_error(request, 500, "Failed to get metrics")
    total, revoked, expired, expiring, agents, online, pending, completed, failed = row
    values = (total, total - expiring - expired - revoked, expiring, expired, revoked, agents,
              online, pending)
    lines = []
    for (name, text), value in zip(_GAUGES, values, strict=True):
        lines += [f"# HELP certctl_{name} {text}", f"# TYPE certctl_{name} gauge",
                  f"certctl_{name} {value}", ""]
    for name, text, value in (("job_completed_total", "Total number of completed jobs.",
                               completed),
                              ("job_failed_total", "Total number of failed jobs.", failed)):
        lines += [f"# HELP certctl_{name} {text}", f"# TYPE certctl_{name} counter",
                  f"certctl_{name} {value}", ""]
    uptime = int(time.monotonic() - request.app[STARTED])
    lines += ["# HELP certctl_uptime_seconds Server uptime in seconds.",
              "# TYPE certctl_uptime_seconds gauge", f"certctl_uptime_seconds {uptime}"]
    return web.Response(status=200, text="\n".join(lines) + "\n",
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _add_routes(app: web.Application) -> None:
    """One line per endpoint here; certificates and ACME register theirs in their modules."""
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/api/v1/version", version)
    app.router.add_get("/api/v1/auth/info", auth_info)
    app.router.add_get("/api/v1/auth/check", auth_check)
    app.router.add_post("/api/v1/agents/{id}/heartbeat", agent_heartbeat)
    app.router.add_get("/api/v1/agents/{id}/work", agent_work)
    app.router.add_get("/api/v1/metrics/prometheus", prometheus_metrics)
    certificates.add_routes(app)
    acme.add_routes(app)
    acme_orders.add_routes(app)


# --- application lifecycle ---------------------------------------------------------------------


def schema_sql() -> str:
    return resources.files("workbench.target.standin").joinpath("schema.sql").read_text()


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Open the pool and apply the schema on start; drain audit inserts and close on stop."""
    pool = AsyncConnectionPool(
        app[CONFIG].dsn,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        kwargs={"autocommit": True},  # each statement its own transaction, like database/sql
        open=False,
        name="standin",
    )
    await pool.open(wait=True, timeout=15)
    async with pool.connection() as conn:
        await conn.execute(schema_sql())  # no parameters: one multi-statement implicit transaction
        # certctl builds its issuer registry once at boot from the enabled issuers.
        cursor = await conn.execute("SELECT id FROM issuers WHERE enabled ORDER BY id")
        app[ISSUERS] = [row[0] for row in await cursor.fetchall()]
    app[POOL] = pool
    yield
    pending = app[AUDIT_TASKS]
    if pending:  # like certctl's audit Flush on shutdown
        await asyncio.wait(pending, timeout=AUDIT_FLUSH_TIMEOUT_S)
    await pool.close()


def build_app(config: StandinConfig) -> web.Application:
    app = web.Application(
        middlewares=[request_context, rate_limit, authenticate, audit_api_call, go_mux_errors],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONFIG] = config
    app[STARTED] = time.monotonic()
    limit = config.rate_limit
    app[LIMITERS] = ({"auth": KeyedRateLimiter(limit), "no-auth": KeyedRateLimiter(limit)}
                     if limit.enabled else {})
    app[ISSUERS] = []
    app[API_KEY_DIGEST] = hashlib.sha256(config.api_key.encode()).digest()
    app[AUDIT_TASKS] = set()
    app.cleanup_ctx.append(_database)
    _add_routes(app)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.3 only, like certctl; ALPN offers h2 and http/1.1, as certctl does."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2", "http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve(app: web.Application, host: str, port: int, context: ssl.SSLContext) -> None:
    """Serve ``app`` over TLS until SIGINT/SIGTERM: HTTP/2 or HTTP/1.1, as ALPN decides.

    aiohttp's runner owns the application's life (start-up, clean-up, closing connections on
    shutdown) as ``web.run_app`` did; the listener hands each connection to aiohttp's HTTP/1.1
    protocol or to the HTTP/2 front (``h2front``).
    """
    runner = web.AppRunner(app, access_log=None,  # per-request logging costs more than handlers
                           shutdown_timeout=5.0)
    await runner.setup()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: AlpnDispatch(runner.server, app), host, port, ssl=context,
        backlog=1024,  # the ACME scenario opens ~200 connections at once
        reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        listener.close()
        await runner.cleanup()


def _libpq_dsn(dsn: str) -> str:
    """Accept a SQLAlchemy URL too (``postgresql+psycopg://...``); libpq wants ``postgresql://``."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme.split('+')[0]}://{rest}" if sep and scheme.startswith("postgresql") else dsn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.target.standin",
        description="The workbench's stand-in certctl server (a test target, not certctl).",
    )
    parser.add_argument("--dsn", required=True, help="PostgreSQL conninfo, URI or SQLAlchemy URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--token-file", required=True, help="file holding the accepted API key")
    parser.add_argument("--commit", default="unknown", help="reported as the version's commit")
    parser.add_argument(
        "--rate-limit", choices=("on", "off"),
        help="certctl's REST limiter (default: CERTCTL_RATE_LIMIT_ENABLED, else off); its rate "
             "and burst come from CERTCTL_RATE_LIMIT_RPS / _BURST (50 and 100)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.setLevel(logging.INFO)

    api_key = Path(args.token_file).read_text().strip()
    if not api_key:
        parser.error(f"{args.token_file} is empty")
    config = config_from_env(_libpq_dsn(args.dsn), api_key, args.commit,
                             rate_limit_enabled=None if args.rate_limit is None
                             else args.rate_limit == "on")
    app = build_app(config)
    limit = config.rate_limit
    log.info("stand-in certctl listening on https://%s:%d (rate limiter %s; ACME per-account"
             " limits %s)", args.host, args.port,
             f"on: {limit.rps:g} req/s, burst {limit.burst}" if limit.enabled else "off",
             f"{config.acme_orders_per_hour}/h, {config.acme_concurrent_orders} concurrent"
             if config.acme_orders_per_hour or config.acme_concurrent_orders else "off")
    asyncio.run(serve(app, args.host, args.port, tls_context(args.cert, args.key)))
    return 0
