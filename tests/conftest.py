"""Shared fixtures: one embedded target (PostgreSQL + stand-in) per test session, and the
``slow`` mark that ``make test-fast`` leaves out.

Under pytest-xdist (``make test``) each worker is a session: it starts its own target on a
free port in its own temporary folder, so workers share nothing but the host.
"""

from __future__ import annotations

import fcntl
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.loopback import free_port
from workbench.target import embedded
from workbench.target.embedded import TargetInfo


@pytest.fixture(scope="session")
def embedded_target_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private state directory, so tests never touch the developer's own target."""
    return tmp_path_factory.mktemp("target")


@pytest.fixture(scope="session")
def embedded_target(embedded_target_state: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetInfo]:
    """A running stand-in on a free port over a fresh embedded PostgreSQL; stopped at the end."""
    # one xdist worker at a time through initdb and start-up (their temporary folders share a
    # parent): several at once on a loaded host made pgserver read a half-written postmaster.pid
    run_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_root = run_root.parent
    try:
        with open(run_root / "embedded-target-start.lock", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            info = embedded.up(embedded_target_state, port=free_port())
        yield info
    finally:  # also after a failed up(): PostgreSQL may already be running
        embedded.down(embedded_target_state)


@pytest.fixture(scope="session")
def target_token(embedded_target: TargetInfo, embedded_target_state: Path) -> str:
    return embedded.read_token(embedded_target_state)


@pytest.fixture()
def embedded_env(embedded_target: TargetInfo, embedded_target_state: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> TargetInfo:
    """Point the workbench (and its child processes) at the test target and a private runs/."""
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(embedded_target_state))
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CERTCTL_TOKEN", raising=False)
    monkeypatch.delenv("CERTCTL_DSN", raising=False)
    return embedded_target


# Shared by the stand-in contract tests: HTTPS verified with the target's own CA, the token,
# and the target's database.
@pytest.fixture(scope="module")
def client(embedded_target: TargetInfo) -> Iterator[httpx.Client]:
    verify = ssl.create_default_context(cafile=embedded_target.ca_file)
    with httpx.Client(base_url=embedded_target.url, verify=verify, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def auth(target_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {target_token}"}


@pytest.fixture(scope="module")
def engine(embedded_target: TargetInfo) -> Iterator[sa.Engine]:
    engine = sa.create_engine(embedded_target.dsn)
    yield engine
    engine.dispose()


# Tests needing more than the process they run in: a real target, driver or CLI processes,
# a notebook kernel, or seconds of real time. `make test-fast` runs the rest (`-m "not slow"`).
SLOW_MODULES = frozenset({
    "test_ab_certctl", "test_certctl",
    "test_acme_orders", "test_bad_input", "test_bulk_renewal", "test_capacity_drive",
    "test_capacity_run", "test_cli", "test_driver", "test_driver_adhoc", "test_driver_fleet",
    "test_faults", "test_k6import", "test_notebook", "test_pipeline", "test_priority",
    "test_real_certctl", "test_run_telemetry", "test_safety", "test_scenarios", "test_seed",
    "test_seed_cli", "test_shards", "test_standin", "test_standin_acme",
    "test_standin_acme_orders", "test_standin_certificates", "test_standin_http2",
    "test_standin_ratelimit", "test_sweep", "test_telemetry",
})
SLOW_FIXTURES = frozenset({"embedded_target", "embedded_env", "target_token", "client", "auth",
                           "engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
