"""What every stand-in handler shares: configuration, app keys and certctl's response shapes.

Kept apart from ``server.py`` so the endpoint modules (``certificates``, ``acme``) and the
middlewares can import it without a cycle.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("workbench.target.standin")

KEY_NAME = "standin-key"  # the name certctl would give a named API key; shows up as audit actor


@dataclass(frozen=True)
class RateLimit:
    """certctl's REST limiter settings (``CERTCTL_RATE_LIMIT_*``)."""

    enabled: bool = False
    rps: float = 50.0
    burst: int = 100


@dataclass(frozen=True)
class StandinConfig:
    dsn: str  # libpq conninfo or URI
    api_key: str = field(repr=False)  # must never reach a log line or traceback
    commit: str = "unknown"
    rate_limit: RateLimit = RateLimit()
    keygen_mode: str = "agent"  # CERTCTL_KEYGEN_MODE: the status of jobs bulk-renew creates
    ari_enabled: bool = True
    ari_poll_interval_s: int = 21600  # Retry-After on ARI 200s (certctl: ARI_POLL_INTERVAL 6h)
    nonce_ttl_s: float = 300.0
    acme_default_profile: str = ""  # enables the /acme/* shorthand, as in certctl
    acme_orders_per_hour: int = 0  # per-account new-order bucket; 0 is off (certctl: 100)
    acme_concurrent_orders: int = 0  # per-account active-order cap; 0 is off (certctl: 5)
    acme_order_ttl_s: float = 86400.0
    acme_authz_ttl_s: float = 86400.0


# --- certctl's environment parsing (contract section 2.4) ----------------------------------------


def go_bool(value: str | None, default: bool) -> bool:
    """certctl's boolean: unset/empty takes the default; true only for true, 1 or yes."""
    if not value:
        return default
    return value in ("true", "1", "yes")


def go_number(value: str | None, default: float, kind: type = float) -> Any:
    """certctl's numbers: unset, empty or unparseable silently take the default."""
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        return default


_GO_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}


def go_duration_s(value: str | None, default: float) -> float:
    """A Go duration (``6h``, ``90s``, ``1h30m``) in seconds; bad input takes the default."""
    if not value:
        return default
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return default
    return sum(float(n) * _GO_DURATION_UNITS[u] for n, u in parts)


def config_from_env(dsn: str, api_key: str, commit: str,
                    environ: Mapping[str, str] | None = None,
                    rate_limit_enabled: bool | None = None) -> StandinConfig:
    """The stand-in's settings from certctl's own variable names, parsed by certctl's rules.

    Two deliberate differences: with ``CERTCTL_RATE_LIMIT_ENABLED`` unset the limiter is off
    (certctl's default is on), because a single load host gets 50 req/s in total from it and
    every scenario above that would measure the limiter, not the server. ``rate_limit_enabled``
    (the ``--rate-limit`` flag) overrides the environment. Likewise the per-account ACME limits
    are off unless ``CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR`` or ``..._CONCURRENT_ORDERS``
    is set; then both follow certctl (100 and 5 when unset or unparseable, 0 disables one).
    Orders never finalize on certctl, so its 5-order cap stops every account at its sixth
    order: with the limits on, acme_orders would measure 429s.
    """
    env = os.environ if environ is None else environ
    enabled = go_bool(env.get("CERTCTL_RATE_LIMIT_ENABLED"), False)
    if rate_limit_enabled is not None:
        enabled = rate_limit_enabled
    rate_limit = RateLimit(
        enabled=enabled,
        rps=go_number(env.get("CERTCTL_RATE_LIMIT_RPS"), 50.0),
        burst=go_number(env.get("CERTCTL_RATE_LIMIT_BURST"), 100, int),
    )
    keygen = env.get("CERTCTL_KEYGEN_MODE") or "agent"
    per_hour, concurrent = (env.get(f"CERTCTL_ACME_SERVER_RATE_LIMIT_{name}")
                            for name in ("ORDERS_PER_HOUR", "CONCURRENT_ORDERS"))
    acme_limits = bool(per_hour or concurrent)
    return StandinConfig(
        dsn=dsn, api_key=api_key, commit=commit, rate_limit=rate_limit,
        keygen_mode=keygen if keygen in ("agent", "server") else "agent",
        ari_enabled=go_bool(env.get("CERTCTL_ACME_SERVER_ARI_ENABLED"), True),
        ari_poll_interval_s=int(go_duration_s(env.get("CERTCTL_ACME_SERVER_ARI_POLL_INTERVAL"),
                                              21600.0)),
        nonce_ttl_s=go_duration_s(env.get("CERTCTL_ACME_SERVER_NONCE_TTL"), 300.0),
        acme_default_profile=env.get("CERTCTL_ACME_SERVER_DEFAULT_PROFILE_ID", ""),
        acme_orders_per_hour=go_number(per_hour, 100, int) if acme_limits else 0,
        acme_concurrent_orders=go_number(concurrent, 5, int) if acme_limits else 0,
        acme_order_ttl_s=go_duration_s(env.get("CERTCTL_ACME_SERVER_ORDER_TTL"), 86400.0),
        acme_authz_ttl_s=go_duration_s(env.get("CERTCTL_ACME_SERVER_AUTHZ_TTL"), 86400.0),
    )  # fmt: skip


CONFIG = web.AppKey("config", StandinConfig)
API_KEY_DIGEST = web.AppKey("api_key_digest", bytes)
POOL = web.AppKey("pool", AsyncConnectionPool)
AUDIT_TASKS = web.AppKey("audit_tasks", set)
ISSUERS = web.AppKey("issuers", list)  # enabled issuer ids at boot: certctl's issuer registry
REQUEST_ID = web.RequestKey("request_id", str)
API_USER = web.RequestKey("api_user", str)


# --- responses in certctl's shapes -----------------------------------------------------------


def go_json(payload: Any) -> bytes:
    """Go's json.NewEncoder output: compact and newline-terminated."""
    return (json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def json_response(status: int, payload: Any) -> web.Response:
    """A JSON body with ``application/json``, as certctl's ``handler.JSON`` writes it.

    Callers pass dicts in Go's key order: sorted for Go maps, field order for Go structs.
    """
    return web.Response(status=status, body=go_json(payload), content_type="application/json")


def go_http_error(status: int, text: str) -> web.Response:
    """Go's ``http.Error``: forces text/plain even when the text is JSON, adds a newline."""
    response = web.Response(status=status, body=(text + "\n").encode())
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def handler_error(request: web.Request, status: int, message: str) -> web.Response:
    """certctl's handler error body (``handler/response.go``), echoing the request id."""
    return json_response(
        status,
        {
            "error": HTTPStatus(status).phrase,
            "message": message,
            "request_id": request[REQUEST_ID],
        },
    )


def go_time(value: datetime) -> str:
    """A time as Go's JSON encoder writes it: RFC 3339 with nanoseconds, zeros trimmed, UTC Z."""
    utc = value.astimezone(UTC)
    text = f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S")  # %Y does not pad year 1
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Go's time.Time{}

_id_counter = itertools.count(1)


def generate_id(prefix: str) -> str:
    """certctl's ``generateID``: ``<prefix>-<unix nanos>-<process counter>``."""
    return f"{prefix}-{time.time_ns()}-{next(_id_counter)}"


async def record_audit_event(pool: AsyncConnectionPool, actor: str, action: str,
                             resource_type: str, resource_id: str,
                             details: dict[str, Any]) -> None:
    """INSERT one ``audit_events`` row as certctl's audit service does (errors only logged)."""
    try:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO audit_events"
                " (id, actor, actor_type, action, resource_type, resource_id, details, timestamp)"
                " VALUES (%s, %s, 'User', %s, %s, %s, %s::jsonb, %s)",
                (generate_id("audit"), actor, action, resource_type, resource_id,
                 json.dumps(details, sort_keys=True), datetime.now(UTC)),
            )
    except Exception as exc:  # certctl only logs a failed audit insert
        log.error("failed to record audit event %s %s: %s", action, resource_id, exc)


class BodyTooLarge(Exception):
    """The request body exceeds the 1 MiB limit (certctl's MaxBytesReader fails the read)."""


_BODY_TOO_LARGE = web.RequestKey("body_too_large", bool)


async def read_body(request: web.Request) -> bytes:
    """The request body, read once and cached; :class:`BodyTooLarge` past the size limit."""
    if request.get(_BODY_TOO_LARGE):
        raise BodyTooLarge
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        request[_BODY_TOO_LARGE] = True
        raise BodyTooLarge from None
