"""certctl's REST rate limiter: a token bucket per source IP, one limiter per dispatch chain.

What it reproduces (contract section 4.1): buckets start full (``burst`` tokens), refill at
``rps`` tokens per second capped at ``burst``, one token per request, and are never evicted.
The key is always ``ip:<host>`` because certctl's limiter runs before authentication. The
authenticated chain and the no-auth chain (health, ready, version, auth/info) each have their
own limiter with the same settings. A refusal is Go's ``http.Error``: 429, ``text/plain``,
``Retry-After: 1``, body ``{"error":"Rate limit exceeded"}`` and a newline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from workbench.target.standin.core import RateLimit, go_http_error

RATE_LIMIT_BODY = '{"error":"Rate limit exceeded"}'


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    last_refill: float = field(default_factory=time.monotonic)

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last_refill) * self.rate)
        self.last_refill = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class KeyedRateLimiter:
    """Buckets by key; a new key starts with a full bucket. One instance per chain."""

    def __init__(self, settings: RateLimit) -> None:
        self.rate = float(settings.rps)
        self.burst = float(settings.burst)
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
        return bucket.allow(now)


def source_ip_key(request: web.Request) -> str:
    """certctl's key: the host part of RemoteAddr (X-Forwarded-For is ignored)."""
    return f"ip:{request.remote or 'unknown'}"


def too_many_requests() -> web.Response:
    response = go_http_error(429, RATE_LIMIT_BODY)
    response.headers["Retry-After"] = "1"
    return response
