"""Telemetry as DataFrames: load a run's samples, cut them into the latency analysis's windows.

Pure functions apart from :func:`load_telemetry`. Windows use the edges of
:func:`workbench.analyse.analysis.windows`: seconds from the run's first intended start ``t0_ns``
(the ``intended_ns`` minimum of its requests), window ``k`` covering ``[k * seconds, (k + 1) *
seconds)`` and labelled ``k * seconds``, so a telemetry window and a latency window with the
same label cover the same instants.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.telemetry.files import PARQUET_FILE
from workbench.telemetry.prometheus import recorded
from workbench.telemetry.sampler import SPOOL_FILE, read_spool

COLUMNS = ("t_ns", "source", "metric", "value")
WINDOW_COLUMNS = ("samples", "mean", "min", "max")


def load_telemetry(path: str | Path) -> pd.DataFrame:
    """``telemetry.parquet`` (a file, or a run folder holding it) as a frame.

    Columns ``t_ns`` (int64, UTC epoch ns), ``source`` and ``metric`` (categorical), ``value``
    (float64), in time order. A run folder whose sampler was killed before it wrote Parquet
    still has its spool, which is read instead.
    """
    path = Path(path)
    if path.is_dir():
        if (path / PARQUET_FILE).exists():
            path = path / PARQUET_FILE
        elif (path / SPOOL_FILE).exists():
            return _tidy(read_spool(path / SPOOL_FILE))
        else:
            raise WorkbenchError(f"no {PARQUET_FILE} in {path}; this run sampled no telemetry")
    if not path.exists():
        raise WorkbenchError(f"no telemetry file at {path}")
    return _tidy(pd.read_parquet(path))


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[list(COLUMNS)].copy()
    frame["t_ns"] = frame["t_ns"].astype("int64")
    for column in ("source", "metric"):
        frame[column] = frame[column].astype(str).astype("category")
    frame["value"] = frame["value"].astype("float64")
    return frame.sort_values("t_ns", kind="stable").reset_index(drop=True)


def telemetry_windows(telemetry: pd.DataFrame, t0_ns: int, seconds: float,
                      n_windows: int | None = None) -> pd.DataFrame:
    """Per-window summaries of every metric: index ``(source, metric, t_s)``, columns
    ``samples``, ``mean``, ``min``, ``max``.

    Only windows ``0 .. n_windows - 1`` are kept (all from 0 on when None): samples taken
    before the load started, or after its last window, have no latency to line up with.
    """
    k = np.floor((telemetry["t_ns"].to_numpy() - t0_ns) / 1e9 / seconds).astype(np.int64)
    keep = k >= 0
    if n_windows is not None:
        keep &= k < n_windows
    rows = telemetry[keep]
    if rows.empty:
        index = pd.MultiIndex.from_arrays([[], [], []], names=["source", "metric", "t_s"])
        return pd.DataFrame(columns=list(WINDOW_COLUMNS), index=index)
    grouped = pd.DataFrame({"source": rows["source"].astype(str).to_numpy(),
                            "metric": rows["metric"].astype(str).to_numpy(),
                            "t_s": k[keep] * seconds,  # the label analysis.windows gives
                            "value": rows["value"].to_numpy()}
                           ).groupby(["source", "metric", "t_s"], sort=True)["value"]
    out = grouped.agg(["count", "mean", "min", "max"]).rename(columns={"count": "samples"})
    out["samples"] = out["samples"].astype(np.int64)
    return out


def record_summary(windows: pd.DataFrame, seconds: float, scraped: Iterable[str] = ()) -> dict:
    """:func:`telemetry_windows` as JSON-ready lists for the baseline record::

        {"window_s": 10.0, "sources": {"postgres": {"xact_commit_per_s":
            {"t_s": [0.0, 10.0], "mean": [...], "max": [...], "samples": [...]}}}}

    NaN (a window without samples cannot have one, but a value can be NaN) becomes null. Of a
    ``scraped`` source (a Prometheus target) only what :func:`~workbench.telemetry.prometheus.
    recorded` names is kept: an exporter's hundreds of series stay in the Parquet file.
    """
    scraped = set(scraped)
    sources: dict[str, dict] = {}
    for (source, metric), rows in windows.groupby(level=["source", "metric"], sort=True):
        if source in scraped and not recorded(str(metric)):
            continue
        t_s = rows.index.get_level_values("t_s")
        sources.setdefault(str(source), {})[str(metric)] = {
            "t_s": [float(t) for t in t_s],
            "mean": [_num(v) for v in rows["mean"]],
            "max": [_num(v) for v in rows["max"]],
            "samples": [int(v) for v in rows["samples"]],
        }
    return {"window_s": float(seconds), "sources": sources}


def _num(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
