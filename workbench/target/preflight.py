"""Which target to load and whether it is fit to be loaded, checked with httpx before any load.

Secrets never travel as parameters: for a server the workbench started (``workbench target
up``: the stand-in or a certctl build) the API token, DSN and CA come from its state folder; for
a ``--target`` URL from ``CERTCTL_TOKEN``, ``CERTCTL_DSN`` and ``CERTCTL_CA_FILE``.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from workbench import argtypes
from workbench.errors import WorkbenchError
from workbench.target import embedded
from workbench.target.ports import is_loopback
from workbench.untrusted import printable

TOKEN_ENV = "CERTCTL_TOKEN"
DSN_ENV = "CERTCTL_DSN"
CA_ENV = "CERTCTL_CA_FILE"
# certctl's traps preflight knows; a scenario names the ones that can spoil it, and brings its
# own probes for what only it can see (acme_orders: a few signed requests).
TRAPS = ("rate_limit", "acme", "issuers", "fixture_parents", "renewal_check", "agent_health")
Probe = Callable[[httpx.Client, str], list[str]]  # (client on the target, token) -> warnings
# The limiter probe stops once certctl's default limiter (50 req/s, burst 100) would have
# refused; a 429 before that means a limiter is on.
LIMITER_RPS, LIMITER_BURST, PROBE_MARGIN, PROBE_MAX = 50.0, 100, 20, 250


@dataclass(frozen=True)
class Target:
    """Where to send load. ``dsn`` and the token stay out of repr, files and notebooks."""

    url: str
    ca_file: str | None
    insecure: bool
    embedded: bool
    dsn: str | None = field(default=None, repr=False)
    # The server `workbench target up` started (token file, pid, log), None for a --target URL
    started: embedded.TargetInfo | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        if self.started is not None:
            return self.started.kind
        return embedded.STANDIN if self.embedded else embedded.CERTCTL

    @property
    def safe_dsn(self) -> str | None:
        from workbench.seed import redact_dsn

        return redact_dsn(self.dsn) if self.dsn else None

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def validate_url(url: str) -> None:
    """Refuse a target URL that is not http(s) with a host, or holds a login
    (:func:`workbench.argtypes.url`)."""
    argtypes.url(url)


def resolve_target(url: str | None = None, ca_file: str | None = None,
                   insecure: bool = False) -> Target:
    """The target `workbench target up` started when ``url`` is None, else the given server."""
    if url is None:
        info = embedded.read_info()
        if info is None or not embedded.status().get("ready"):
            raise WorkbenchError("no target is running: start one with `workbench target up` "
                                 "(the stand-in) or `workbench target up --certctl PATH` (a "
                                 "certctl checkout), or pass --target URL")
        return started_target(info)
    validate_url(url)
    return Target(url=url.rstrip("/"), ca_file=ca_file or os.environ.get(CA_ENV),
                  insecure=insecure, embedded=False, dsn=os.environ.get(DSN_ENV))


def started_target(info: embedded.TargetInfo) -> Target:
    """A server the workbench started (the current target or a certctl instance) as a Target:
    its own CA, database, token file, pid and log."""
    return Target(url=info.url, ca_file=info.ca_file, insecure=False, embedded=True,
                  dsn=info.dsn, started=info)


def target_at(url: str, ca_file: str | None = None, insecure: bool = False) -> Target:
    """``url``'s server: the current target when ``url`` is on it (same scheme, host and port:
    its token and CA then come from the state folder), else a server of its own."""
    info = embedded.read_info()
    if info is not None and _origin(url) == _origin(info.url) and embedded.server_alive(info):
        return Target(url=info.url, ca_file=ca_file or info.ca_file, insecure=insecure,
                      embedded=True, dsn=info.dsn, started=info)
    return Target(url=url, ca_file=ca_file, insecure=insecure, embedded=False)


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return parts.scheme, host, parts.port or (443 if parts.scheme == "https" else 80)


def exit_report(target: Target) -> str | None:
    """For a server the workbench started: None while it runs, else why the run failed (it
    exited), with the tail of its log. None for any other target (its process is not ours)."""
    return embedded.exit_report(target.started) if target.started is not None else None


def token_for(target: Target) -> str:
    """The API token for ``target``: ``CERTCTL_TOKEN``, else the key of the server the
    workbench started (its token file), else the stand-in's.

    Checked before any request (:func:`check_token`, :func:`check_token_destination`), so a
    malformed token never reaches a header, and neither a plain-HTTP hop nor an unverified
    server off this machine ever sees it.
    """
    token = os.environ.get(TOKEN_ENV)
    if not token and target.started is not None and target.started.token_file:
        token = embedded.read_token_file(Path(target.started.token_file))
    if not token and target.embedded:
        token = embedded.read_token()
    if not token:
        raise WorkbenchError(f"no API token: export {TOKEN_ENV}=<key> (one of certctl's "
                             "CERTCTL_AUTH_SECRET keys)")
    check_token(token)
    check_token_destination(target.url, target.insecure)
    return token


# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def check_token(token: str) -> None:
    """Refuse a token that is not an RFC 6750 Bearer token (a CR/LF would inject headers).

    The message never holds the token, not even a part of it.
    """
    if not isinstance(token, str) or not _BEARER.fullmatch(token):
        raise WorkbenchError(f"{TOKEN_ENV} is not a valid Bearer token (RFC 6750 allows letters,"
                             " digits, - . _ ~ + / and trailing =; no spaces or line breaks);"
                             " export the API key exactly as the server has it (value not shown)")


def check_token_destination(url: str, insecure: bool = False) -> None:
    """Refuse to send the token where others could read it: plain ``http://``, or ``https://``
    without checking the certificate (``insecure``), only to this machine."""
    parts = urlsplit(url)
    if parts.hostname and is_loopback(parts.hostname):
        return
    if parts.scheme != "https":
        raise WorkbenchError(f"refusing to send {TOKEN_ENV} over plain HTTP to {parts.hostname}"
                             " (not this machine): use https://")
    if insecure:
        raise WorkbenchError(f"refusing to send {TOKEN_ENV} to {parts.hostname} (not this "
                             "machine) without checking its certificate (--insecure): anyone "
                             "on the path could take it; pass the server's CA with --ca-file "
                             "instead")


def check_cluster_destination(address: str) -> None:
    """Refuse to ship the token to a Dask scheduler in clear: it travels as a task argument,
    so only over Dask's TLS (``tls://``) or to a scheduler on this machine (or in-process)."""
    parts = urlsplit(address)
    on_this_machine = bool(parts.hostname) and is_loopback(parts.hostname)
    if parts.scheme in ("tls", "inproc") or on_this_machine:
        return
    raise WorkbenchError(f"refusing to send {TOKEN_ENV} to the Dask scheduler at {address} "
                         "unencrypted: use a tls:// address (Dask's TLS) or a scheduler on this "
                         "machine, and join only a cluster you trust: the client unpickles what "
                         "its scheduler and workers send back, so they can run code here")


def preflight(target: Target, token: str, strict: bool = False,
              acme_profiles: Sequence[str] = (), traps: Sequence[str] = TRAPS,
              probes: Sequence[Probe] = ()) -> dict:
    """Check reachability, TLS, identity and the token; returns the target's identity.

    Each failure is one sentence naming the problem and the fix, raised before any load. Then
    the certctl ``traps`` a scenario cares about (on its ``acme_profiles``) and its own
    ``probes`` are checked (:func:`trap_warnings`); their warnings are returned in
    ``identity["warnings"]``, or refused all at once with ``strict``.
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
        own = (" (or unset it: the target the workbench started has its own key)"
               if target.started is not None and os.environ.get(TOKEN_ENV) else "")
        raise WorkbenchError(f"the target refused the API token (401); set {TOKEN_ENV} to one "
                             f"of the server's API keys{own}")
    if auth.status_code != 200:
        raise WorkbenchError(f"auth check answered {auth.status_code}: {printable(auth.text)}")
    try:
        identity = target_identity(version.json())
    except ValueError:
        raise WorkbenchError(f"{target.url}/api/v1/version answered something other than JSON; "
                             "is this a certctl server?") from None
    warnings = trap_warnings(target, token, acme_profiles, traps, probes)
    if strict and warnings:
        raise WorkbenchError(f"--strict refuses {target.url}: " + "; ".join(warnings))
    return {
        "url": target.url,
        "kind": target.kind,
        **identity,
        "dsn": target.safe_dsn,
        "warnings": warnings,
    }


IDENTITY_CHARS = 100  # of a version or commit (a git SHA has 40)


def target_identity(body: object) -> dict:
    """What a ``/api/v1/version`` answer says the target is, safe to show anywhere:
    ``version`` and ``commit`` as :func:`~workbench.untrusted.printable` text (None when
    absent), ``modified`` a bool or None, ``standin`` a bool. A server says what it likes."""
    said = body if isinstance(body, dict) else {}
    version, commit, modified = (said.get(k) for k in ("version", "commit", "modified"))
    return {"version": None if version is None else printable(version, IDENTITY_CHARS),
            "commit": None if commit is None else printable(commit, IDENTITY_CHARS),
            "modified": modified if isinstance(modified, bool) else None,
            "standin": said.get("standin") is True}


def check_database(target: Target, parents: bool = True) -> None:
    """Refuse, before any load, a database the fixtures cannot be written to.

    Unreachable, not certctl's (missing tables named), or missing the fixtures' parent rows
    (``iss-local``, ``o-alice``, ``t-platform``, ``rp-standard``): one line with the fix. A host
    that is not on this machine needs ``--allow-remote-db`` first.
    """
    if not target.dsn:
        raise WorkbenchError(f"no database to seed: export {DSN_ENV}=<SQLAlchemy DSN of the "
                             "target's database>, e.g. postgresql+psycopg://certctl@127.0.0.1/certctl")
    from workbench import seed  # SQLAlchemy: only where a database is checked

    engine = seed.engine_for(target.dsn)
    try:
        seed.check_database(engine, parents)
    finally:
        engine.dispose()


# --- certctl's traps (docs/certctl-verified.md): warnings with the fix -------------------------


def trap_warnings(target: Target, token: str, acme_profiles: Sequence[str] = (),
                  traps: Sequence[str] = TRAPS, probes: Sequence[Probe] = ()) -> list[str]:
    """One sentence per certctl trap (of ``traps``) this target shows, each naming the fix,
    then what the scenario's ``probes`` found."""
    warnings = []
    with httpx.Client(base_url=target.url, verify=target.verify(), timeout=5.0) as client:
        refused_after = probe_rate_limiter(client) if "rate_limit" in traps else None
        if refused_after is not None:
            warnings.append(
                f"certctl's REST rate limiter is on (429 after {refused_after} quick requests to"
                " /health): it is keyed by source IP, so one load host gets 50 req/s in total"
                " across every endpoint; set CERTCTL_RATE_LIMIT_ENABLED=false on the server for"
                " capacity runs")
        for profile in dict.fromkeys(acme_profiles) if "acme" in traps else ():
            acme = _acme_warning(client, token, profile)
            if acme:
                warnings.append(acme)
        for probe in probes:
            warnings.extend(probe(client, token))
    if target.dsn and set(traps) - {"rate_limit", "acme"}:
        warnings.extend(database_warnings(target.dsn, traps))
    return warnings


def probe_rate_limiter(client: httpx.Client) -> int | None:
    """Requests sent before the first 429 on ``/health`` (certctl's no-auth chain, whose limiter
    has the same settings as the API's but its own buckets), or None if none came in time."""
    started = time.monotonic()
    for sent in range(1, PROBE_MAX + 1):
        if client.get("/health").status_code == 429:
            return sent
        if sent > LIMITER_BURST + LIMITER_RPS * (time.monotonic() - started) + PROBE_MARGIN:
            return None
    return None


def _acme_warning(client: httpx.Client, token: str, profile: str) -> str | None:
    path = f"/acme/profile/{profile}/directory"
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/html"):
        return (f"{path} answers HTML: certctl's dashboard shadows /acme/* when web/index.html "
                "or web/dist/index.html exists in its working directory; start it from a "
                "directory without web/")
    if response.status_code == 401:
        return (f"{path} answers 401: certctl serves /acme/* behind the Bearer API key; check "
                f"that {TOKEN_ENV} is one of its keys")
    if response.status_code in (404, 500) and kind.startswith("application/problem+json"):
        # certctl's code answers a missing profile 404; the running server answers 500.
        return (f"{path} answers {response.status_code} ({response.json().get('detail')!r}):"
                f" the ACME profile {profile!r} most likely does not exist; start certctl with "
                "CERTCTL_DEMO_SEED=true or create it, or pass -p profile_id <existing profile>")
    if response.status_code == 404:
        return f"{path} answers 404 ({response.text[:40].strip()!r}): this server has no ACME"
    return None


def database_warnings(dsn: str, traps: Sequence[str] = TRAPS) -> list[str]:
    """Traps visible in certctl's database: issuers, fixture parents, scheduler traces."""
    import sqlalchemy as sa

    from workbench import seed
    from workbench.seed import redact_dsn

    try:
        engine = seed.engine_for(dsn, allow_remote=True)  # read-only queries
        try:
            with engine.connect() as conn:
                issuers = conn.execute(sa.text(
                    "SELECT id FROM issuers WHERE enabled ORDER BY id")).scalars().all()
                touched = conn.execute(sa.text(
                    "SELECT count(*) FROM managed_certificates WHERE name LIKE 'loadtest-%'"
                    " AND (status IN ('Expiring', 'Expired') OR id IN (SELECT certificate_id"
                    " FROM jobs WHERE type = 'Renewal' AND status = 'Pending'))")).scalar_one()
                offline = conn.execute(sa.text(
                    "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'"
                    " AND status = 'Offline'")).scalar_one()
        finally:
            engine.dispose()
    except (WorkbenchError, sa.exc.SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return [f"database checks skipped ({redact_dsn(reason) if '://' in reason else reason});"
                f" check {DSN_ENV}"]
    warnings = []
    if len(issuers) > 1 and "issuers" in traps:
        warnings.append(
            f"{len(issuers)} enabled issuers ({', '.join(issuers)}): certctl's ARI looks a"
            " certificate up under one picked at random, so fixtures on iss-local answer 200"
            f" about 1 time in {len(issuers)}; disable the others (UPDATE issuers SET"
            " enabled=false WHERE id <> 'iss-local') and restart certctl")
    if touched and "renewal_check" in traps:
        warnings.append(
            f"certctl's scheduler renewal check has touched {touched} loadtest certificates"
            " (Expiring/Expired or Pending renewal jobs): set"
            " CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL=720h, restart, then reseed")
    if offline and "agent_health" in traps:
        warnings.append(
            f"{offline} loadtest agents are Offline (certctl's agent-health sweep): set"
            " CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL=24h and restart")
    return warnings
