"""acme_orders: JWS-signed ACME orders under load, the scenario k6 cannot run.

Each virtual user owns an account key (ES256 on P-256 by default; RS256 or EdDSA), made in
``setup`` with its ``new-account`` (jwk) before the timed phase. Each iteration sends
``new-order`` (kid) for a fresh dns identifier (``o-<vu>-<n>.loadtest.example.test``), then
optionally POST-as-GETs the order and its authorizations and finalizes it with a CSR. Nonces as
RFC 8555 and certctl want them: the ``Replay-Nonce`` of each success is used for the next
request; after a problem (certctl sends none) or a lost response a new one is fetched. The
signed ``url`` and ``kid`` are ``https://`` + the Host the engine sends + the path, byte for
byte. Signing (and CSR building) is timed apart from the server (``sign_ms``, ``csr_ms``).
:func:`probe_warnings` lets preflight find the certctl settings that spoil a capacity run before
any load, once per run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.driver.scripted import Response, VirtualUser, problem_type
from workbench.jws import ALLOWED_ALGS, AccountKey, b64u
from workbench.scenarios import (
    ACME_H1,
    CONSTANT_VUS,
    DURATION,
    FLAG,
    NAME,
    PER_CLIENT,
    SLEEP,
    VUS,
    Note,
    Param,
    Scenario,
    _acme,
)
from workbench.untrusted import printable

if TYPE_CHECKING:  # tables only: every driver process imports this module for its script
    import pandas as pd

    from workbench.target.preflight import Probe

CONTACT = "mailto:loadtest-acme@example.test"  # marks the scenario's accounts for the reset
IDENTIFIER_DOMAIN = "loadtest.example.test"
RESET_SQL = "05_acme_orders_reset.sql"
JOSE = {"Content-Type": "application/jose+json"}
PROBE_ORDERS = 6  # certctl's concurrent-order cap (5) shows on the sixth order
CAPACITY_SETTINGS = ("CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS=0 and "
                     "CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR=0")
# Problem types a client's signing or nonce bug causes, not the server.
JWS_PROBLEMS = ("badNonce", "unauthorized", "malformed", "badSignatureAlgorithm",
                "accountDoesNotExist")


class ScriptError(RuntimeError):
    """The target answered in a way the scenario cannot go on from (setup, origins)."""


def identifier(vu: int, n: int) -> str:
    """The fresh dns name VU ``vu`` orders in its iteration ``n``."""
    return f"o-{vu}-{n}.{IDENTIFIER_DOMAIN}"


def build_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A DER PKCS#10 request whose CN and single DNS SAN are ``name`` (certctl's exact match)."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def describe(response: Response) -> str:
    """``"401 unauthorized: <detail>"`` or the transport error of a scripted response."""
    if not response.status:
        return f"no response ({response.error})"
    detail = ""
    if response.problem:
        try:
            detail = f" {response.problem}: {response.json().get('detail', '')}"
        except ValueError:
            detail = f" {response.problem}"
    return printable(f"{response.status}{detail}")


@dataclass
class AccountState:
    key: AccountKey
    csr_key: ec.EllipticCurvePrivateKey | None
    kid: str | None = None
    nonce: str | None = None


class AcmeOrders:
    """The scripted VU (``workbench.driver.scripted``); built by :func:`script`."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.base = _acme.profile_base(params.get("profile_id", _acme.DEFAULT_PROFILE))
        self.alg = params.get("alg", "ES256")
        if self.alg not in ALLOWED_ALGS:
            raise ValueError(f"alg must be one of {', '.join(ALLOWED_ALGS)}, got {self.alg!r}")
        self.fetch_order = bool(params.get("fetch_order", False))
        self.fetch_authz = bool(params.get("fetch_authz", False))
        self.finalize = bool(params.get("finalize", False))

    async def setup(self, vu: VirtualUser) -> None:
        """Key generation and ``new-account`` (jwk), before the timed phase."""
        state = vu.state = AccountState(
            AccountKey.generate(self.alg),
            ec.generate_private_key(ec.SECP256R1()) if self.finalize else None)
        response = await self.signed(vu, "new_account", f"{self.base}/new-account",
                                     {"termsOfServiceAgreed": True, "contact": [CONTACT]})
        if not response.ok:
            raise ScriptError(f"VU {vu.index}: new-account answered {describe(response)}")
        kid = response.header("location") or ""
        try:
            vu.path_of(kid)
        except ValueError:
            raise ScriptError(f"VU {vu.index}: new-account's Location {kid!r} is not on "
                              f"{vu.origin}: the server built it from another Host") from None
        state.kid = kid

    async def iteration(self, vu: VirtualUser) -> None:
        """new-order, then the optional order and authz reads and finalize."""
        name = identifier(vu.index, vu.iteration)
        created = await self.signed(vu, "new_order", f"{self.base}/new-order",
                                    {"identifiers": [{"type": "dns", "value": name}]})
        if not created.ok:
            return
        order = created.json()
        if self.fetch_order:
            got = await self.signed(vu, "order", vu.path_of(created.header("location") or ""))
            if not got.ok:
                return
        if self.fetch_authz:
            for url in order.get("authorizations", []):
                if not (await self.signed(vu, "authz", vu.path_of(url))).ok:
                    return
        if self.finalize:
            started = time.perf_counter_ns()
            csr = build_csr(vu.state.csr_key, name)
            vu.timing("csr", time.perf_counter_ns() - started)
            await self.signed(vu, "finalize", vu.path_of(order["finalize"]), {"csr": b64u(csr)})

    async def signed(self, vu: VirtualUser, tag: str, path: str,
                     payload: dict | None = None) -> Response:
        """One JWS request (POST-as-GET when ``payload`` is None) with a valid nonce."""
        state: AccountState = vu.state
        if state.nonce is None:
            got = await vu.request("new_nonce", f"{self.base}/new-nonce")
            if not got.ok:
                return got
            state.nonce = got.header("replay-nonce")
            if not state.nonce:
                raise ScriptError("new-nonce answered without a Replay-Nonce header")
        started = time.perf_counter_ns()
        body = state.key.sign(vu.url(path), state.nonce, payload, kid=state.kid)
        vu.timing("sign", time.perf_counter_ns() - started)
        state.nonce = None  # spent, whatever the answer
        response = await vu.request(tag, path, body, JOSE)
        if response.status and response.problem is None:
            state.nonce = response.header("replay-nonce")  # absent: fetch one next time
        return response


def script(params: dict[str, Any]) -> AcmeOrders:
    """The driver's factory (``workbench.scenarios.acme_orders:script``)."""
    return AcmeOrders(params)


# --- preflight ---------------------------------------------------------------------------------


def probe_warnings(client: httpx.Client, token: str, profile_id: str) -> list[str]:
    """Warnings about certctl settings that spoil a capacity run, from a few signed requests.

    One throwaway account (contact ``CONTACT``, so the scenario's reset removes it) orders up
    to six names: a 429 ``rateLimited`` means the per-account limits are on; an order born
    other than ``ready`` means the profile is in challenge mode; any other problem is named.
    ``client`` has the target's base URL.
    """
    base = _acme.profile_base(profile_id)
    origin = str(client.base_url).rstrip("/")
    auth = {"Authorization": f"Bearer {token}"}
    key = AccountKey.generate("ES256")

    def post(path: str, nonce: str, payload: dict, kid: str | None) -> httpx.Response:
        body = key.sign(origin + path, nonce, payload, kid=kid)
        return client.post(path, content=body, headers=auth | JOSE)

    def problem(response: httpx.Response) -> str:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            return printable(response.text, 80)
        return printable(f"{problem_type(response.content)}: {detail}")

    try:
        directory = client.get(f"{base}/directory", headers=auth)
        nonce = client.head(f"{base}/new-nonce", headers=auth).headers.get("replay-nonce")
        if directory.status_code != 200 or "json" not in directory.headers.get(
                "content-type", "") or not nonce:
            return []  # preflight's ACME reachability check says why
        account = post(f"{base}/new-account", nonce,
                       {"termsOfServiceAgreed": True, "contact": [CONTACT]}, None)
        if account.status_code not in (200, 201):
            return [f"a signed new-account on {base} answered {account.status_code} "
                    f"({problem(account)}): acme_orders cannot run; check that the target "
                    "sees the Host this URL names (certctl compares the JWS url byte for byte)"]
        kid, nonce = account.headers.get("location"), account.headers.get("replay-nonce")
        for n in range(1, PROBE_ORDERS + 1):
            if not nonce:
                nonce = client.head(f"{base}/new-nonce", headers=auth).headers["replay-nonce"]
            order = post(f"{base}/new-order", nonce, {"identifiers": [
                {"type": "dns", "value": f"probe-{n}.{IDENTIFIER_DOMAIN}"}]}, kid)
            nonce = order.headers.get("replay-nonce")
            if order.status_code == 429:
                return [f"certctl's per-account ACME limits are on: order {n} of one account got"
                        f" 429 rateLimited ({problem(order)}); orders never finalize on certctl,"
                        " so each VU's account stops at 5 active orders (and 100 an hour): set "
                        f"{CAPACITY_SETTINGS} on the server for capacity runs"]
            if order.status_code != 201:
                return [f"a signed new-order on {base} answered {order.status_code} "
                        f"({problem(order)}); acme_orders will fail the same way"]
            if order.json().get("status") != "ready":
                return [f"profile {profile_id!r} makes orders {order.json().get('status')!r}, "
                        "not ready: it is in challenge mode, whose http-01 validation cannot "
                        "reach loopback; set certificate_profiles.acme_auth_mode to "
                        "'trust_authenticated' for this profile"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return [f"the signed ACME probe failed ({type(exc).__name__}: {exc}); acme_orders may "
                "fail the same way"]
    return []


FINALIZE_WARNING = (
    "finalize=true: certctl answers every finalize with 500 serverInternal (its managed-"
    "certificate insert has empty owner, team and policy ids; docs/certctl-verified.md) and "
    "leaves the order processing, where it counts against the 5-concurrent-orders cap; expect a "
    "serverInternal per finalize, and keep one enabled issuer (finalize picks one at random and "
    "may call a real CA)")


def _finalize_warning(client: httpx.Client, token: str) -> list[str]:
    return [FINALIZE_WARNING]


def probes(params: Mapping) -> tuple[Probe, ...]:
    """The signed probe of the run's profile, and the finalize caution when it finalizes."""
    signed = functools.partial(probe_warnings, profile_id=params["profile_id"])
    return (signed, _finalize_warning) if params["finalize"] else (signed,)


# --- the scenario ------------------------------------------------------------------------------


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """The requests the scripted VU may send, by tag (paths show the shapes; the script fills
    in ids). Only the steps the parameters enable, so every tag gets requests."""
    base = _acme.profile_base(params["profile_id"])
    jose = tuple(JOSE.items())
    steps = [RequestTemplate("HEAD", f"{base}/new-nonce", "new_nonce", expect=(200,)),
             RequestTemplate("POST", f"{base}/new-account", "new_account", headers=jose,
                             expect=(200, 201)),
             RequestTemplate("POST", f"{base}/new-order", "new_order", headers=jose,
                             expect=(201,))]
    if params["fetch_order"]:
        steps.append(RequestTemplate("POST", f"{base}/order/{{id}}", "order", headers=jose,
                                     expect=(200,)))
    if params["fetch_authz"]:
        steps.append(RequestTemplate("POST", f"{base}/authz/{{id}}", "authz", headers=jose,
                                     expect=(200,)))
    if params["finalize"]:
        steps.append(RequestTemplate("POST", f"{base}/order/{{id}}/finalize", "finalize",
                                     headers=jose, expect=(200,)))
    return tuple(steps)


def remove_accounts(dsn: str, params: Mapping) -> dict:
    """Delete the ACME accounts (and their orders, authzs, challenges) earlier runs created."""
    return seed.load_fixture(dsn, RESET_SQL, {}, (
        "acme_accounts", f"SELECT count(*) FROM acme_accounts WHERE '{CONTACT}' = ANY (contact)"))


def _problems_table(result: Mapping) -> pd.DataFrame:
    import pandas as pd

    rows = [{"endpoint": tag, "type": kind, "count": n, "jws": kind in JWS_PROBLEMS}
            for tag, per in sorted((result.get("problems") or {}).items())
            for kind, n in sorted(per.items())]
    return pd.DataFrame(rows, columns=["endpoint", "type", "count", "jws"])


def _problems_line(result: Mapping, tag: str) -> str:
    problems = (result.get("problems") or {}).get(tag)
    return ("problems " + " ".join(f"{k}={n}" for k, n in sorted(problems.items()))
            if problems else "")


def _costs_table(result: Mapping) -> pd.DataFrame:
    import pandas as pd

    names = (result.get("script") or {}).get("timing_histograms") or {}
    rows = {name: result[f"{name}_ms"] for name in sorted(names) if f"{name}_ms" in result}
    frame = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["count", "mean", "p50", "p90", "p99", "max"])
    frame.index.name = "client work"
    return frame


PROBLEMS = Note(
    "Problem types",
    "ACME problems per endpoint. `jws` marks the kinds a client's signing or nonce handling "
    "causes (`badNonce`, `unauthorized`, `malformed`, ...); `rateLimited` is certctl's "
    "per-account limits, `serverInternal` on finalize is certctl's known failure.",
    _problems_table, _problems_line)
CLIENT_COSTS = Note(
    "Client-side cost",
    "Signing each JWS (`sign`) and building each CSR (`csr`) in the driver, in milliseconds: "
    "not part of the latencies below.",
    _costs_table, lambda result, tag: "")

SCENARIO = Scenario(
    name="acme_orders",
    title="ACME orders (JWS-signed)",
    description=(
        "Beyond certctl's k6 plan, which cannot sign JWS: closed-loop virtual users, each with "
        "its own ACME account key (ES256 by default), registered with `new-account` (jwk) "
        "before the timed phase. Every iteration sends a signed `new-order` (kid) for a fresh "
        "dns name, then POST-as-GETs the order and its authorizations, and optionally "
        "finalizes with a CSR. Nonces come from each success's `Replay-Nonce`, or from "
        "`new-nonce` after a problem; the signed `url` and `kid` are `https://` + the Host the "
        "driver sends + the path. Signing is timed apart from the server (`sign_ms`)."),
    sends="JWS-signed new-order, optionally order, authz and finalize; each VU its own "
          "ES256 (or RS256/EdDSA) account key",
    executor=CONSTANT_VUS,
    parameters=(
        VUS.but(help="virtual users, one ACME account each, closed loop"),
        DURATION,
        SLEEP.but(help="think time after each iteration (0: as fast as the server answers)"),
        Param("alg", NAME, "ES256", "account key: ES256 (P-256), RS256 (RSA 2048) or EdDSA "
                                    "(Ed25519)", choices=ALLOWED_ALGS),
        Param("fetch_order", FLAG, True, "POST-as-GET the order after creating it"),
        Param("fetch_authz", FLAG, True, "POST-as-GET each authorization"),
        Param("finalize", FLAG, False, "finalize with a CSR: certctl answers 500 "
                                       "serverInternal (see preflight)"),
        _acme.PROFILE_ID.but(help="ACME profile in the URL path (trust_authenticated mode)"),
        ACME_H1,
        PER_CLIENT,
    ),
    profiles={
        "smoke": {"vus": 4, "duration_s": 3.0, "sleep_s": 0.1},
        "canonical": {"vus": 50, "duration_s": 300.0, "sleep_s": 0.0},
    },
    thresholds={"http_req_duration{endpoint:new_order}": ["p(95)<500"],
                "http_req_duration{endpoint:order}": ["p(95)<300"],
                "http_req_duration{endpoint:authz}": ["p(95)<300"],
                "http_req_failed": ["rate<0.01"]},
    templates=templates,
    fixture=remove_accounts,
    fixture_sizes=lambda p: {"acme_accounts": p["vus"]},
    fixture_heading="Reset earlier runs' ACME rows",
    fixture_text=(f"`seed/{RESET_SQL}`: the accounts of earlier runs (contact `{CONTACT}`) with "
                  "their orders, authorizations and challenges."),
    traps=("rate_limit", "acme"),
    probes=probes,
    script="workbench.scenarios.acme_orders:script",
    script_params=("profile_id", "alg", "fetch_order", "fetch_authz", "finalize"),
    notes=(PROBLEMS, CLIENT_COSTS),
    drive_text="Keys and accounts are made before the timed phase; their `new_account` "
               "requests are recorded too.",
    latency_text=(
        "Response time of each request from the moment the virtual user handed it to the "
        "client (after signing), in milliseconds, per endpoint and status class; each "
        "percentile with a distribution-free 95% interval (`_lo`, `_hi`; blank where this many "
        "samples cannot bound it)."),
    threshold_help="drop a step's threshold when its step is off; finalize fails on certctl",
)
