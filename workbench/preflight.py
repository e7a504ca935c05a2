"""Which target to load and whether it is fit to be loaded, checked with httpx before any load.

Secrets never travel as parameters: the API token comes from ``CERTCTL_TOKEN`` (or the embedded
target's state folder) and the database DSN from ``CERTCTL_DSN`` (or the embedded target).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from workbench import target as embedded
from workbench.errors import WorkbenchError
from workbench.seed import redact_dsn

TOKEN_ENV = "CERTCTL_TOKEN"
DSN_ENV = "CERTCTL_DSN"
CA_ENV = "CERTCTL_CA_FILE"


@dataclass(frozen=True)
class Target:
    """Where to send load. ``dsn`` and the token stay out of repr, files and notebooks."""

    url: str
    ca_file: str | None
    insecure: bool
    embedded: bool
    dsn: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "stand-in" if self.embedded else "certctl"

    @property
    def safe_dsn(self) -> str | None:
        return redact_dsn(self.dsn) if self.dsn else None

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def validate_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkbenchError(f"malformed target URL {url!r}; expected https://HOST:PORT")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise WorkbenchError(f"malformed port in target URL {url!r}") from None


def resolve_target(url: str | None = None, ca_file: str | None = None,
                   insecure: bool = False) -> Target:
    """The embedded stand-in when ``url`` is None, else the given server."""
    if url is None:
        info = embedded.read_info()
        if info is None or not embedded.status().get("ready"):
            raise WorkbenchError("the embedded target is not running; start it with "
                                 "`workbench target up` (or pass --target URL)")
        return Target(url=info.url, ca_file=info.ca_file, insecure=False, embedded=True,
                      dsn=info.dsn)
    validate_url(url)
    return Target(url=url.rstrip("/"), ca_file=ca_file or os.environ.get(CA_ENV),
                  insecure=insecure, embedded=False, dsn=os.environ.get(DSN_ENV))


def token_for(target: Target) -> str:
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    if target.embedded:
        return embedded.read_token()
    raise WorkbenchError(f"no API token: export {TOKEN_ENV}=<key> (one of certctl's "
                         "CERTCTL_AUTH_SECRET keys)")


def preflight(target: Target, token: str) -> dict:
    """Check reachability, TLS, identity and the token; returns the target's identity.

    Each failure is one sentence naming the problem and the fix, raised before any load.
    """
    try:
        with httpx.Client(base_url=target.url, verify=target.verify(), timeout=5.0) as client:
            version = client.get("/api/v1/version")
            auth = client.get("/api/v1/auth/check", headers={"Authorization": f"Bearer {token}"})
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc.__cause__, ssl.SSLError):
            raise WorkbenchError(f"TLS verification of {target.url} failed ({exc}); pass "
                                 "--ca-file with the server's CA certificate") from None
        raise WorkbenchError(f"target {target.url} is unreachable ({exc or 'connection refused'});"
                             " start it (`workbench target up`) or fix --target") from None
    except httpx.TimeoutException:
        raise WorkbenchError(f"target {target.url} did not answer within 5 s; check that it "
                             "runs and is not overloaded") from None
    except httpx.HTTPError as exc:
        raise WorkbenchError(f"target {target.url} failed: {exc}") from None
    if version.status_code != 200:
        raise WorkbenchError(f"{target.url}/api/v1/version answered {version.status_code}; "
                             "is this a certctl server?")
    if auth.status_code == 401:
        raise WorkbenchError(f"the target refused the API token (401); set {TOKEN_ENV} to one "
                             "of the server's API keys")
    if auth.status_code != 200:
        raise WorkbenchError(f"auth check answered {auth.status_code}: {auth.text[:200]}")
    identity = version.json()
    return {
        "url": target.url,
        "kind": target.kind,
        "version": identity.get("version"),
        "commit": identity.get("commit"),
        "modified": identity.get("modified"),
        "standin": bool(identity.get("standin")),
        "dsn": target.safe_dsn,
    }
