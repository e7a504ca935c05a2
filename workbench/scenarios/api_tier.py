"""api_tier: certctl's older k6 API tier, certificate creates and lists at one open-loop rate."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.scenarios import ARRIVAL_RATE, DURATION, MAX_VUS, PER_CLIENT, RATE, REST_H2, Scenario

RESET_SQL = "04_api_tier_reset.sql"
_CREATED = ("api_certificates", "SELECT count(*) FROM managed_certificates"
                                " WHERE name LIKE 'loadtest-api-%'")


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """Alternating create and list at ``rate`` in total (k6: 50/s each).

    Every create carries a fresh name (certctl answers a duplicate with 500), so there is one
    create template per planned create; the run token keeps names unique across runs.
    """
    creates = math.ceil(float(params["rate"]) * float(params["duration_s"]) / 2) + 1
    token = secrets.token_hex(4)
    out = []
    for n in range(creates):
        name = f"loadtest-api-{token}-{n:06d}"
        body = {"name": name, "common_name": f"{name}.example.test", "issuer_id": "iss-local",
                "owner_id": "o-alice", "team_id": "t-platform",
                "renewal_policy_id": "rp-standard", "environment": "production",
                "sans": [f"{name}.example.test"]}
        out.append(RequestTemplate("POST", "/api/v1/certificates", "issuance_acceptance",
                                   json.dumps(body, separators=(",", ":")), expect=(201,)))
        out.append(RequestTemplate("GET", "/api/v1/certificates?per_page=50",
                                   "list_certificates", expect=(200,)))
    return tuple(out)


def remove_created(dsn: str, params: Mapping) -> dict:
    """Delete the certificates earlier runs created (``loadtest-api-*``)."""
    return seed.load_fixture(dsn, RESET_SQL, {}, _CREATED)


SCENARIO = Scenario(
    name="api_tier",
    title="API tier",
    description=(
        "certctl's k6 API tier (`deploy/test/loadtest/k6.js` in certctl's repository): "
        "`issuance_acceptance` "
        "(`POST /api/v1/certificates`, 201) and `list_certificates` "
        "(`GET /api/v1/certificates?per_page=50`, 200), alternating at `rate` in total, open "
        "loop (k6: 50/s each). Every create carries a fresh `loadtest-api-*` name; earlier "
        "runs' certificates are removed first."),
    sends="`POST /api/v1/certificates` and `GET /api/v1/certificates?per_page=50`, alternating",
    executor=ARRIVAL_RATE,
    parameters=(
        RATE.but(help="requests per second, creates and lists alternating (k6: 100 in total)"),
        DURATION,
        MAX_VUS,
        REST_H2,
        PER_CLIENT,
    ),
    profiles={
        "smoke": {"rate": 20.0, "duration_s": 3.0},
        "canonical": {"rate": 100.0, "duration_s": 300.0},
    },
    thresholds={"http_req_duration{endpoint:issuance_acceptance}": ["p(95)<2000", "p(99)<5000"],
                "http_req_duration{endpoint:list_certificates}": ["p(95)<800", "p(99)<2000"],
                "http_req_failed": ["rate<0.01"]},
    templates=templates,
    fixture=remove_created,
    fixture_heading="Remove earlier runs' certificates",
    fixture_text=(f"`seed/{RESET_SQL}`: deletes `loadtest-api-*` certificates, so the list's "
                  "`COUNT(*)` starts from the same table."),
    traps=("rate_limit", "fixture_parents"),
)
