"""certctl's REST rate limiter in the stand-in: the token bucket, its settings from certctl's own
variables, and the 429 shape over real HTTPS from a second stand-in process with it switched on."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.loopback import free_port
from workbench.target import embedded, preflight
from workbench.target.embedded import TargetInfo
from workbench.target.standin.core import RateLimit, config_from_env
from workbench.target.standin.ratelimit import KeyedRateLimiter

# Small: the bucket empties in a handful of requests. The refill (one token per 1,000 s) is too
# slow to land inside a test however busy the machine; each test gets a fresh stand-in, so
# fresh buckets, instead of waiting for a refill.
LIMITED_RPS, LIMITED_BURST = 0.001, 10


def test_bucket_starts_full_refills_at_the_rate_and_caps_at_burst():
    limiter = KeyedRateLimiter(RateLimit(enabled=True, rps=50.0, burst=100))
    assert all(limiter.allow("ip:a", now=0.0) for _ in range(100))
    assert not limiter.allow("ip:a", now=0.0)
    assert limiter.allow("ip:b", now=0.0)  # one bucket per key
    assert limiter.allow("ip:a", now=0.02) and not limiter.allow("ip:a", now=0.02)  # 50/s
    assert sum(limiter.allow("ip:a", now=100.0) for _ in range(150)) == 100  # capped at burst


def test_settings_parse_like_certctl_and_default_off_in_the_stand_in():
    default = config_from_env("dsn", "key", "c", environ={})
    assert default.rate_limit == RateLimit(enabled=False, rps=50.0, burst=100)
    on = config_from_env("dsn", "key", "c", environ={"CERTCTL_RATE_LIMIT_ENABLED": "yes",
                                                    "CERTCTL_RATE_LIMIT_RPS": "2.5",
                                                    "CERTCTL_RATE_LIMIT_BURST": "x"})
    assert on.rate_limit == RateLimit(enabled=True, rps=2.5, burst=100)  # bad int: default
    for word in ("TRUE", "on", "True"):  # certctl reads only true, 1 and yes as true
        env = {"CERTCTL_RATE_LIMIT_ENABLED": word}
        assert not config_from_env("d", "k", "c", environ=env).rate_limit.enabled
    flag = config_from_env("d", "k", "c", environ={"CERTCTL_RATE_LIMIT_ENABLED": "true"},
                           rate_limit_enabled=False)
    assert not flag.rate_limit.enabled  # --rate-limit off wins over the environment
    server = config_from_env("d", "k", "c", environ={"CERTCTL_KEYGEN_MODE": "server"})
    assert server.keygen_mode == "server"


@pytest.fixture()
def limited(embedded_target: TargetInfo, embedded_target_state: Path) -> Iterator[TargetInfo]:
    """A second stand-in on the same database with ``--rate-limit on`` (burst 10)."""
    port = free_port()
    tls = embedded_target_state / "tls"
    env = os.environ | {"CERTCTL_RATE_LIMIT_RPS": str(LIMITED_RPS),
                        "CERTCTL_RATE_LIMIT_BURST": str(LIMITED_BURST)}
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.target.standin", "--dsn", embedded_target.dsn,
         "--port", str(port), "--cert", str(tls / "server.pem"),
         "--key", str(tls / "server-key.pem"), "--token-file",
         str(embedded_target_state / "token"), "--rate-limit", "on"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=embedded_target.ca_file)
    try:
        deadline = time.monotonic() + 20
        while True:  # any answer means it listens (polling spends no-auth tokens, never auth)
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


def test_the_429_has_certctls_plain_text_shape_and_spares_the_no_auth_chain(
        limited, target_token):
    verify = ssl.create_default_context(cafile=limited.ca_file)
    auth = {"Authorization": f"Bearer {target_token}"}
    with httpx.Client(base_url=limited.url, verify=verify, timeout=5.0) as client:
        statuses = [client.get("/api/v1/auth/check", headers=auth).status_code
                    for _ in range(LIMITED_BURST + 3)]
        refused = client.get("/acme/profile/prof-standard-tls/directory", headers=auth)
        unauthenticated = client.get("/api/v1/auth/check")  # the limiter runs before auth
        health = client.get("/health")  # its own bucket, not emptied by the API calls
    assert statuses[:LIMITED_BURST] == [200] * LIMITED_BURST
    assert set(statuses[LIMITED_BURST:]) == {429}
    for response in (refused, unauthenticated):
        assert response.status_code == 429
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "strict-transport-security" not in response.headers  # certctl drops it here
        assert response.text == '{"error":"Rate limit exceeded"}\n'
    assert health.status_code == 200 and "strict-transport-security" in health.headers


def test_preflight_warns_about_the_limiter_and_strict_refuses(limited, target_token):
    real = preflight.Target(url=limited.url, ca_file=limited.ca_file, insecure=False,
                            embedded=False)
    # strict first: its /api/v1/version shares the no-auth bucket that the probe empties, and
    # the bucket never refills within the test
    with pytest.raises(preflight.WorkbenchError, match="--strict refuses .*rate limiter"):
        preflight.preflight(real, target_token, strict=True)
    warnings = preflight.trap_warnings(real, target_token)
    assert len(warnings) == 1 and "REST rate limiter is on" in warnings[0]
    assert "CERTCTL_RATE_LIMIT_ENABLED=false" in warnings[0]


def test_the_embedded_target_runs_without_the_limiter(embedded_target, embedded_target_state):
    unlimited = preflight.Target(url=embedded_target.url, ca_file=embedded_target.ca_file,
                                 insecure=False, embedded=True)
    assert preflight.trap_warnings(unlimited, embedded.read_token(embedded_target_state)) == []
