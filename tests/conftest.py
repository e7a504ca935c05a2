"""Shared fixtures: one embedded target (PostgreSQL + stand-in) per test session."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.loopback import free_port
from workbench import target
from workbench.target import TargetInfo


@pytest.fixture(scope="session")
def embedded_target_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private state directory, so tests never touch the developer's own target."""
    return tmp_path_factory.mktemp("target")


@pytest.fixture(scope="session")
def embedded_target(embedded_target_state: Path) -> Iterator[TargetInfo]:
    """A running stand-in on a free port over a fresh embedded PostgreSQL; stopped at the end."""
    try:
        yield target.up(embedded_target_state, port=free_port())
    finally:  # also after a failed up(): PostgreSQL may already be running
        target.down(embedded_target_state)


@pytest.fixture(scope="session")
def target_token(embedded_target: TargetInfo, embedded_target_state: Path) -> str:
    return target.read_token(embedded_target_state)


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
