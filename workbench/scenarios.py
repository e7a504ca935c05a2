"""The scenario registry: what each scenario sends, seeds and checks, and its profiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from workbench import seed
from workbench.driver import RequestTemplate
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class Scenario:
    name: str
    notebook: str
    description: str
    profiles: dict[str, dict]
    templates: Callable[[dict], tuple[RequestTemplate, ...]]
    seed: Callable[[str, dict], dict]
    fixtures: Callable[[dict], dict]


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


AGENT_STORM_THRESHOLDS = {
    "http_req_duration": ["p(99)<1000", "p(95)<500"],
    "http_req_failed": ["rate<0.001"],
}

SCENARIOS: dict[str, Scenario] = {
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
    ),
}

# Parameters every scenario accepts, with their types (papermill passes them through YAML/JSON).
PARAM_TYPES = {"rate": (int, float), "duration_s": (int, float), "fleet_size": int,
               "max_vus": int, "timeout_s": (int, float)}


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise WorkbenchError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def profile_params(scenario: Scenario, profile: str) -> dict:
    if profile not in scenario.profiles:
        raise WorkbenchError(f"unknown profile {profile!r} for {scenario.name}; choose one of "
                             f"{', '.join(scenario.profiles)}")
    return dict(scenario.profiles[profile])


def validate_params(params: dict) -> None:
    """Refuse wrong types and non-positive sizes, naming the parameter."""
    for name, types in PARAM_TYPES.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, types):
            want = "a number" if types == (int, float) else "an integer"
            raise WorkbenchError(f"parameter {name} must be {want}, got {value!r}")
        if value <= 0:
            raise WorkbenchError(f"parameter {name} must be positive, got {value!r}")
