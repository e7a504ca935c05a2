"""The files a run's telemetry leaves in its folder, and reading the summary back, without
loading what the sampler samples with (psycopg, psutil, pyarrow): a run's summary reads it."""

from __future__ import annotations

import json
from pathlib import Path

PARQUET_FILE, SIDECAR_FILE = "telemetry.parquet", "telemetry.json"


def read_sidecar(out_dir: str | Path) -> dict | None:
    """``telemetry.json`` of a run folder, or None."""
    try:
        return json.loads((Path(out_dir) / SIDECAR_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
