"""The acme_orders scenario's virtual user: JWS-signed ACME orders, as k6 cannot send them.

Each VU owns an account key (ES256 on P-256 by default; RS256 or EdDSA), made in ``setup``
with its ``new-account`` (jwk) before the timed phase. Each iteration sends ``new-order`` (kid)
for a fresh dns identifier (``o-<vu>-<n>.loadtest.example.test``), then optionally POST-as-GETs
the order and its authorizations and finalizes it with a CSR. Nonces as RFC 8555 and certctl
want them: the ``Replay-Nonce`` of each success is used for the next request; after a problem
(certctl sends none) or a lost response a new one is fetched. The signed ``url`` and ``kid`` are
``https://`` + the Host the engine sends + the path, byte for byte. Signing (and CSR building)
is timed apart from the server (``sign_ms``, ``csr_ms``). :func:`probe_warnings` lets preflight
find the certctl settings that spoil a capacity run before any load.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workbench.jws import ALLOWED_ALGS, AccountKey, b64u

CONTACT = "mailto:loadtest-acme@example.test"  # marks the scenario's accounts for the reset
IDENTIFIER_DOMAIN = "loadtest.example.test"
JOSE = {"Content-Type": "application/jose+json"}
STEPS = ("new_order", "order", "authz", "finalize")
PROBE_ORDERS = 6  # certctl's concurrent-order cap (5) shows on the sixth order
CAPACITY_SETTINGS = ("CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS=0 and "
                     "CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR=0")


class ScriptError(RuntimeError):
    """The target answered in a way the scenario cannot go on from (setup, origins)."""


def profile_base(profile_id: str) -> str:
    return f"/acme/profile/{profile_id}"


def identifier(vu: int, n: int) -> str:
    return f"o-{vu}-{n}.{IDENTIFIER_DOMAIN}"


def build_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A DER PKCS#10 request whose CN and single DNS SAN are ``name`` (certctl's exact match)."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def describe(response) -> str:
    """``"401 unauthorized: <detail>"`` or the transport error of a scripted response."""
    if not response.status:
        return f"no response ({response.error})"
    detail = ""
    if response.problem:
        try:
            detail = f" {response.problem}: {response.json().get('detail', '')}"
        except ValueError:
            detail = f" {response.problem}"
    return f"{response.status}{detail}"


@dataclass
class AccountState:
    key: AccountKey
    csr_key: ec.EllipticCurvePrivateKey | None
    kid: str | None = None
    nonce: str | None = None


class AcmeOrders:
    """The scripted VU (``workbench.driver.scripted``); built by :func:`script`."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.base = profile_base(params.get("profile_id", "prof-standard-tls"))
        self.alg = params.get("alg", "ES256")
        if self.alg not in ALLOWED_ALGS:
            raise ValueError(f"alg must be one of {', '.join(ALLOWED_ALGS)}, got {self.alg!r}")
        self.fetch_order = bool(params.get("fetch_order", False))
        self.fetch_authz = bool(params.get("fetch_authz", False))
        self.finalize = bool(params.get("finalize", False))

    async def setup(self, vu) -> None:
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

    async def iteration(self, vu) -> None:
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

    async def signed(self, vu, tag: str, path: str, payload: dict | None = None):
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
    """The driver's factory (``workbench.acme_orders:script``)."""
    return AcmeOrders(params)


# --- preflight ---------------------------------------------------------------------------------


def probe_warnings(client, token: str, profile_id: str) -> list[str]:
    """Warnings about certctl settings that spoil a capacity run, from a few signed requests.

    One throwaway account (contact ``CONTACT``, so the scenario's reset removes it) orders up
    to six names: a 429 ``rateLimited`` means the per-account limits are on; an order born
    other than ``ready`` means the profile is in challenge mode; any other problem is named.
    ``client`` is an ``httpx.Client`` with the target's base URL.
    """
    import httpx

    base = profile_base(profile_id)
    origin = str(client.base_url).rstrip("/")
    auth = {"Authorization": f"Bearer {token}"}
    key = AccountKey.generate("ES256")

    def post(path: str, nonce: str, payload: dict, kid: str | None) -> httpx.Response:
        body = key.sign(origin + path, nonce, payload, kid=kid)
        return client.post(path, content=body, headers=auth | JOSE)

    def problem(response: httpx.Response) -> str:
        try:
            doc = response.json()
            return f"{doc.get('type', '').rsplit(':', 1)[-1]}: {doc.get('detail')}"
        except ValueError:
            return response.text[:80]

    try:
        nonce = client.head(f"{base}/new-nonce", headers=auth).headers.get("replay-nonce")
        if not nonce:
            return []  # the ACME reachability warning already says why
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
