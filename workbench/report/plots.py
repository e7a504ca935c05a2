"""Figures for runs, comparisons and trends, in one style; every one titled with scenario,
target and date. No global state: the style is applied to each figure as it is made (never
through ``rcParams``, whose restoring would also undo the notebook backend's set-up), and
each function returns its figure.

* :func:`percentile_plot` latency by percentile on a log "nines" axis, one line per endpoint
  (HdrHistogram's plot);
* :func:`cdf_plot` the cumulative distribution per endpoint, log latency axis;
* :func:`latency_over_time` requests (at most 20,000: a systematic sample, said in the title)
  and per-window p50/p95/p99 of every request;
* :func:`throughput_and_errors` offered against achieved rate, errors by class per window;
* :func:`compare_percentiles` A against B by percentile, per endpoint;
* :func:`trend_plot` p95 and p99 across baselines in commit order;
* :func:`latency_and_telemetry` per-window p50/p95/p99 above the server's telemetry (CPU,
  database activity, sessions and waits, certctl's jobs), one shared time axis;
* :func:`hockey_stick` a capacity search's p50/p95/p99 per step against the offered load,
  the threshold lines and the knee; :func:`capacity_throughput` achieved against offered;
* :func:`ab_rounds` an A/B's per-round p50/p95/p99 of each side.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from workbench.analyse import analysis
from workbench.analyse.analysis import Requests, windows
from workbench.telemetry import JOB_STATUSES

NINES = (0.5, 0.9, 0.99, 0.999, 0.9999)
FIGSIZE = (8.0, 4.5)
TITLE_SIZE, LABEL_SIZE, TICK_SIZE, LEGEND_SIZE = 11, 10, 9, 9
COLORS = plt.get_cmap("tab10").colors
ERROR_COLORS = {"connect": "tab:purple", "timeout": "tab:orange", "reset": "tab:brown",
                "tls": "tab:pink", "http_4xx": "tab:olive", "http_5xx": "tab:red",
                "http_429": "gold", "other": "tab:gray", "dropped": "black"}
MAX_POINTS = 20_000  # scatter points drawn per figure; the rest are sampled away
CURVE_POINTS = 2_000  # positions drawn along a percentile curve


def _title(what: str, scenario: str, target: str, date: str) -> str:
    return f"{scenario}: {what}\n{target} · {date}"


def _figure(nrows: int = 1, figsize: tuple[float, float] = FIGSIZE, **kw):
    """A new figure in the workbench style: light grid, no top or right spine, small ticks."""
    fig, axes = plt.subplots(nrows, 1, figsize=figsize, **kw)
    for ax in np.atleast_1d(axes):
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=TICK_SIZE)
        ax.xaxis.label.set_size(LABEL_SIZE)
        ax.yaxis.label.set_size(LABEL_SIZE)
    return fig, axes


def _finish(fig: plt.Figure, ax: plt.Axes, heading: str, **legend) -> plt.Figure:
    # as written: a target's version with "$" must not turn into mathtext (or fail to parse)
    ax.set_title(heading, fontsize=TITLE_SIZE, parse_math=False)
    if legend.pop("show", True) and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=LEGEND_SIZE, title_fontsize=LEGEND_SIZE, **legend)
    fig.tight_layout()
    return fig


def _log_ms_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log scale with plain millisecond labels (1, 2, 5, 10 ...), not powers of ten."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_formatter(NullFormatter())


def _nines_axis(ax: plt.Axes, top: float) -> None:
    ticks = [q for q in NINES if q <= top + 1e-12] or [NINES[0]]
    ax.set_xticks([-np.log10(1 - q) for q in ticks])
    ax.set_xticklabels([f"{q * 100:g}%" for q in ticks])
    ax.set_xlabel("percentile")


def _color(names: Sequence[str], name: str):
    return COLORS[sorted(names).index(name) % len(COLORS)]


def _curve_ranks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of a percentile curve over n values: x = -log10(1 - q) up to 1 - 1/n, and the
    1-based rank of the latency drawn at each."""
    x = np.linspace(0, np.log10(n), min(n, CURVE_POINTS))
    q = 1 - 10.0 ** -x
    return x, np.clip(np.ceil(q * n).astype(np.int64), 1, n)


def _latency_at(src: Requests, ranks_of) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per endpoint with requests sent: ``ranks_of(n)`` (positions and 1-based ranks) and
    the response times at those ranks, selected exactly from the streamed requests."""
    counted = analysis.group_counts(src, analysis.sent_latency_by_tag, len(src.tags))
    counts = counted.counts
    wanted = {t: ranks_of(int(counts[t])) for t in np.flatnonzero(counts)}
    groups = np.concatenate([np.full(len(r), t) for t, (_, r) in wanted.items()] or [[]])
    ranks = np.concatenate([r for _, r in wanted.values()] or [[]])
    values = analysis.select_ranks(src, analysis.sent_latency_by_tag,
                                   groups.astype(np.int64), ranks.astype(np.int64),
                                   counted.bounds)
    out, at = {}, 0
    for t, (x, r) in wanted.items():
        out[src.tags[t]] = (x, values[at:at + len(r)])
        at += len(r)
    return out


def percentile_plot(df: pd.DataFrame | Requests, scenario: str, target: str,
                    date: str) -> plt.Figure:
    """Latency by percentile on a log 'nines' axis (HdrHistogram's plot), one line per endpoint;
    each point an exact percentile of every request."""
    fig, ax = _figure()
    src = analysis.as_requests(df)
    curves = _latency_at(src, _curve_ranks)
    names = list(curves)
    top = 0.0
    for tag, (x, y) in curves.items():
        if len(y) < 2:
            continue
        ax.plot(x, y, label=tag, color=_color(names, tag))
        top = max(top, 1 - 10.0 ** -x[-1])
    _nines_axis(ax, top)
    ax.set_ylabel("response time from intended start (ms)")
    _log_ms_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, _title("latency by percentile", scenario, target, date),
                   title="endpoint")


def _cdf_ranks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Share at or below, and 1-based rank, of up to CURVE_POINTS steps of a distribution."""
    idx = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).astype(int))
    return (idx + 1) / n, idx + 1


def cdf_plot(df: pd.DataFrame | Requests, scenario: str, target: str,
             date: str) -> plt.Figure:
    """Cumulative distribution of latency per endpoint (log latency axis)."""
    fig, ax = _figure()
    src = analysis.as_requests(df)
    curves = _latency_at(src, _cdf_ranks)
    names = list(curves)
    for tag, (share, latency) in curves.items():
        ax.step(latency, share, where="post", label=tag, color=_color(names, tag))
    for q in (0.5, 0.95, 0.99):
        ax.axhline(q, color="gray", lw=0.8, ls=":")
        ax.annotate(f"p{q * 100:g}", (0, q), xycoords=("axes fraction", "data"), fontsize=8,
                    color="gray", va="bottom")
    ax.set_ylim(0, 1.005)
    ax.set_xlabel("response time from intended start (ms)")
    ax.set_ylabel("share of requests at or below")
    if curves:
        _log_ms_axis(ax, "x")
    return _finish(fig, ax, _title("cumulative distribution", scenario, target, date),
                   title="endpoint", loc="lower right")


def _auto_seconds(src: Requests) -> float:
    span = src.span_s if len(src) else 1.0
    return max(1.0, round(span / 60))  # about 60 windows, at least one second each


def _sample(src: Requests) -> tuple[pd.DataFrame, int]:
    """Every k-th sent request in file order (``t_s``, ``latency_ms``, ``failed``), at most
    MAX_POINTS of them, and k: a bounded sample that spans the whole run."""
    sent = sum(int((~c["dropped"].to_numpy()).sum()) for c in src.chunks())
    every = max(1, -(-sent // MAX_POINTS))
    parts, seen = [], 0
    for chunk in src.chunks():
        rows = chunk[~chunk["dropped"].to_numpy()]
        keep = (seen + np.arange(len(rows))) % every == 0
        parts.append(rows.loc[keep, ["t_s", "latency_ms", "failed"]])
        seen += len(rows)
    columns = {"t_s": float, "latency_ms": float, "failed": bool}
    sample = pd.concat(parts) if parts else pd.DataFrame(columns=list(columns)).astype(columns)
    return sample, every


def latency_over_time(df: pd.DataFrame | Requests, scenario: str, target: str, date: str,
                      seconds: float | None = None) -> plt.Figure:
    """Requests by intended start (at most 20,000: every k-th sent request when there are more,
    k in the title) and per-window percentiles of every request.

    Failed requests are drawn in red: a fast failure can flatter a percentile.
    """
    src = analysis.as_requests(df)
    seconds = seconds or _auto_seconds(src)
    fig, ax = _figure()
    sent, every = _sample(src)
    failed = sent["failed"].to_numpy()
    ax.scatter(sent["t_s"][~failed], sent["latency_ms"][~failed], s=2, alpha=0.25,
               color="tab:gray", label="request", rasterized=True, linewidths=0)
    if failed.any():
        ax.scatter(sent["t_s"][failed], sent["latency_ms"][failed], s=4, alpha=0.6,
                   color="tab:red", label="failed request", rasterized=True, linewidths=0)
    w = windows(src, seconds)
    for col, color in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:green")):
        ax.plot(w.index + seconds / 2, w[col], label=f"{col} per {seconds:g} s", color=color,
                lw=1.6)
    ax.set_xlabel("seconds into the run (intended start)")
    ax.set_ylabel("response time (ms)")
    if len(sent):
        _log_ms_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    what = "latency over time" + (f" (dots: 1 request in {every:,})" if every > 1 else "")
    return _finish(fig, ax, _title(what, scenario, target, date),
                   loc="upper right", markerscale=4)


def throughput_and_errors(df: pd.DataFrame | Requests, scenario: str, target: str, date: str,
                          offered_rate: float | None = None,
                          seconds: float | None = None) -> plt.Figure:
    """Offered against achieved requests/s per window above; errors by class below."""
    src = analysis.as_requests(df)
    seconds = seconds or _auto_seconds(src)
    fig, (ax, ax2) = _figure(2, figsize=(8, 5.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2]})
    w = windows(src, seconds)
    x = w.index + seconds / 2
    ax.plot(x, w["rps"], label="sent (by intended start)", color="tab:blue", marker=".")
    finished: dict[float, int] = {}  # window start (by end) -> completed without error
    errors: dict[tuple[float, str], int] = {}  # (window start, error class) -> count
    for chunk in src.chunks():
        done = ~chunk["dropped"].to_numpy() & ~chunk["failed"].to_numpy()
        ends = np.floor((chunk["end_ns"].to_numpy()[done] - src.t0_ns) / 1e9 / seconds) * seconds
        for start, n in zip(*np.unique(ends, return_counts=True), strict=True):
            finished[float(start)] = finished.get(float(start), 0) + int(n)
        error = chunk["error"].astype(str).to_numpy()
        bad = error != ""
        win = np.floor(chunk["t_s"].to_numpy()[bad] / seconds) * seconds
        for (start, cls), n in pd.DataFrame({"w": win, "e": error[bad]}).value_counts().items():
            errors[(float(start), str(cls))] = errors.get((float(start), str(cls)), 0) + int(n)
    per_window = pd.Series(list(finished.values()), dtype=np.int64,
                           index=pd.Index(list(finished), dtype=float)).sort_index()
    ax.plot(per_window.index + seconds / 2, per_window.to_numpy() / seconds, color="tab:green",
            lw=1, label="completed without error (by end)")
    if offered_rate:
        ax.axhline(offered_rate, color="black", ls="--", lw=1, label="offered")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    by_class = (pd.Series(errors, dtype=np.int64).unstack(fill_value=0).sort_index()
                .sort_index(axis=1) if errors else pd.DataFrame())
    bottom = np.zeros(len(by_class))
    for cls in by_class.columns:
        ax2.bar(by_class.index + seconds / 2, by_class[cls], width=seconds * 0.8, bottom=bottom,
                label=cls, color=ERROR_COLORS.get(cls, "tab:gray"))
        bottom += by_class[cls].to_numpy()
    if len(by_class.columns):
        ax2.legend(title="error class", loc="upper right", ncol=3, fontsize=LEGEND_SIZE,
                   title_fontsize=LEGEND_SIZE)
    else:
        ax2.text(0.5, 0.5, "no errors, no drops", transform=ax2.transAxes, ha="center",
                 va="center", color="gray")
    ax2.set_ylabel("errors per window")
    ax2.set_xlabel("seconds into the run (intended start)")
    return _finish(fig, ax, _title(f"throughput and errors ({seconds:g} s windows)", scenario,
                                   target, date), loc="lower right")


def compare_percentiles(comparison, target: str | None = None,
                        date: str | None = None) -> plt.Figure:
    """A (dashed) against B (solid) by percentile, one colour per endpoint."""
    fig, ax = _figure()
    names = list(comparison.curves)
    top = 0.0
    for endpoint, sides in comparison.curves.items():
        for side, ls in (("A", "--"), ("B", "-")):
            values, counts = sides[side]
            keep = counts > 0
            values, counts = values[keep], counts[keep]
            total = counts.sum()
            if total < 2:
                continue
            below = np.cumsum(counts) - counts  # requests strictly below each bucket
            x = -np.log10(1 - (below + 0.5 * counts) / total)
            ax.step(x, values, where="post", ls=ls, color=_color(names, endpoint),
                    label=f"{endpoint} {side}")
            top = max(top, 1 - 1 / total)
    _nines_axis(ax, top)
    ax.set_ylabel("response time (ms)")
    if names:
        _log_ms_axis(ax)
    else:
        ax.text(0.5, 0.5, "nothing to compare", transform=ax.transAxes, ha="center",
                color="gray")
    ax.grid(True, which="both", alpha=0.3)
    title = _title(f"A vs B by percentile ({comparison.verdict})", comparison.scenario,
                   target or comparison.targets, date or comparison.dates)
    return _finish(fig, ax, title, ncol=2)


def trend_plot(trend: pd.DataFrame, scenario: str, target: str | None = None,
               date: str | None = None,
               heading: str = "p95 and p99 across baselines") -> plt.Figure:
    """p95 (solid) and p99 (dashed) with their intervals across baselines (or ``workbench
    history``'s runs), in commit order."""
    trend = trend[trend["scenario"] == scenario] if len(trend) else trend
    machines = ", ".join(sorted(trend["machine"].unique())) if len(trend) else "no baselines"
    target = target or f"baselines on {machines}"
    if date is None:
        date = (f"{trend['started_at'].min()[:10]} to {trend['started_at'].max()[:10]}"
                if len(trend) else "")
    fig, ax = _figure()
    names = sorted(trend["endpoint"].unique()) if len(trend) else []
    for endpoint in names:
        rows = trend[trend["endpoint"] == endpoint]
        for stat, ls, marker in (("p95", "-", "o"), ("p99", "--", "s")):
            y = rows[stat].astype(float).to_numpy()
            lo = rows[f"{stat}_lo"].astype(float).to_numpy()
            hi = rows[f"{stat}_hi"].astype(float).to_numpy()
            err = np.vstack([np.where(np.isnan(lo), 0, y - lo), np.where(np.isnan(hi), 0, hi - y)])
            ax.errorbar(rows["position"], y, yerr=err, ls=ls, marker=marker, capsize=3,
                        color=_color(names, endpoint), label=f"{endpoint} {stat}")
    if len(trend):
        ticks = trend.drop_duplicates("position").sort_values("position")
        ax.set_xticks(ticks["position"])
        ax.set_xticklabels([f"{c[:8]}\n{(d or s)[:10]}" for c, d, s in
                            zip(ticks["commit"], ticks["commit_date"], ticks["started_at"],
                                strict=True)], fontsize=8)
        _log_ms_axis(ax)
    else:
        ax.text(0.5, 0.5, f"no baselines of {scenario} yet", transform=ax.transAxes,
                ha="center", color="gray")
    ax.set_xlabel("measured commit (commit order)")
    ax.set_ylabel("response time (ms)")
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, _title(heading, scenario, target, date), ncol=2)


# Telemetry panels under the latency: (y label, unit divisor, [(source, metric, legend label)]).
# A line whose samples are all zero (or absent) is left out, and a panel with no line left is
# not drawn. Source ANY: every Prometheus target (--scrape) with that recognised metric, its name
# after the label; a scraped node_exporter's cores are drawn as the host's are.
ANY = "*"
BUILT_IN = ("postgres", "certctl", "host", "target_process", "sampler")
TELEMETRY_PANELS = (
    ("CPU (% of one core)", 1.0, [
        ("target_process", "cpu_percent", "target process"),
        ("postgres", "server_cpu_percent", "PostgreSQL (all processes)")]),
    ("memory (GiB)", 2.0**30, [
        ("target_process", "rss_bytes", "target process RSS"),
        ("host", "memory.used_bytes", "host used"),
        (ANY, "memory.used_bytes", "used")]),
    ("database rows and\ntransactions per s", 1.0, [
        ("postgres", "xact_commit_per_s", "commits"),
        ("postgres", "xact_rollback_per_s", "rollbacks"),
        ("postgres", "tup_inserted_per_s", "rows inserted"),
        ("postgres", "tup_updated_per_s", "rows updated"),
        ("postgres", "tup_deleted_per_s", "rows deleted"),
        ("postgres", "blks_read_per_s", "blocks read (not cached)"),
        (ANY, "pg.xact_commit_per_s", "commits"),
        (ANY, "pg.xact_rollback_per_s", "rollbacks"),
        (ANY, "pg.tup_inserted_per_s", "rows inserted"),
        (ANY, "pg.tup_updated_per_s", "rows updated"),
        (ANY, "pg.tup_deleted_per_s", "rows deleted"),
        (ANY, "pg.blks_read_per_s", "blocks read (not cached)")]),
    ("sessions", 1.0, [
        ("postgres", "connections.active", "active"),
        ("postgres", "connections.idle_in_transaction", "idle in transaction"),
        ("postgres", "waiting.Lock", "waiting: lock"),
        ("postgres", "waiting.LWLock", "waiting: LWLock"),
        ("postgres", "waiting.IO", "waiting: I/O"),
        ("postgres", "locks.ungranted", "ungranted locks"),
        (ANY, "pg.connections.active", "active"),
        (ANY, "pg.connections.idle_in_transaction", "idle in transaction"),
        (ANY, "pg.locks.held", "locks held")]),
    ("certctl jobs", 1.0, [("certctl", f"jobs.{s}", s) for s in JOB_STATUSES] + [
        (ANY, "certctl_job_pending", "pending"),
        (ANY, "certctl_job_completed_total_per_s", "completed per s"),
        (ANY, "certctl_job_failed_total_per_s", "failed per s")]),
)


def _cores(metrics) -> list[str]:
    """``cpu.<n>`` metrics in core order."""
    return sorted((m for m in metrics if m.startswith("cpu.") and m[4:].isdigit()),
                  key=lambda m: int(m[4:]))


def latency_and_telemetry(df: pd.DataFrame | Requests, telemetry: pd.DataFrame, scenario: str,
                          target: str, date: str, seconds: float | None = None) -> plt.Figure:
    """Per-window p50/p95/p99 on top, the server's telemetry below, on one time axis.

    ``df`` is the run's requests (:func:`workbench.analyse.analysis.open_requests`, or a frame from
    :func:`workbench.analyse.analysis.with_derived`), ``telemetry`` its
    :func:`workbench.telemetry.load_telemetry`. Both are placed in seconds from the first
    intended start, so a latency step and what the server did at that moment line up.
    Telemetry is drawn sample by sample (1 s) and reaches before and after the load; the host's
    per-core CPU (and a scraped node_exporter's) is drawn thin in grey behind the target's and
    PostgreSQL's.
    """
    df = analysis.as_requests(df)
    seconds = seconds or _auto_seconds(df)
    t0 = df.t0_ns if len(df) else int(telemetry["t_ns"].min())
    lookup = {key: g for key, g in telemetry.groupby(["source", "metric"], observed=True)}
    scraped = sorted({s for s, _ in lookup if s not in BUILT_IN})

    def points(source: str, metric: str, divisor: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray] | None:
        rows = lookup.get((source, metric))
        if rows is None or not np.any(rows["value"].to_numpy()):
            return None
        return (rows["t_ns"].to_numpy() - t0) / 1e9, rows["value"].to_numpy() / divisor

    panels = []
    for label, divisor, lines in TELEMETRY_PANELS:
        drawn = [(name if source != ANY else f"{name} ({each})", xy)
                 for source, metric, name in lines
                 for each in (scraped if source == ANY else [source])
                 if (xy := points(each, metric, divisor)) is not None]
        if label.startswith("CPU"):
            for source in ("host", *scraped):
                drawn += [(f"{source} {m}", xy) for m in _cores(m for s, m in lookup
                                                                if s == source)
                          if (xy := points(source, m)) is not None]
        if drawn:
            panels.append((label, drawn))
    fig, axes = _figure(1 + len(panels), figsize=(8, 2.8 + 1.7 * len(panels)), sharex=True,
                        gridspec_kw={"height_ratios": [2] + [1.3] * len(panels)})
    axes = np.atleast_1d(axes)
    ax = axes[0]
    w = windows(df, seconds)
    for col, color in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:green")):
        ax.plot(w.index + seconds / 2, w[col], label=f"{col} per {seconds:g} s", color=color,
                marker=".", lw=1.6)
    ax.set_ylabel("response time (ms)")
    if len(w) and np.nanmax(w["p99"].to_numpy()) > 0:
        _log_ms_axis(ax)
    ax.legend(fontsize=LEGEND_SIZE, loc="upper right")
    cores = {f"{source} {m}" for source in ("host", *scraped) for m in _cores(
        m for s, m in lookup if s == source)}
    for panel_ax, (label, drawn) in zip(axes[1:], panels, strict=True):
        for i, (name, (x, y)) in enumerate(drawn):
            style = ({"color": "tab:gray", "lw": 0.7, "alpha": 0.6} if name in cores
                     else {"color": COLORS[i % len(COLORS)], "lw": 1.2})
            panel_ax.plot(x, y, label=name, **style)
        panel_ax.set_ylabel(label)
        if label.startswith("database"):  # commits, rows and block reads differ by decades
            panel_ax.set_yscale("symlog", linthresh=1.0)
        panel_ax.set_ylim(bottom=0)
        panel_ax.legend(fontsize=7, loc="upper left", ncol=3, framealpha=0.6)
    if not panels:
        ax.text(0.5, 0.05, "no telemetry was sampled", transform=ax.transAxes, ha="center",
                color="gray")
    axes[-1].set_xlabel("seconds into the run (from the first intended start)")
    return _finish(fig, ax, _title("latency and server telemetry", scenario, target, date),
                   show=False)


def drain_curve(samples: pd.DataFrame, scenario: str, target: str, date: str) -> plt.Figure:
    """The fixture's job backlog after the timed phase, by status, until drained or timed out.

    ``samples`` is :attr:`workbench.telemetry.Drain.samples` (``elapsed_s``, ``backlog`` and
    ``jobs.<Status>`` columns).
    """
    fig, ax = _figure()
    x = samples["elapsed_s"].to_numpy()
    ax.plot(x, samples["backlog"].to_numpy(), label="backlog (Pending + Running)",
            color="black", lw=1.8, marker=".")
    for i, status in enumerate(("Pending", "Running", "Completed", "Failed")):
        column = f"jobs.{status}"
        if column in samples and np.any(samples[column].to_numpy()):
            ax.plot(x, samples[column].to_numpy(), label=status, color=COLORS[i % len(COLORS)],
                    lw=1.0)
    ax.set_xlabel("seconds after the timed phase")
    ax.set_ylabel("jobs of the fixture")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, _title("backlog drain", scenario, target, date))


def latency_vs_fixture_size(sweep: pd.DataFrame, scenario: str) -> plt.Figure:
    """p50/p95/p99 of every request against the fixture's rows, one point per sweep run.

    ``sweep`` is :func:`workbench.run.sweep.table` (``fixture_rows``, ``p50``, ``p95``, ``p99``).
    """
    fig, ax = _figure()
    done = sweep.dropna(subset=["p50"]).sort_values("fixture_rows")
    for col, color in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:green")):
        ax.plot(done["fixture_rows"].astype(float), done[col].astype(float), label=col,
                color=color, marker="o", lw=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("fixture rows (log scale)")
    ax.set_ylabel("response time (ms)")
    if len(done) and float(done["p99"].max()) > 0:
        _log_ms_axis(ax)
    return _finish(fig, ax, f"{scenario}: latency against fixture size")


# -- capacity search ------------------------------------------------------------------------

def _load_label(unit: str) -> str:
    return {"req/s": "offered load (requests/s)", "vus": "virtual users",
            "agents": "agents (fleet size)"}.get(unit, unit)


def _mark_knee(ax: plt.Axes, capacity: dict) -> None:
    """The bracket the search ended in, shaded, and the answer as a dashed line."""
    low, high = capacity["interval"]
    if low is not None and high is not None:
        ax.axvspan(low, high, color="tab:red", alpha=0.08, lw=0)
    if capacity["verdict"] == "knee" and low is not None:
        ax.axvline(low, color="tab:red", ls="--", lw=1.2,
                   label=f"capacity {low:,.0f} {capacity['unit']}")
    elif low is not None:
        ax.axvline(low, color="tab:gray", ls="--", lw=1.2,
                   label=f"{capacity['verdict']} above {low:,.0f} {capacity['unit']}")


def _steps_frame(capacity: dict) -> pd.DataFrame:
    frame = pd.DataFrame([{"load": s["load"], "achieved": s["achieved_rate"],
                          "served": s.get("throughput"), "p50": s["p50"],
                          "p95": s["p95"], "p99": s["p99"], "passed": s["passed"],
                          "driver_bound": s["driver_bound"]} for s in capacity["steps"]],
                         columns=["load", "achieved", "served", "p50", "p95", "p99", "passed",
                                  "driver_bound"])
    numbers = ["load", "achieved", "served", "p50", "p95", "p99"]
    frame[numbers] = frame[numbers].apply(pd.to_numeric).astype(float)  # None: not measured
    return frame.sort_values("load", kind="stable")


def _step_markers(ax: plt.Axes, frame: pd.DataFrame, column: str, color) -> None:
    """Passing steps as dots, failing ones as crosses, driver-bound ones hollow."""
    for mask, marker, face in ((frame["passed"], "o", color),
                               (~frame["passed"] & ~frame["driver_bound"], "x", color),
                               (frame["driver_bound"], "o", "none")):
        part = frame[mask & frame[column].notna()]
        if len(part):
            ax.scatter(part["load"], part[column], marker=marker, color=color,
                       facecolors=face, s=28, zorder=3)


def hockey_stick(capacity: dict, limits: Sequence[tuple[str, float]], scenario: str,
                 target: str, date: str) -> plt.Figure:
    """p50/p95/p99 of each step against its load (log-log), the latency threshold lines
    (``limits``: label and ms) and the knee: where latency leaves its floor."""
    frame = _steps_frame(capacity)
    fig, ax = _figure()
    judged = frame[~frame["driver_bound"]]  # a driver-bound step measured the driver
    for k, q in enumerate(("p50", "p95", "p99")):
        per_load = judged.groupby("load")[q].median().dropna()
        ax.plot(per_load.index, per_load.to_numpy(), color=COLORS[k], lw=1.5, label=q)
        _step_markers(ax, frame, q, COLORS[k])
    for (label, limit), style in zip(limits, [":", "-.", (0, (1, 3))] * len(limits),
                                     strict=False):
        ax.axhline(limit, color="black", ls=style, lw=1.2, label=label)
    _mark_knee(ax, capacity)
    _log_ms_axis(ax, "x")
    _log_ms_axis(ax)
    ax.set_xlabel(_load_label(capacity["unit"]))
    ax.set_ylabel("response time (ms)")
    return _finish(fig, ax, _title("latency against load (x: step failed, hollow: driver "
                                   "bound)", scenario, target, date), loc="upper left")


def capacity_throughput(capacity: dict, scenario: str, target: str, date: str) -> plt.Figure:
    """Each step's throughput against its load: requests sent (achieved) and responses
    served per second until the last one came back; an open loop's ideal is y = x. Past the
    knee the sends may keep up while the served rate flattens at what the target can do."""
    frame = _steps_frame(capacity)
    fig, ax = _figure()
    for k, (column, label) in enumerate((("achieved", "sent (achieved)"),
                                         ("served", "served (responses/s)"))):
        per_load = frame[~frame["driver_bound"]].groupby("load")[column].median().dropna()
        ax.plot(per_load.index, per_load.to_numpy(), color=COLORS[k], lw=1.5, label=label)
        _step_markers(ax, frame, column, COLORS[k])
    if capacity["unit"] == "req/s" and len(frame):
        span = np.array([frame["load"].min(), frame["load"].max()])
        ax.plot(span, span, color="gray", ls=":", lw=1, label="achieved = offered")
    _mark_knee(ax, capacity)
    _log_ms_axis(ax, "x")
    _log_ms_axis(ax)
    ax.set_xlabel(_load_label(capacity["unit"]))
    ax.set_ylabel("requests/s")
    return _finish(fig, ax, _title("throughput against load", scenario, target, date),
                   loc="upper left")


def ab_rounds(doc: dict) -> plt.Figure:
    """An A/B's per-round p50 (solid), p95 (dashed) and p99 (dotted) of A and B, one panel per
    endpoint: the pairs ``workbench ab`` judged, in the order they ran."""
    rounds = doc.get("rounds") or []
    endpoints = list(dict.fromkeys(row["endpoint"] for row in doc.get("rows") or []))
    fig, axes = _figure(nrows=max(1, len(endpoints)),
                        figsize=(FIGSIZE[0], 1.5 + 2.6 * max(1, len(endpoints))))
    axes = np.atleast_1d(axes)
    for ax, endpoint in zip(axes, endpoints, strict=False):
        drawn = False
        for side, color, marker, shift in (("A", COLORS[0], "o", -0.06),
                                           ("B", COLORS[1], "s", 0.06)):
            x = [r["round"] + shift for r in rounds]
            for stat, ls in (("p50", "-"), ("p95", "--"), ("p99", ":")):
                y = np.array([(r[side]["endpoints"].get(endpoint) or {}).get(stat) or np.nan
                              for r in rounds], dtype=float)
                drawn |= bool(np.isfinite(y).any() and (y[np.isfinite(y)] > 0).all())
                ax.plot(x, y, ls=ls, marker=marker, markersize=4, color=color,
                        label=f"{side} {stat}")
        if drawn:
            _log_ms_axis(ax)
        ax.set_ylabel(f"{endpoint} (ms)")
        ax.set_xticks([r["round"] for r in rounds])
    if not endpoints:
        axes[0].text(0.5, 0.5, "no round measured", transform=axes[0].transAxes,
                     ha="center", color="gray")
    axes[-1].set_xlabel("round (A first in odd rounds, B first in even: ABBA)")
    sides = doc.get("sides") or {}
    target = " · ".join(f"{name} {(s.get('version') or s.get('named') or '?')} "
                        f"{(s.get('commit') or '')[:8]}".strip() for name, s in sides.items())
    date = (doc.get("started_at") or "")[:16].replace("T", " ") + " UTC"
    heading = _title(f"per-round percentiles of A and B ({doc.get('verdict')})",
                     doc.get("label", ""), target, date)
    return _finish(fig, axes[0], heading, ncol=2)
