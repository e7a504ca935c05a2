"""bulk_renewal: certctl's scale-tier scenario A, bulk renew over a seeded certificate fleet."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.scenarios import (
    ARRIVAL_RATE,
    DURATION,
    FLAG,
    INTEGER,
    MAX_VUS,
    NAME,
    NUMBER,
    PER_CLIENT,
    RATE,
    REST_H2,
    Backlog,
    Note,
    Param,
    Scenario,
    fixture_size,
)

if TYPE_CHECKING:
    import pandas as pd

CERTS_SQL = "01_bulk_renewal_certs.sql"
RESET_SQL = "01_bulk_renewal_reset.sql"
TOTALS = ("total_matched", "total_enqueued", "total_skipped", "total_failed")
TAG = "bulk_renew"
FIXTURE_LIKE = "mc-loadtest-bulk-%"  # the fixture's certificate ids, and so its renewal jobs
_ACTIVE = ("certificates", "SELECT count(*) FROM managed_certificates"
                           f" WHERE id LIKE '{FIXTURE_LIKE}' AND status = 'Active'")
NOOP_SHARE = 0.9  # more of the matched certificates skipped than this: mostly no-op calls
PROCESSED = ("Pending", "Running")  # what certctl's job processor claims and works on


def fleet_size(params: Mapping) -> int:
    """Certificates the fixture holds: ``bulk_size``, or in ids mode sized to the run (every
    call's ``ids_per_request`` certificates distinct, so every call can enqueue real jobs) when
    ``size_to_run`` is on and that is more; at most the fixtures' bound."""
    size = int(params["bulk_size"])
    if params["mode"] == "ids" and params["size_to_run"]:
        calls = math.ceil(float(params["rate"]) * float(params["duration_s"]))
        size = max(size, calls * int(params["ids_per_request"]))
    return min(size, seed.MAX_FIXTURE)


def renewal_text(params: Mapping, load: float, bound: bool) -> str | None:
    """ids mode: a call rate as the certificates it renews, over the fleet it was measured
    with (every call named certificates not yet renewed: ``size_to_run``)."""
    if params["mode"] != "ids":
        return None
    return (f"renewals: {'at least ' if bound else ''}{load * params['ids_per_request']:,.0f} "
            f"certificates/s enqueued ({params['ids_per_request']} per call), over "
            f"{fleet_size(params):,} certificates seeded and measured at that load")


def noop_warnings(result: Mapping) -> list[str]:
    """In words, each endpoint whose responses skipped more than 90 % of what they matched
    (bulk renewal over an exhausted fleet): its latency is that of calls that did nothing."""
    warnings = []
    for tag, totals in sorted((result.get("response_totals") or {}).items()):
        matched, skipped = totals.get("total_matched"), totals.get("total_skipped")
        if matched is None or skipped is None:
            continue
        enqueued = totals.get("total_enqueued", 0)
        if matched == 0:
            warnings.append(f"{tag}: no call matched a certificate, so this run timed no-op "
                            "calls only")
        elif skipped > NOOP_SHARE * matched:
            warnings.append(f"{tag}: {skipped:,} of the {matched:,} certificates matched "
                            f"({skipped / matched:.0%}) were skipped and {enqueued:,} enqueued, "
                            "so this run timed mostly no-op calls (the fleet was exhausted: "
                            "in ids mode keep size_to_run on, or seed a larger fleet)")
    return warnings


def enqueued(result: Mapping) -> int:
    """Renewal jobs the run's calls enqueued, summed over their responses."""
    totals = result.get("response_totals") or {}
    return sum(int(t.get("total_enqueued", 0)) for t in totals.values())


def drain_plan(kind: str, jobs: Mapping[str, int]) -> tuple[bool, str]:
    """Whether to wait for the fixture's backlog to drain, and what the drain measures.

    certctl's job processor (every ``CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL``, 30 s; up to
    ``CERTCTL_RENEWAL_CONCURRENCY``, 25, at a time) claims ``Pending`` jobs. In server keygen
    mode bulk renew creates them ``Pending`` and the processor issues each through the CA: the
    drain is the scheduler's issuing throughput. In agent keygen mode it creates
    ``AwaitingCSR`` jobs, which only an agent's CSR moves on: nothing drains. The stand-in has
    no job processor at all.
    """
    pending = sum(jobs.get(s, 0) for s in PROCESSED)
    if kind == "stand-in":
        return False, (f"the stand-in has no job processor: nothing will drain ({pending} "
                       "Pending/Running jobs stay as they are)")
    if pending == 0 and jobs.get("AwaitingCSR", 0):
        return False, (f"agent keygen mode: {jobs['AwaitingCSR']} jobs are AwaitingCSR, which "
                       "only an agent's CSR moves on; certctl's job processor leaves them, so "
                       "nothing drains (run certctl with CERTCTL_KEYGEN_MODE=server to measure "
                       "the scheduler)")
    if pending == 0:
        return False, "no Pending or Running job of the fixture: nothing to drain"
    return True, ("server keygen mode: certctl's job processor issues the Pending jobs "
                  "(every CERTCTL_SCHEDULER_JOB_PROCESSOR_INTERVAL, up to "
                  "CERTCTL_RENEWAL_CONCURRENCY at a time); the drain is its throughput")


def certificate_ids(bulk_size: int) -> list[str]:
    """The fixture's certificate ids, oldest ``created_at`` first."""
    return [f"mc-loadtest-bulk-{seed.fixture_number(i)}" for i in range(1, bulk_size + 1)]


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """Criteria mode: one body, re-sent (certctl matches the 50 oldest each time). ids mode:
    the fixture in batches of ``ids_per_request``, cycled."""
    if params["mode"] == "criteria":
        bodies = [{"team_id": params["team_id"], "issuer_id": params["issuer_id"]}]
    else:
        ids = certificate_ids(fleet_size(params))
        step = params["ids_per_request"]
        bodies = [{"certificate_ids": ids[i:i + step]} for i in range(0, len(ids), step)]
    return tuple(RequestTemplate("POST", "/api/v1/certificates/bulk-renew", TAG,
                                 json.dumps(b, separators=(",", ":")), expect=(200,),
                                 sum_fields=TOTALS) for b in bodies)


def seed_certificates(dsn: str, params: Mapping) -> dict:
    """Create or reset the ``loadtest-bulk-NNNNN`` certificates (all Active, no jobs)."""
    return seed.load_fixture(dsn, CERTS_SQL, {"bulk_size": fleet_size(params)}, _ACTIVE,
                             parents=True)


def reset_certificates(dsn: str, params: Mapping) -> dict:
    """Put the fleet back between runs: its jobs deleted, status Active again."""
    return seed.load_fixture(dsn, RESET_SQL, {}, _ACTIVE)


def _totals_table(result: Mapping) -> pd.DataFrame:
    totals = (result.get("response_totals") or {}).get(TAG, {})
    row = {name.removeprefix("total_"): totals.get(name, 0) for name in TOTALS}
    import pandas as pd  # here: checking a command's input never loads pandas

    return pd.DataFrame([row], index=pd.Index([TAG], name="endpoint"))


def _totals_line(result: Mapping, tag: str) -> str:
    totals = (result.get("response_totals") or {}).get(tag)
    return " ".join(f"{k.removeprefix('total_')}={v}" for k, v in totals.items()) if totals else ""


RESPONSE_TOTALS = Note(
    "Response totals",
    "Summed over every bulk-renew response: certificates matched, renewal jobs enqueued, "
    "skipped (already `RenewalInProgress`, ...), failed.",
    _totals_table, _totals_line)

SCENARIO = Scenario(
    name="bulk_renewal",
    title="Bulk renewal",
    description=(
        "certctl's scale-tier scenario A: an open-loop constant arrival rate of "
        "`POST /api/v1/certificates/bulk-renew` over a seeded fleet of `loadtest-bulk-NNNNN` "
        "certificates. In criteria mode certctl matches at most 50 certificates per call (its "
        "repository clamps the page to 50, oldest `created_at` first), renews those still "
        "`Active` and skips them on every later call; `certificate_ids` mode renews the fleet "
        "in batches, the fleet grown by default to the run's calls times `ids_per_request` "
        "so every call sends certificates not yet renewed. The response totals are summed "
        "beside the latency; when more than 90 % of what was matched was skipped, the run says "
        "it timed mostly no-op calls."),
    sends="`POST /api/v1/certificates/bulk-renew`",
    executor=ARRIVAL_RATE,
    parameters=(
        RATE.but(help="bulk-renew calls per second, open loop (certctl's plan: 5/s for 5 min)"),
        DURATION,
        fixture_size("bulk_size", f"certificates in seed/{CERTS_SQL} (plan: 10,000)"),
        Param("mode", NAME, "criteria", '"criteria" (team_id + issuer_id) or "ids" '
                                        "(certificate_ids batches)", choices=("criteria", "ids")),
        Param("team_id", NAME, "t-platform", "criteria mode: the team"),
        Param("issuer_id", NAME, "iss-local", "criteria mode: the issuer"),
        Param("ids_per_request", INTEGER, 50, "ids mode: certificate ids per call",
              maximum=seed.MAX_FIXTURE),
        Param("size_to_run", FLAG, True, "ids mode: grow the fleet to calls x ids_per_request "
                                         "so no call re-sends a renewed certificate"),
        MAX_VUS,
        Param("drain_timeout_s", NUMBER, 60.0, "after the timed phase, wait at most this long "
                                               "for the renewal jobs to drain (0: do not wait)",
              zero_ok=True),
        REST_H2,
        PER_CLIENT,
    ),
    profiles={
        "smoke": {"rate": 5.0, "duration_s": 4.0, "bulk_size": 200, "drain_timeout_s": 10.0},
        # ids: criteria mode re-matches the same 50 oldest certificates, so 99 % of a run's
        # calls renew nothing (docs/telemetry.md, "Bulk renewal: criteria or ids")
        "canonical": {"rate": 5.0, "duration_s": 300.0, "bulk_size": 10000, "mode": "ids",
                      "drain_timeout_s": 600.0},
    },
    thresholds={"http_req_duration": ["p(99)<5000", "p(95)<2000"],
                "http_req_failed": ["rate<0.01"]},
    templates=templates,
    fixture=seed_certificates,
    fixture_reset=reset_certificates,
    fixture_sizes=lambda p: {"certificates": fleet_size(p)},
    size_param="bulk_size",
    fixture_heading="Seed (or reset) the bulk-renewal fleet",
    fixture_text=(f"`seed/{CERTS_SQL}`, idempotent: seeding puts every fixture certificate back "
                  f"to `Active` and removes its jobs (`seed/{RESET_SQL}` does only that between "
                  "runs)."),
    traps=("rate_limit", "fixture_parents", "renewal_check"),
    notes=(RESPONSE_TOTALS,),
    warnings=noop_warnings,
    warnings_title="Warning: mostly no-op calls",
    backlog=Backlog(jobs_like=FIXTURE_LIKE, statuses=PROCESSED, enqueued=enqueued,
                    plan=drain_plan),
    capacity_text=renewal_text,  # its fixture grows with a step's load by fleet_size itself
)
