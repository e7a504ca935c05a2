"""agent_storm: certctl's scale-tier scenario C, heartbeats from a seeded agent fleet."""

from __future__ import annotations

import math
from collections.abc import Mapping

from workbench.scenarios import (
    AGENT_CONNECTION,
    ARRIVAL_RATE,
    DURATION,
    MAX_VUS,
    RATE,
    REST_H2,
    Scenario,
    _fleet,
    fixture_size,
)


def fleet_for_load(params: Mapping) -> dict:
    """The fleet a heartbeat rate means: rate x certctl's 60 s interval agents, rounded up
    (1,279 heartbeats/s are 76,740 agents), so a capacity step measures that table."""
    return {"fleet_size": math.ceil(float(params["rate"]) * _fleet.HEARTBEAT_INTERVAL_S)}


def fleet_text(params: Mapping, load: float, bound: bool) -> str:
    """A heartbeat capacity as the fleet it was measured with."""
    return (f"fleet: {'at least ' if bound else ''}{params['fleet_size']:,} agents at "
            f"certctl's {_fleet.HEARTBEAT_INTERVAL_S:.0f} s heartbeat interval ({load:,.0f} "
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
        fixture_size("fleet_size", f"agents in seed/{_fleet.FLEET_SQL} (plan: 5,000)"),
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
    templates=_fleet.heartbeats,
    fixture=_fleet.seed_fleet,
    fixture_sizes=_fleet.fixture_sizes,
    size_param="fleet_size",
    fixture_heading="Seed the agent fleet",
    fixture_text=_fleet.FIXTURE_TEXT,
    traps=("rate_limit", "agent_health"),
    sized_to_load=fleet_for_load,
    capacity_text=fleet_text,
)
