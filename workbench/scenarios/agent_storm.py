"""agent_storm: certctl's scale-tier scenario C, heartbeats from a seeded agent fleet."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.scenarios import (
    AGENT_CONNECTION,
    ARRIVAL_RATE,
    DURATION,
    MAX_VUS,
    RATE,
    REST_H2,
    Scenario,
    fixture_size,
)

FLEET_SQL = "02_agent_fleet.sql"
_AGENTS = ("agents", "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'")
HEARTBEAT_INTERVAL_S = 60.0  # certctl's agents heartbeat once a minute


def agent_ids(fleet_size: int) -> list[str]:
    """The fixture's agent ids, in seeding order."""
    return [f"ag-loadtest-{seed.fixture_number(i)}" for i in range(1, fleet_size + 1)]


def templates(params: Mapping) -> tuple[RequestTemplate, ...]:
    """One heartbeat per fleet agent in turn, with the metadata certctl's agent sends."""
    out = []
    for i, agent_id in enumerate(agent_ids(params["fleet_size"]), start=1):
        os_name = {8: "windows", 9: "darwin"}.get(i % 10, "linux")
        hostname = f"loadtest-agent-{seed.fixture_number(i)}.example.test"
        body = json.dumps({"version": "1.0.0", "hostname": hostname,
                           "os": os_name, "architecture": "arm64" if i % 10 == 9 else "amd64",
                           "ip_address": f"198.51.100.{i % 254 + 1}"}, separators=(",", ":"))
        out.append(RequestTemplate("POST", f"/api/v1/agents/{agent_id}/heartbeat", "heartbeat",
                                   body))
    return tuple(out)


def seed_fleet(dsn: str, params: Mapping) -> dict:
    """Create or reset the ``loadtest-agent-NNNNN`` fleet: all Online, heartbeats staggered."""
    return seed.load_fixture(dsn, FLEET_SQL, {"fleet_size": params["fleet_size"]}, _AGENTS)


def fleet_for_load(params: Mapping) -> dict:
    """The fleet a heartbeat rate means: rate x certctl's 60 s interval agents, rounded up
    (1,279 heartbeats/s are 76,740 agents), so a capacity step measures that table."""
    return {"fleet_size": math.ceil(float(params["rate"]) * HEARTBEAT_INTERVAL_S)}


def fleet_text(params: Mapping, load: float, bound: bool) -> str:
    """A heartbeat capacity as the fleet it was measured with."""
    return (f"fleet: {'at least ' if bound else ''}{params['fleet_size']:,} agents at "
            f"certctl's {HEARTBEAT_INTERVAL_S:.0f} s heartbeat interval ({load:,.0f} "
            "heartbeats/s), seeded and measured at that load")


SCENARIO = Scenario(
    name="agent_storm",
    title="Agent heartbeat storm",
    description=(
        "certctl's scale-tier scenario C: an open-loop constant arrival rate of "
        "`POST /api/v1/agents/{id}/heartbeat` over a seeded fleet of `loadtest-agent-NNNNN` "
        "agents. Latency is measured from each request's intended start, so a stalled server "
        "cannot hide behind a slowed-down client."),
    sends="`POST /api/v1/agents/{id}/heartbeat`",
    executor=ARRIVAL_RATE,
    parameters=(
        RATE.but(help="heartbeats per second, open loop (certctl's plan: 5,000 agents / 30 s)"),
        DURATION,
        fixture_size("fleet_size", f"agents in seed/{FLEET_SQL} (plan: 5,000)"),
        MAX_VUS,
        REST_H2,
        AGENT_CONNECTION,
    ),
    profiles={
        "smoke": {"rate": 167.0, "duration_s": 10.0, "fleet_size": 500},
        "canonical": {"rate": 167.0, "duration_s": 300.0, "fleet_size": 5000},
    },
    thresholds={"http_req_duration": ["p(99)<1000", "p(95)<500"],
                "http_req_failed": ["rate<0.001"]},
    templates=templates,
    fixture=seed_fleet,
    fixture_sizes=lambda p: {"agents": p["fleet_size"]},
    size_param="fleet_size",
    fixture_heading="Seed the agent fleet",
    fixture_text=(f"`seed/{FLEET_SQL}`, idempotent: seeding resets the fleet to `Online` with "
                  "heartbeats staggered over the last 60 s."),
    traps=("rate_limit", "agent_health"),
    sized_to_load=fleet_for_load,
    capacity_text=fleet_text,
)
