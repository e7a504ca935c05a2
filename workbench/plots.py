"""Figures for a run: every one titled with scenario, target and date; no global state."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from workbench.analysis import windows

NINES = (0.5, 0.9, 0.99, 0.999, 0.9999)


def _log_ms_axis(ax: plt.Axes) -> None:
    """Log scale with plain millisecond labels (1, 2, 5, 10 ...), not powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _title(what: str, scenario: str, target: str, date: str) -> str:
    return f"{scenario}: {what}\n{target} · {date}"


def percentile_plot(df: pd.DataFrame, scenario: str, target: str, date: str) -> plt.Figure:
    """Latency by percentile on a log 'nines' axis (HdrHistogram's plot), one line per endpoint."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sent = df[~df["dropped"]]
    for tag, g in sent.groupby("tag", sort=True):
        lat = np.sort(g["latency_ms"].to_numpy())
        if lat.size < 2:
            continue
        q = (np.arange(lat.size) + 0.5) / lat.size  # plotting positions, never reaching 1
        ax.plot(-np.log10(1 - q), lat, label=str(tag))
    ax.set_xticks([-np.log10(1 - q) for q in NINES])
    ax.set_xticklabels([f"{q * 100:g}%" for q in NINES])
    ax.set_xlabel("percentile")
    ax.set_ylabel("response time from intended start (ms)")
    _log_ms_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="endpoint")
    ax.set_title(_title("latency by percentile", scenario, target, date))
    fig.tight_layout()
    return fig


def latency_over_time(df: pd.DataFrame, scenario: str, target: str, date: str,
                      seconds: float = 1.0) -> plt.Figure:
    """Per-window p50/p95/p99 latency above, achieved rate and errors below."""
    w = windows(df, seconds)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    for col in ("p50", "p95", "p99"):
        ax.plot(w.index, w[col], label=col)
    ax.set_ylabel("latency (ms)")
    _log_ms_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(_title(f"latency over time ({seconds:g} s windows)", scenario, target, date))
    ax2.plot(w.index, w["rps"], label="requests/s", color="tab:blue")
    ax2.set_ylabel("requests/s")
    ax2.set_xlabel("seconds into the run (intended start)")
    errs = ax2.twinx()
    errs.bar(w.index, w["errors"], width=seconds * 0.8, color="tab:red", alpha=0.5,
             label="errors")
    errs.set_ylabel("errors")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
