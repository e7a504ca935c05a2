"""connector_handshake: the connection rate a certificate's deployment target takes (certctl's
connector tier: nginx, Apache httpd, HAProxy, F5)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from workbench.driver import RequestTemplate
from workbench.errors import WorkbenchError
from workbench.scenarios import (
    ARRIVAL_RATE,
    DURATION,
    MAX_VUS,
    NAME,
    PER_CLIENT,
    PROTOCOL,
    RATE,
    OwnTarget,
    Param,
    Scenario,
)
from workbench.target import connectors, preflight

HARNESS_RATE = 100 / 60  # certctl's harness: 100 new connections a minute per target type
# certctl's k6 thresholds, per target_type tag (the F5 mock's looser), and its error limit
THRESHOLDS = {
    **{f"http_req_duration{{endpoint:{t}}}": ["p(95)<1000", "p(99)<3000"]
       for t in ("nginx", "apache", "haproxy")},
    "http_req_duration{endpoint:f5}": ["p(95)<1500", "p(99)<5000"],
    "http_req_failed": ["rate<0.01"],
}


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """One tiny GET per iteration, tagged with the target type (``/``, the F5 mock ``/healthz``)."""
    kind = params["target_type"]
    return (RequestTemplate("GET", connectors.DAEMONS[kind].path, kind),)


def thresholds_for(params: Mapping) -> dict:
    """The harness's thresholds of this run's target type, and its error limit."""
    mine = f"{{endpoint:{params['target_type']}}}"
    return {metric: list(exprs) for metric, exprs in THRESHOLDS.items()
            if "{" not in metric or metric.endswith(mine)}


def resolve(params: Mapping, url: str | None, ca_file: str | None,
            insecure: bool) -> preflight.Target:
    """The daemon ``workbench target up --connectors`` started, or the one at ``url``."""
    if url is None:
        found, ca, _ = connectors.target_for(params["target_type"])
        return preflight.Target(url=found, ca_file=ca, insecure=False, embedded=True)
    preflight.validate_url(url)
    return preflight.Target(url=url.rstrip("/"), ca_file=ca_file, insecure=insecure,
                            embedded=False)


def check(target: preflight.Target, params: Mapping) -> dict:
    """One GET of the harness's path before any load: reachable, trusted, answering 2xx."""
    kind = params["target_type"]
    url = target.url + connectors.DAEMONS[kind].path
    try:
        response = httpx.get(url, verify=target.verify(), timeout=5.0)
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise WorkbenchError(f"TLS verification of {target.url} failed ({exc}); pass "
                                 "--ca-file with the daemon's CA certificate") from None
        raise WorkbenchError(f"{kind} target {target.url} is unreachable ({exc}); start it "
                             "(`workbench target up --connectors`) or fix --target") from None
    except httpx.HTTPError as exc:
        raise WorkbenchError(f"{kind} target {url} failed: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise WorkbenchError(f"{url} answered {response.status_code}; the harness expects "
                             f"2xx from a {kind} target")
    version = (connectors.target_for(kind)[2] if target.embedded
               else response.headers.get("server", "unknown"))
    warnings = ([f"the {kind} target is the workbench's iControl REST mock (Python, aiohttp),"
                 " not a BIG-IP: its numbers measure the mock"] if kind == "f5" else [])
    return {"url": target.url, "kind": kind, "version": version, "commit": None,
            "modified": None, "standin": kind == "f5" and target.embedded, "dsn": None,
            "warnings": warnings}


def capacity_text(params: Mapping, rate: float, bound: bool) -> str:
    """Handshakes per second as connections a minute, against the harness's 100."""
    return (f"connection rate: {'at least ' if bound else ''}{rate * 60:,.0f} new TLS "
            "connections a minute "
            f"({rate:,.1f}/s) within the thresholds, {rate / HARNESS_RATE:,.0f} times the "
            "100 a minute certctl's harness offers")


SCENARIO = Scenario(
    name="connector_handshake",
    title="Connector tier: TLS handshakes per deployment target",
    description=(
        "certctl's connector tier (its k6 `nginx_handshake`, `apache_handshake`, "
        "`haproxy_handshake` and `f5_handshake`): can the daemon a certificate is deployed "
        "to take the connection rate of the fleet? An open-loop arrival rate where every "
        "iteration opens a **new** TCP connection, runs a TLS handshake and sends a tiny GET "
        "(`/`; the F5 mock's `/healthz`), then closes; one target type per run, tagged with "
        "it. Unlike k6 (whose `http_req_duration` leaves out connect and handshake, and whose "
        "VUs reuse their connections unless told not to), the response time here counts "
        "all three, each also timed on its own."),
    sends="a new TLS connection and `GET /` (F5 mock: `/healthz`)",
    executor=ARRIVAL_RATE,
    parameters=(
        Param("target_type", NAME, "nginx", "nginx, apache, haproxy or f5 (the workbench's "
              "iControl REST mock)", choices=connectors.TYPES),
        RATE.but(help="new connections per second, open loop (certctl's harness: 100 a "
                      "minute)"),
        DURATION,
        MAX_VUS.but(default=50, help="most connections in flight (k6's maxVUs: 50); an "
                                     "arrival beyond them is dropped, and counted"),
        PROTOCOL.but(default="h1", choices=("h1",),
                     help="h1: one tiny request per connection, timed over HTTP/1.1"),
        PER_CLIENT.but(help="must stay false: every iteration opens its own connection"),
    ),
    profiles={
        "smoke": {"target_type": "nginx", "rate": 20.0, "duration_s": 5.0},
        "canonical": {"target_type": "nginx", "rate": HARNESS_RATE, "duration_s": 300.0},
    },
    thresholds=THRESHOLDS,
    thresholds_for=thresholds_for,
    threshold_help="each run is judged by its target type's lines",
    templates=templates,
    traps=(),
    own_target=OwnTarget(resolve, check, "target_type's daemon from `workbench target up "
                                        "--connectors`"),
    connection_per_request=True,
    capacity_text=capacity_text,
    drive_text=("The driver runs in its own process: open loop, each iteration at its "
                "precomputed intended start, on a connection of its own (`Connection: close`)."),
    latency_text=(
        "Response time from each iteration's intended start, in milliseconds, per target type "
        "(connect + TLS handshake + request), with distribution-free 95% intervals; then the "
        "phases apart: `connect` (TCP), `tls` (the handshake), `ttfb` (request written to the "
        "first response byte) and `total`."),
)
