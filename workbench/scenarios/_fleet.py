"""The seeded agent fleet the agent scenarios share: its fixture (``loadtest-agent-NNNNN``,
``seed/02_agent_fleet.sql``), its ids, and each agent's heartbeat as certctl's agent sends it.

agent_storm sends the heartbeats at a rate over the fleet; agent_fleet runs each agent's own
loop (heartbeat and work poll). Both seed the fleet through :func:`seed_fleet`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from workbench import seed
from workbench.driver import RequestTemplate

FLEET_SQL = "02_agent_fleet.sql"
_AGENTS = ("agents", "SELECT count(*) FROM agents WHERE id LIKE 'ag-loadtest-%'")
HEARTBEAT_INTERVAL_S = 60.0  # certctl's agents heartbeat once a minute
HEARTBEAT = "heartbeat"  # the endpoint tag of a heartbeat
FIXTURE_TEXT = (f"`seed/{FLEET_SQL}`, idempotent: seeding resets the fleet to `Online` with "
                "heartbeats staggered over the last 60 s.")


def agent_ids(fleet_size: int) -> list[str]:
    """The fixture's agent ids, in seeding order."""
    return [f"ag-loadtest-{seed.fixture_number(i)}" for i in range(1, fleet_size + 1)]


def heartbeats(params: Mapping) -> tuple[RequestTemplate, ...]:
    """One heartbeat per agent of the fleet (``fleet_size``), in seeding order, with the
    metadata certctl's agent sends."""
    out = []
    for i, agent_id in enumerate(agent_ids(params["fleet_size"]), start=1):
        os_name = {8: "windows", 9: "darwin"}.get(i % 10, "linux")
        hostname = f"loadtest-agent-{seed.fixture_number(i)}.example.test"
        body = json.dumps({"version": "1.0.0", "hostname": hostname,
                           "os": os_name, "architecture": "arm64" if i % 10 == 9 else "amd64",
                           "ip_address": f"198.51.100.{i % 254 + 1}"}, separators=(",", ":"))
        out.append(RequestTemplate("POST", f"/api/v1/agents/{agent_id}/heartbeat", HEARTBEAT,
                                   body))
    return tuple(out)


def seed_fleet(dsn: str, params: Mapping) -> dict:
    """Create or reset the ``loadtest-agent-NNNNN`` fleet: all Online, heartbeats staggered."""
    return seed.load_fixture(dsn, FLEET_SQL, {"fleet_size": params["fleet_size"]}, _AGENTS)


def fixture_sizes(params: Mapping) -> dict:
    """The fleet for the record: its agents."""
    return {"agents": params["fleet_size"]}
