"""Where the workbench keeps its files: the project root, runs/, baselines/ and the target state."""

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout the package lives in (editable install), else the working directory."""
    if env := os.environ.get("WORKBENCH_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd().resolve()


def state_dir() -> Path:
    """The embedded target's state: PostgreSQL data, TLS files, token, pids (git-ignored)."""
    return Path(os.environ.get("WORKBENCH_STATE_DIR") or project_root() / ".workbench")


def runs_dir() -> Path:
    """Executed notebooks, raw samples, results and reports (git-ignored)."""
    return Path(os.environ.get("WORKBENCH_RUNS_DIR") or project_root() / "runs")


def baselines_dir() -> Path:
    return project_root() / "baselines"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def seed_dir() -> Path:
    return project_root() / "seed"
