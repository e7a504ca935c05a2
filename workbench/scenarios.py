"""The scenario registry: what each scenario sends, seeds and checks, its executor and profiles.

Scenarios come from certctl's scale tier (bulk_renewal, acme_burst, agent_storm), from its
older k6 harness (api_tier, acme_flow; contract section 10) and beyond k6 (acme_orders: JWS-signed
ACME orders, scripted in ``workbench.acme_orders``). Each is a notebook in ``notebooks/`` that
builds a :class:`workbench.run.Run`; this module says what that run sends.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from workbench import acme_orders, seed
from workbench.driver import RequestTemplate
from workbench.errors import WorkbenchError

ARRIVAL_RATE = "constant-arrival-rate"
CONSTANT_VUS = "constant-vus"
DEFAULT_ACME_PROFILE = "prof-standard-tls"  # exists in certctl's demo seed and in the stand-in
BULK_TOTALS = ("total_matched", "total_enqueued", "total_skipped", "total_failed")
# Content types of the two 429 shapes acme_burst counts (contract sections 4.1 and 4.2).
ACME_429_KIND = "429 application/problem+json"  # certctl emits it only as ...:rateLimited
REST_429_PREFIX = "429 text/plain"  # Go's http.Error: "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Scenario:
    """One load scenario: its requests, fixtures, executor and profiles."""

    name: str
    notebook: str
    description: str
    profiles: dict[str, dict]
    templates: Callable[[dict], tuple[RequestTemplate, ...]]
    seed: Callable[[str, dict], dict]  # create or reset the fixtures (idempotent)
    fixtures: Callable[[dict], dict]  # fixture sizes, for the record
    reset: Callable[[str, dict], dict] | None = None  # between runs once seeded; None: seed
    executor: str = ARRIVAL_RATE
    steps: int = 1  # templates per iteration (constant-vus: one user's sequence)
    traps: tuple[str, ...] = ("rate_limit",)  # certctl traps that spoil it (preflight.TRAPS)
    script: str = ""  # package.module:factory of scripted VUs (constant-vus only)

    def preflight_args(self, params: dict) -> dict:
        """What preflight checks for this scenario: its traps and ACME profile."""
        acme = (params.get("profile_id", DEFAULT_ACME_PROFILE),) if "acme" in self.traps else ()
        traps = self.traps + (("acme_finalize",) if params.get("finalize") else ())
        return {"traps": traps, "acme_profiles": acme}

    def executor_settings(self, params: dict) -> dict:
        """The DriveSpec fields of this scenario's executor, from its parameters."""
        settings: dict = {"executor": self.executor, "steps": self.steps,
                          "duration_s": float(params["duration_s"]),
                          "timeout_s": float(params.get("timeout_s", 10.0))}
        if self.executor == CONSTANT_VUS:
            vus = int(params["vus"])
            settings |= {"vus": vus, "max_vus": vus, "sleep_s": float(params["sleep_s"])}
            if self.script:
                settings |= {"script": self.script,
                             "script_params": {k: params[k] for k in SCRIPT_PARAMS
                                               if k in params}}
        else:
            settings |= {"rate": float(params["rate"]),
                         "max_vus": int(params.get("max_vus", 200))}
        return settings


# --- agent_storm (certctl scale tier, scenario C) ------------------------------------------------


def _heartbeat_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """One heartbeat per fleet agent in turn, with the metadata certctl's agent sends."""
    templates = []
    for i, agent_id in enumerate(seed.agent_ids(params["fleet_size"]), start=1):
        os_name = {8: "windows", 9: "darwin"}.get(i % 10, "linux")
        body = json.dumps({"version": "1.0.0", "hostname": f"loadtest-agent-{i:05d}.example.test",
                           "os": os_name, "architecture": "arm64" if i % 10 == 9 else "amd64",
                           "ip_address": f"198.51.100.{i % 254 + 1}"}, separators=(",", ":"))
        templates.append(RequestTemplate("POST", f"/api/v1/agents/{agent_id}/heartbeat",
                                         "heartbeat", body))
    return tuple(templates)


# --- bulk_renewal (scenario A) -----------------------------------------------------------------


def _bulk_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """Criteria mode: one body, re-sent (certctl matches the 50 oldest each time). ids mode:
    the fixture in batches of ``ids_per_request``, cycled."""
    path = "/api/v1/certificates/bulk-renew"
    if params.get("mode", "criteria") == "criteria":
        bodies = [{"team_id": params.get("team_id", "t-platform"),
                   "issuer_id": params.get("issuer_id", "iss-local")}]
    else:
        ids = seed.bulk_certificate_ids(params["bulk_size"])
        step = int(params.get("ids_per_request", 50))
        bodies = [{"certificate_ids": ids[i:i + step]} for i in range(0, len(ids), step)]
    return tuple(RequestTemplate("POST", path, "bulk_renew", json.dumps(b, separators=(",", ":")),
                                 expect=(200,), sum_fields=BULK_TOTALS) for b in bodies)


def _bulk_seed(dsn: str, params: dict) -> dict:
    return seed.seed_bulk_renewal(dsn, params["bulk_size"])


# --- acme_burst (scenario B) and acme_flow (k6 acme_flow.js) -------------------------------------


def _acme_iteration(profile_id: str, cert_id: str, ari_expect: tuple[int, ...]
                    ) -> tuple[RequestTemplate, ...]:
    """k6's ACME iteration: GET directory, HEAD new-nonce, GET renewal-info/<cert-id>."""
    base = f"/acme/profile/{profile_id}"
    return (RequestTemplate("GET", f"{base}/directory", "directory", expect=(200,)),
            RequestTemplate("HEAD", f"{base}/new-nonce", "new_nonce", expect=(200,)),
            RequestTemplate("GET", f"{base}/renewal-info/{cert_id}", "renewal_info",
                            expect=ari_expect))


def _acme_burst_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """Iterations cycle through the ARI fixture, so renewal-info answers 200 (contract 7.4)."""
    profile_id = params.get("profile_id", DEFAULT_ACME_PROFILE)
    return tuple(t for cert_id in seed.ari_cert_ids(params["ari_size"])
                 for t in _acme_iteration(profile_id, cert_id, (200,)))


def _acme_flow_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """k6's synthetic ``aaaa.bbbb`` id: well-formed, so certctl answers 404, which k6's check
    accepts (400 or 404); here those are the expected statuses, so they are not failures."""
    return _acme_iteration(params.get("profile_id", DEFAULT_ACME_PROFILE), "aaaa.bbbb",
                           (400, 404))


def _ari_seed(dsn: str, params: dict) -> dict:
    return seed.seed_ari_certs(dsn, params["ari_size"])


# --- api_tier (k6.js issuance_acceptance + list_certificates) ------------------------------------


def _api_tier_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """Alternating create and list at ``rate`` in total (k6: 50/s each).

    Every create carries a fresh name (certctl answers a duplicate with 500), so there is one
    create template per planned create; the run token keeps names unique across runs.
    """
    creates = math.ceil(float(params["rate"]) * float(params["duration_s"]) / 2) + 1
    token = secrets.token_hex(4)
    templates = []
    for n in range(creates):
        name = f"loadtest-api-{token}-{n:06d}"
        body = {"name": name, "common_name": f"{name}.example.test", "issuer_id": "iss-local",
                "owner_id": "o-alice", "team_id": "t-platform",
                "renewal_policy_id": "rp-standard", "environment": "production",
                "sans": [f"{name}.example.test"]}
        templates.append(RequestTemplate("POST", "/api/v1/certificates", "issuance_acceptance",
                                         json.dumps(body, separators=(",", ":")), expect=(201,)))
        templates.append(RequestTemplate("GET", "/api/v1/certificates?per_page=50",
                                         "list_certificates", expect=(200,)))
    return tuple(templates)


def _api_tier_seed(dsn: str, params: dict) -> dict:
    return seed.reset_api_tier(dsn)


def no_fixture(dsn: str, params: dict) -> dict:
    """For scenarios that need no fixture (and so no database)."""
    return {}


# --- acme_orders (beyond k6: JWS-signed new-account / new-order) -------------------------------

SCRIPT_PARAMS = ("profile_id", "alg", "fetch_order", "fetch_authz", "finalize")
JWS_PROBLEMS = ("badNonce", "unauthorized", "malformed", "badSignatureAlgorithm",
                "accountDoesNotExist")  # a signing or nonce bug in the client, not the server


def _acme_orders_templates(params: dict) -> tuple[RequestTemplate, ...]:
    """The requests the scripted VU may send, by tag (paths show the shapes; the script fills
    in ids). Only the steps the parameters enable, so every tag gets requests."""
    base = acme_orders.profile_base(params.get("profile_id", DEFAULT_ACME_PROFILE))
    jose = (("Content-Type", "application/jose+json"),)
    steps = [RequestTemplate("HEAD", f"{base}/new-nonce", "new_nonce", expect=(200,)),
             RequestTemplate("POST", f"{base}/new-account", "new_account", headers=jose,
                             expect=(200, 201)),
             RequestTemplate("POST", f"{base}/new-order", "new_order", headers=jose,
                             expect=(201,))]
    if params.get("fetch_order"):
        steps.append(RequestTemplate("POST", f"{base}/order/{{id}}", "order", headers=jose,
                                     expect=(200,)))
    if params.get("fetch_authz"):
        steps.append(RequestTemplate("POST", f"{base}/authz/{{id}}", "authz", headers=jose,
                                     expect=(200,)))
    if params.get("finalize"):
        steps.append(RequestTemplate("POST", f"{base}/order/{{id}}/finalize", "finalize",
                                     headers=jose, expect=(200,)))
    return tuple(steps)


SCENARIOS: dict[str, Scenario] = {
    "bulk_renewal": Scenario(
        name="bulk_renewal",
        notebook="bulk_renewal.ipynb",
        description="open loop POST /api/v1/certificates/bulk-renew over a bulk-renewal fleet",
        profiles={
            "smoke": {"rate": 5.0, "duration_s": 4.0, "bulk_size": 200, "mode": "criteria"},
            "canonical": {"rate": 5.0, "duration_s": 300.0, "bulk_size": 10000,
                          "mode": "criteria"},
        },
        templates=_bulk_templates,
        seed=_bulk_seed,
        reset=lambda dsn, p: seed.reset_bulk_renewal(dsn),
        fixtures=lambda p: {"certificates": p["bulk_size"]},
        traps=("rate_limit", "fixture_parents", "renewal_check"),
    ),
    "acme_burst": Scenario(
        name="acme_burst",
        notebook="acme_burst.ipynb",
        description="VUs looping ACME directory, new-nonce and renewal-info over ARI fixtures",
        profiles={
            "smoke": {"vus": 20, "duration_s": 3.0, "sleep_s": 1.0, "ari_size": 100,
                      "profile_id": DEFAULT_ACME_PROFILE},
            "canonical": {"vus": 200, "duration_s": 300.0, "sleep_s": 1.0, "ari_size": 1000,
                          "profile_id": DEFAULT_ACME_PROFILE},
        },
        templates=_acme_burst_templates,
        seed=_ari_seed,
        fixtures=lambda p: {"ari_certificates": p["ari_size"]},
        executor=CONSTANT_VUS,
        steps=3,
        traps=("rate_limit", "acme", "issuers", "fixture_parents"),
    ),
    "agent_storm": Scenario(
        name="agent_storm",
        notebook="agent_storm.ipynb",
        description="open loop POST /api/v1/agents/{id}/heartbeat over a seeded agent fleet",
        profiles={
            "smoke": {"rate": 167.0, "duration_s": 10.0, "fleet_size": 500},
            "canonical": {"rate": 167.0, "duration_s": 300.0, "fleet_size": 5000},
        },
        templates=_heartbeat_templates,
        seed=lambda dsn, p: seed.seed_agent_fleet(dsn, p["fleet_size"]),
        fixtures=lambda p: {"agents": p["fleet_size"]},
        traps=("rate_limit", "agent_health"),
    ),
    "api_tier": Scenario(
        name="api_tier",
        notebook="api_tier.ipynb",
        description="k6 API tier: POST /api/v1/certificates and GET ?per_page=50, open loop",
        profiles={
            "smoke": {"rate": 20.0, "duration_s": 3.0},
            "canonical": {"rate": 100.0, "duration_s": 300.0},
        },
        templates=_api_tier_templates,
        seed=_api_tier_seed,
        fixtures=lambda p: {},
        traps=("rate_limit", "fixture_parents"),
    ),
    "acme_flow": Scenario(
        name="acme_flow",
        notebook="acme_flow.ipynb",
        description="k6 acme_flow: VUs looping directory, new-nonce, renewal-info/aaaa.bbbb",
        profiles={
            "smoke": {"vus": 5, "duration_s": 3.0, "sleep_s": 1.0,
                      "profile_id": DEFAULT_ACME_PROFILE},
            "canonical": {"vus": 100, "duration_s": 300.0, "sleep_s": 1.0,
                          "profile_id": DEFAULT_ACME_PROFILE},
        },
        templates=_acme_flow_templates,
        seed=no_fixture,
        fixtures=lambda p: {},
        executor=CONSTANT_VUS,
        steps=3,
        traps=("rate_limit", "acme"),
    ),
    "acme_orders": Scenario(
        name="acme_orders",
        notebook="acme_orders.ipynb",
        description="VUs with their own ACME account keys looping JWS-signed new-order (kid), "
                    "order and authz reads",
        profiles={
            "smoke": {"vus": 4, "duration_s": 3.0, "sleep_s": 0.1, "alg": "ES256",
                      "fetch_order": True, "fetch_authz": True, "finalize": False,
                      "profile_id": DEFAULT_ACME_PROFILE},
            "canonical": {"vus": 50, "duration_s": 300.0, "sleep_s": 0.0, "alg": "ES256",
                          "fetch_order": True, "fetch_authz": True, "finalize": False,
                          "profile_id": DEFAULT_ACME_PROFILE},
        },
        templates=_acme_orders_templates,
        seed=lambda dsn, p: seed.reset_acme_orders(dsn),
        fixtures=lambda p: {"acme_accounts": p["vus"]},
        executor=CONSTANT_VUS,
        traps=("rate_limit", "acme", "acme_orders"),
        script="workbench.acme_orders:script",
    ),
}

# Parameters the scenarios accept, with their types (papermill passes them through YAML/JSON).
PARAM_TYPES = {"rate": (int, float), "duration_s": (int, float), "fleet_size": int,
               "max_vus": int, "timeout_s": (int, float), "bulk_size": int, "ari_size": int,
               "vus": int, "sleep_s": (int, float), "ids_per_request": int,
               "mode": str, "profile_id": str, "team_id": str, "issuer_id": str,
               "alg": str, "fetch_order": bool, "fetch_authz": bool, "finalize": bool}
ZERO_ALLOWED = frozenset({"sleep_s"})  # a closed loop without think time is a valid burst
CHOICES = {"mode": ("criteria", "ids"), "alg": ("ES256", "RS256", "EdDSA")}
_ID = re.compile(r"^[A-Za-z0-9._-]+$")  # ids go into URL paths and JSON bodies verbatim


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise WorkbenchError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
                             " (or all)")
    return SCENARIOS[name]


def profile_params(scenario: Scenario, profile: str) -> dict:
    if profile not in scenario.profiles:
        raise WorkbenchError(f"unknown profile {profile!r} for {scenario.name}; choose one of "
                             f"{', '.join(scenario.profiles)}")
    return dict(scenario.profiles[profile])


def validate_params(params: dict) -> None:
    """Refuse wrong types, non-positive sizes and unknown choices, naming the parameter."""
    for name, types in PARAM_TYPES.items():
        if name not in params:
            continue
        value = params[name]
        if types is bool:
            if not isinstance(value, bool):
                raise WorkbenchError(f"parameter {name} must be true or false, got {value!r}")
            continue
        if types is str:
            if not isinstance(value, str) or not _ID.match(value):
                raise WorkbenchError(f"parameter {name} must be a non-empty name of letters, "
                                     f"digits, '.', '_' or '-', got {value!r}")
            if name in CHOICES and value not in CHOICES[name]:
                raise WorkbenchError(f"parameter {name} must be one of "
                                     f"{', '.join(CHOICES[name])}, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            want = "a number" if types == (int, float) else "an integer"
            raise WorkbenchError(f"parameter {name} must be {want}, got {value!r}")
        if value < 0 or (value == 0 and name not in ZERO_ALLOWED):
            raise WorkbenchError(f"parameter {name} must be positive, got {value!r}")


# --- what the notebooks show beside the latency ------------------------------------------------


def response_totals(result: dict, tag: str = "bulk_renew") -> pd.DataFrame:
    """Sums of bulk-renew's response totals over the run (matched, enqueued, skipped, failed)."""
    totals = (result.get("response_totals") or {}).get(tag, {})
    row = {field.removeprefix("total_"): totals.get(field, 0) for field in BULK_TOTALS}
    return pd.DataFrame([row], index=pd.Index([tag], name="endpoint"))


def acme_problems(result: dict) -> pd.DataFrame:
    """Problem responses per endpoint and ACME type (badNonce, unauthorized, rateLimited,
    serverInternal, ...), with ``jws`` marking the types a client's signing or nonce bug causes."""
    rows = [{"endpoint": tag, "type": kind, "count": n, "jws": kind in JWS_PROBLEMS}
            for tag, per in sorted((result.get("problems") or {}).items())
            for kind, n in sorted(per.items())]
    return pd.DataFrame(rows, columns=["endpoint", "type", "count", "jws"])


def client_costs(result: dict) -> pd.DataFrame:
    """The driver's own per-request work, apart from server latency: signing (``sign_ms``) and
    CSR building (``csr_ms``), in milliseconds, with their counts."""
    names = ((result.get("script") or {}).get("timing_histograms") or {})
    rows = {name: result[f"{name}_ms"] for name in sorted(names) if f"{name}_ms" in result}
    frame = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["count", "mean", "p50", "p90", "p99", "max"])
    frame.index.name = "client work"
    return frame


def rate_limited(result: dict) -> pd.DataFrame:
    """acme_burst's two 429 counters per endpoint: ACME ``rateLimited`` problems and the REST
    limiter's plain-text refusals (certctl's ACME GETs only ever get the second kind)."""
    kinds = result.get("response_kinds") or {}
    rows = {tag: {"acme_rate_limited": counts.get(ACME_429_KIND, 0),
                  "rest_rate_limited": sum(n for kind, n in counts.items()
                                           if kind.startswith(REST_429_PREFIX))}
            for tag, counts in sorted(kinds.items())}
    frame = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["acme_rate_limited", "rest_rate_limited"])
    frame.index.name = "endpoint"
    return frame
