"""acme_flow: certctl's older k6 ``acme_flow.js``, ACME reads for a synthetic certificate id."""

from __future__ import annotations

from collections.abc import Mapping

from workbench.driver import RequestTemplate
from workbench.scenarios import (
    ACME_H1,
    CONSTANT_VUS,
    DURATION,
    PER_CLIENT,
    SLEEP,
    VUS,
    Scenario,
    _acme,
)

K6_CERT_ID = "aaaa.bbbb"  # k6's synthetic renewal-info id: well-formed, names no certificate


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """certctl answers k6's id 404, which k6's check accepts (400 or 404); here those are the
    expected statuses, so they are not failures."""
    return _acme.iteration(params["profile_id"], K6_CERT_ID, (400, 404))


SCENARIO = Scenario(
    name="acme_flow",
    title="ACME flow",
    description=(
        "certctl's k6 `acme_flow.js`: closed-loop virtual users, each iteration `GET` "
        "directory, `HEAD` new-nonce and `GET` renewal-info for the synthetic id "
        f"`{K6_CERT_ID}`, then a 1 s sleep. certctl answers that id 404 (well-formed, "
        "unknown); k6's check accepts 400 or 404 but k6 still counted them as failed. Here 400 "
        "and 404 are the expected statuses of that endpoint, so `http_req_failed` measures "
        "real failures."),
    sends=f"directory, new-nonce, renewal-info/{K6_CERT_ID} (404 expected)",
    executor=CONSTANT_VUS,
    parameters=(
        VUS.but(help="virtual users, closed loop (k6: K6_VUS, default 100)"),
        DURATION,
        SLEEP.but(help="k6: sleep(1) after each iteration"),
        _acme.PROFILE_ID.but(help="k6 used prof-test, which no certctl seed creates"),
        ACME_H1,
        PER_CLIENT,
    ),
    profiles={
        "smoke": {"vus": 5, "duration_s": 3.0},
        "canonical": {"vus": 100, "duration_s": 300.0},
    },
    thresholds={"http_req_duration{endpoint:directory}": ["p(95)<500"],
                "http_req_duration{endpoint:new_nonce}": ["p(95)<300"],
                "http_req_duration{endpoint:renewal_info}": ["p(95)<800"],
                "http_req_failed": ["rate<0.01"]},
    templates=templates,
    fixture_text="None: the flow reads the profile's directory and asks ARI about an unknown "
                 "certificate.",
    traps=("rate_limit", "acme"),
    steps=3,
)
