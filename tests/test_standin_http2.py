"""The stand-in over HTTP/2 (ALPN h2), as certctl offers it: the same answers as HTTP/1.1.

Each scenario endpoint is asked the same question over both protocols (httpx, which speaks
HTTP/2 through the ``h2`` package) and must answer with the same status, content type, body
and header names; the driver's own HTTP/2 engine gets the same heartbeat answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from workbench import scenarios
from workbench.driver.http2 import Http2Engine
from workbench.driver.shard import loop_factory
from workbench.scenarios import _fleet, acme_burst
from workbench.target.embedded import TargetInfo

PROFILE = "/acme/profile/prof-standard-tls"
# differ per response by design (time, identity, fresh nonce), never by protocol
PER_RESPONSE = {"date", "x-request-id", "replay-nonce"}
CONNECTION_FIELDS = {"connection", "keep-alive", "transfer-encoding"}
NOW = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


@pytest.fixture(scope="module")
def h2_client(embedded_target: TargetInfo) -> Iterator[httpx.Client]:
    verify = ssl.create_default_context(cafile=embedded_target.ca_file)
    with httpx.Client(base_url=embedded_target.url, verify=verify, timeout=10.0,
                      http2=True) as client:
        yield client


@pytest.fixture(scope="module")
def fixtures(embedded_target: TargetInfo) -> dict:
    storm, burst = scenarios.get("agent_storm"), scenarios.get("acme_burst")
    storm.seed(embedded_target.dsn, storm.params_for("smoke", {"fleet_size": 3}))
    burst.seed(embedded_target.dsn, burst.params_for("smoke", {"ari_size": 40}))
    return {"agent": _fleet.agent_ids(3)[0], "ari": acme_burst.ari_cert_ids(40)[0]}


def _answer(response: httpx.Response) -> tuple:
    names = {k.lower() for k in response.headers} - PER_RESPONSE - CONNECTION_FIELDS
    body = response.content  # error bodies repeat the request id: the same up to that
    if "x-request-id" in response.headers:
        body = body.replace(response.headers["x-request-id"].encode(), b"<request id>")
    body = NOW.sub(b"<now>", body)  # an expired certificate's ARI window starts now
    return response.status_code, response.headers.get("content-type"), body, sorted(names)


def test_alpn_offers_h2_and_the_answer_comes_over_http2(h2_client, client):
    assert h2_client.get("/health").http_version == "HTTP/2"
    assert client.get("/health").http_version == "HTTP/1.1"  # an h1-only client is unchanged


def test_scenario_endpoints_answer_the_same_over_both_protocols(client, h2_client, auth,
                                                                fixtures):
    heartbeat = json.dumps({"version": "1.0.0", "hostname": "h2.example.test", "os": "linux",
                            "architecture": "amd64", "ip_address": "198.51.100.7"})
    asks = [
        ("GET", "/health", {}, None), ("GET", "/ready", {}, None),
        ("GET", "/api/v1/version", {}, None), ("GET", "/api/v1/auth/info", {}, None),
        ("GET", "/api/v1/auth/check", auth, None), ("GET", "/api/v1/auth/check", {}, None),
        ("POST", f"/api/v1/agents/{fixtures['agent']}/heartbeat", auth, heartbeat),
        ("POST", "/api/v1/agents/no-such-agent/heartbeat", auth, heartbeat),
        ("POST", "/api/v1/certificates/bulk-renew", auth, "{}"),
        ("GET", "/api/v1/certificates?per_page=5", auth, None),
        ("GET", f"{PROFILE}/directory", auth, None),
        ("HEAD", f"{PROFILE}/new-nonce", auth, None),
        ("GET", f"{PROFILE}/new-nonce", auth, None),
        ("GET", f"{PROFILE}/renewal-info/{fixtures['ari']}", auth, None),
        ("GET", f"{PROFILE}/renewal-info/aaaa.bbbb", auth, None),
        ("GET", "/api/v1/nope", auth, None), ("DELETE", "/health", {}, None),
    ]
    for method, path, headers, body in asks:
        h1 = client.request(method, path, headers=headers, content=body)
        h2 = h2_client.request(method, path, headers=headers, content=body)
        assert h2.http_version == "HTTP/2"
        assert _answer(h2) == _answer(h1), f"{method} {path}"


def test_a_large_response_crosses_small_flow_control_windows(client, auth, embedded_target,
                                                             target_token):
    bulk = scenarios.get("bulk_renewal")
    bulk.seed(embedded_target.dsn, bulk.params_for("smoke", {"bulk_size": 1000}))
    path = "/api/v1/certificates?per_page=500"
    h1 = client.get(path, headers=auth)
    outcome, = _engine_exchange(embedded_target, [("GET", path, None)], target_token)
    assert len(h1.content) > 3 * 65_535  # several windows' worth
    assert outcome[:5] == (200, b"application/json", len(h1.content), h1.content, 0)


def _engine_exchange(target: TargetInfo, asks: list[tuple], token: str) -> list[tuple]:
    """The driver's HTTP/2 engine, with the smallest windows HTTP/2 allows, one ask at a time."""
    async def main():
        engine = Http2Engine(target.url, ca_file=target.ca_file, stream_window=65_535,
                             connection_window=65_535)
        await engine.start(1)
        loop = asyncio.get_running_loop()
        outcomes = []
        for method, path, body in asks:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            request = engine.prepare(method, path, headers, body, want_body=True)
            done = loop.create_future()
            engine.send(request, lambda *o, done=done: done.set_result(o))
            outcomes.append(await done)
        await engine.close()
        return outcomes

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


def test_the_drivers_h2_engine_gets_the_heartbeat_answer(embedded_target, target_token,
                                                         fixtures):
    path = f"/api/v1/agents/{fixtures['agent']}/heartbeat"
    outcomes = _engine_exchange(embedded_target, [("POST", path, b"{}")] * 3, target_token)
    body = b'{"status":"heartbeat_recorded"}\n'
    assert {o[:5] for o in outcomes} == {(200, b"application/json", len(body), body, 0)}
