"""acme_burst: certctl's scale-tier scenario B, ACME reads with renewal-info over ARI fixtures."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.scenarios import (
    ACME_H1,
    CONSTANT_VUS,
    DURATION,
    PER_CLIENT,
    RATE_LIMITED,
    SLEEP,
    VUS,
    Scenario,
    _acme,
    fixture_size,
)

ARI_SQL = "03_ari_certs.sql"
ARI_AKI = b"loadtest"  # certctl ignores the AKI half of an ARI cert-id; any bytes do
_VERSIONS = ("versions", "SELECT count(*) FROM certificate_versions"
                         " WHERE id LIKE 'cv-loadtest-ari-%'")


def ari_serial(i: int) -> str:
    """Serial of ARI fixture ``i`` as stored: lowercase hex, never a leading zero."""
    return f"ace0{i:012x}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ari_cert_ids(ari_size: int) -> list[str]:
    """RFC 9773 cert-ids (``base64url(AKI).base64url(serial)``) of the ARI fixture."""
    aki = _b64url(ARI_AKI)
    return [f"{aki}.{_b64url(bytes.fromhex(ari_serial(i)))}" for i in range(1, ari_size + 1)]


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """Iterations cycle through the ARI fixture, so renewal-info finds each certificate and
    answers 200 (certctl matches the serial as stored, lowercase hex without leading zeros)."""
    return tuple(t for cert_id in ari_cert_ids(params["ari_size"])
                 for t in _acme.iteration(params["profile_id"], cert_id, (200,)))


def seed_ari_certs(dsn: str, params: Mapping) -> dict:
    """Create or reset the ``loadtest-ari-NNNNN`` certificates and their versions."""
    return seed.load_fixture(dsn, ARI_SQL, {"ari_size": params["ari_size"]}, _VERSIONS,
                             parents=True)


SCENARIO = Scenario(
    name="acme_burst",
    title="ACME burst",
    description=(
        "certctl's scale-tier scenario B: closed-loop virtual users, each iteration `GET` "
        "directory, `HEAD` new-nonce and `GET` renewal-info (ARI) for a fixture certificate "
        f"from `seed/{ARI_SQL}`, whose serials are lowercase unpadded hex so ARI answers 200. "
        "Two counters separate ACME `rateLimited` problems (`application/problem+json`) from "
        "the REST limiter's plain-text 429s."),
    sends="directory, new-nonce, renewal-info",
    executor=CONSTANT_VUS,
    parameters=(
        VUS.but(help="virtual users, closed loop (certctl's plan: 200)"),
        DURATION,
        SLEEP.but(help="think time after each iteration, as certctl's k6 ACME script sleeps"),
        fixture_size("ari_size", "ARI fixture certificates the iterations cycle through"),
        _acme.PROFILE_ID,
        ACME_H1,
        PER_CLIENT,
    ),
    profiles={
        "smoke": {"vus": 20, "duration_s": 3.0, "ari_size": 100},
        "canonical": {"vus": 200, "duration_s": 300.0, "ari_size": 1000},
    },
    thresholds={"http_req_duration{endpoint:directory}": ["p(95)<500"],
                "http_req_duration{endpoint:new_nonce}": ["p(95)<300"],
                "http_req_duration{endpoint:renewal_info}": ["p(95)<800"],
                "http_req_server_error": ["rate<0.001"]},
    templates=templates,
    fixture=seed_ari_certs,
    fixture_sizes=lambda p: {"ari_certificates": p["ari_size"]},
    size_param="ari_size",
    fixture_heading="Seed the ARI certificates",
    fixture_text=(f"`seed/{ARI_SQL}`, idempotent: managed certificates on `iss-local` with one "
                  "version each, serial `ace0` + 12 hex digits."),
    traps=("rate_limit", "acme", "issuers", "fixture_parents"),
    steps=3,
    notes=(RATE_LIMITED,),
    threshold_help="5xx < 0.1 % (http_req_server_error)",
)
