"""CI-native and HdrHistogram-native exports of a run: JUnit XML, a GitHub step summary, .hgrm
and .hlog.

* ``junit.xml``: one ``<testcase>`` per threshold (classname the scenario), a ``<failure>`` with
  the measured value for each breach: what Jenkins, GitLab and GitHub test reporters read.
* ``$GITHUB_STEP_SUMMARY``: a Markdown table appended when that variable is set (GitHub
  Actions); built only from record fields that hold no secret (no URL, DSN or token). What
  the target says (its version and commit) is shown as code, so it cannot add a link, an image
  or markup.
* ``latency.hgrm`` (and ``latency.<endpoint>.hgrm`` when a run has several endpoints):
  HdrHistogram's percentile distribution, as Java's ``outputPercentileDistribution``,
  HistogramLogProcessor and wrk2 print it (columns Value, Percentile, TotalCount,
  1/(1-Percentile); the Mean/StdDeviation, Max/Total count, Buckets/SubBuckets footer),
  values in milliseconds. The HdrHistogram plotter and vegeta's ``hdrplot`` read the same
  columns.
* ``latency.hlog``: an HdrHistogram interval log, format 1.3, one line per analysis window
  (all endpoints), plus ``Tag=<endpoint>`` lines when a run has several. Histogram values are
  microseconds (the workbench's one HDR configuration): pass ``-outputValueUnitRatio 1000``
  to HistogramLogProcessor for milliseconds; ``Interval_Max`` is already in milliseconds.

All of it is built from the run's record (and, for the log's start time, its requests), so
committed baselines export the same way. :func:`write_all` writes every file of a run.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from workbench import jsonio
from workbench.analyse import hdr, stats
from workbench.analyse.analysis import Requests, as_requests
from workbench.untrusted import printable

JUNIT_FILE = "junit.xml"
HGRM_FILE = "latency.hgrm"
HLOG_FILE = "latency.hlog"
HLOG_VERSION = "1.3"
MS = 1000.0  # histograms hold microseconds; exports show milliseconds
TICKS_PER_HALF_DISTANCE = 5  # HdrHistogram's default percentile resolution
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


# --- JUnit XML ------------------------------------------------------------------------------


def _threshold_rows(verdicts: pd.DataFrame | Iterable[Mapping] | None) -> list[dict]:
    if verdicts is None:
        return []
    if isinstance(verdicts, pd.DataFrame):
        return verdicts.to_dict("records")
    return [dict(v) for v in verdicts]


def _measured(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nothing (no samples)"
    return f"{value:.6g}"


def junit_xml(record: Mapping, verdicts: pd.DataFrame | Iterable[Mapping] | None = None) -> str:
    """The JUnit XML document of a run: one testcase per threshold, failures with the value.

    ``verdicts`` defaults to the record's own ``thresholds``. Property values pass through
    :func:`~workbench.untrusted.printable`: a control character in what the target says would
    make the file unreadable (XML 1.0 has no way to write most of them).
    """
    rows = _threshold_rows(record["thresholds"] if verdicts is None else verdicts)
    scenario = record["scenario"]
    failures = sum(not r["ok"] for r in rows)
    seconds = f"{float(record['load'].get('duration_s') or 0):.3f}"
    root = ET.Element("testsuites", name="certctl-workbench", tests=str(len(rows)),
                      failures=str(failures), errors="0", time=seconds)
    started = datetime.fromisoformat(record["run"]["started_at"]).astimezone(UTC)
    suite = ET.SubElement(root, "testsuite", name=scenario, tests=str(len(rows)),
                          failures=str(failures), errors="0", skipped="0", time=seconds,
                          timestamp=started.strftime("%Y-%m-%dT%H:%M:%S"))
    properties = ET.SubElement(suite, "properties")
    for name, value in (("run_id", record["run_id"]), ("profile", record.get("profile")),
                        ("target", record["target"].get("kind")),
                        ("target_version", record["target"].get("version")),
                        ("target_commit", record["target"].get("commit")),
                        ("machine", record["machine"].get("name")),
                        ("valid", record["validity"].get("valid")),
                        ("latency_basis", record.get("latency_basis"))):
        ET.SubElement(properties, "property", name=name,
                      value="" if value is None else printable(value, None))
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=scenario,
                             name=f"{r['metric']} {r['threshold']}", time="0")
        if not r["ok"]:
            message = f"measured {_measured(r['value'])}, threshold {r['threshold']}"
            failure = ET.SubElement(case, "failure", message=message, type="threshold")
            failure.text = f"{r['metric']}: {message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def write_junit(run_dir: str | Path, record: Mapping,
                verdicts: pd.DataFrame | Iterable[Mapping] | None = None) -> Path:
    """Write ``junit.xml`` into ``run_dir`` (see :func:`junit_xml`)."""
    path = Path(run_dir) / JUNIT_FILE
    jsonio.write_text(path, junit_xml(record, verdicts))
    return path


# --- GitHub step summary ----------------------------------------------------------------------


def _cell(text, code: bool = False) -> str:
    """Text for a Markdown table cell; ``code`` for a code span, which shows anything (a link,
    an image, HTML) literally: its fence is longer than any run of backticks inside."""
    text = printable(text, None).replace("|", "\\|")
    if not code:
        return text.replace("<", "&lt;")
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _ms(value) -> str:
    return "" if value is None else f"{value:.2f}"


def step_summary_markdown(record: Mapping,
                          verdicts: pd.DataFrame | Iterable[Mapping] | None = None) -> str:
    """A Markdown report of a run: verdict, thresholds, per-endpoint latency. No secrets: only
    the scenario, ids, versions, numbers and verdicts are read from the record."""
    rows = _threshold_rows(record["thresholds"] if verdicts is None else verdicts)
    passed = all(r["ok"] for r in rows)
    validity = record["validity"]
    target = record["target"]
    lines = [
        f"### certctl workbench: {_cell(record['scenario'])} ({_cell(record.get('profile'))})",
        "",
        f"**{'passed' if passed else 'FAILED'}** · run {_cell(record['run_id'], True)} · "
        f"{_cell(target.get('kind'))} {_cell(target.get('version') or 'version unknown', True)} "
        f"{_cell((target.get('commit') or 'unknown')[:12], True)} · machine "
        f"{_cell(record['machine'].get('name'), True)} · "
        + ("valid" if validity.get("valid") else
           "**invalid**: " + _cell("; ".join(validity.get("reasons") or []))),
        "",
    ]
    if target.get("kind") == "stand-in":
        lines += ["Measured against the workbench's stand-in, not certctl.", ""]
    if rows:
        lines += ["| threshold | measured | result |", "|---|---|---|"]
        lines += [f"| {_cell(r['metric'] + ' ' + r['threshold'], True)} | {_measured(r['value'])} "
                  f"| {'pass' if r['ok'] else '**FAIL**'} |" for r in rows]
        lines.append("")
    lines += ["| endpoint | requests | p50 ms | p95 ms | p99 ms | max ms | error rate |",
              "|---|---|---|---|---|---|---|"]
    for name, e in sorted(record["endpoints"].items()):
        rate = e.get("error_rate")
        requests = "" if e.get("requests") is None else int(e["requests"])
        lines.append(f"| {_cell(name)} | {requests} | {_ms(e.get('p50'))} | "
                     f"{_ms(e.get('p95'))} | {_ms(e.get('p99'))} | {_ms(e.get('max'))} | "
                     f"{'' if rate is None else f'{rate:.4f}'} |")
    return "\n".join(lines) + "\n\n"


def github_step_summary(record: Mapping,
                        verdicts: pd.DataFrame | Iterable[Mapping] | None = None,
                        environ: Mapping[str, str] | None = None) -> Path | None:
    """Append :func:`step_summary_markdown` to ``$GITHUB_STEP_SUMMARY``; None when unset."""
    target = (os.environ if environ is None else environ).get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(step_summary_markdown(record, verdicts))
    return path


# --- .hgrm: the percentile distribution ----------------------------------------------------------


def _buckets(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-empty buckets: counts, highest and median equivalent values (µs)."""
    index, counts = stats.bucket_counts(hist)
    highest = stats.bucket_values_us(hist, index)
    lowest = np.array([hist.get_value_from_index(int(i)) for i in index], dtype=np.int64)
    return counts, highest, lowest + ((highest - lowest + 1) >> 1)


def percentile_distribution(hist: HdrHistogram,
                            ticks: int = TICKS_PER_HALF_DISTANCE) -> list[tuple[int, float, int]]:
    """``(value µs, percentile level %, total count)`` rows, as HdrHistogram's iterator steps.

    Levels start at 0 and advance by ``100 / (ticks * 2^(k+1))`` where ``k`` counts the halvings
    of the distance to 100 % so far; each level reports the first bucket whose cumulative share
    reaches it (a bucket may report several levels). The last bucket reports once, then 100 %.
    """
    counts, highest, _ = _buckets(hist)
    total = int(counts.sum())
    rows: list[tuple[int, float, int]] = []
    if total == 0:
        return rows
    level, cumulative = 0.0, 0
    for count, value in zip(counts.tolist(), highest.tolist(), strict=True):
        cumulative += count
        while 100.0 * cumulative / total >= level:
            rows.append((value, level, cumulative))
            halvings = int(math.log(100.0 / (100.0 - level)) / math.log(2))
            level += 100.0 / (ticks * 2 ** (halvings + 1))
            if cumulative == total:
                break
    rows.append((int(highest[-1]), 100.0, total))
    return rows


def _fixed(x: float, digits: int, width: int) -> str:
    """``%width.digitsf`` as Java's Formatter prints it: the shortest decimal of the double,
    rounded half up (C's printf rounds the binary value: 0.9997802734375 ends 437, not 438)."""
    text = f"{Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP):f}"
    return text.rjust(width)


def hgrm_text(hist: HdrHistogram, ticks: int = TICKS_PER_HALF_DISTANCE) -> str:
    """The ``.hgrm`` text of a histogram of microseconds, values in milliseconds, formatted as
    Java's ``outputPercentileDistribution`` formats it."""
    digits = hist.significant_figures
    out = [f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}\n\n"]
    for value, level, count in percentile_distribution(hist, ticks):
        line = f"{_fixed(value / MS, digits, 12)} {_fixed(level / 100, 12, 2)} {count:10d}"
        out.append(line + (f" {_fixed(1 / (1 - level / 100), 2, 14)}\n" if level != 100.0
                           else "\n"))
    counts, highest, median = _buckets(hist)
    total = int(counts.sum())
    mean = float((median * counts).sum() / total) if total else 0.0
    sd = math.sqrt(float((((median - mean) ** 2) * counts).sum() / total)) if total else 0.0
    maximum = float(highest[-1]) if total else 0.0
    out.append(f"#[Mean    = {_fixed(mean / MS, digits, 12)}, StdDeviation   = "
               f"{_fixed(sd / MS, digits, 12)}]\n")
    out.append(f"#[Max     = {_fixed(maximum / MS, digits, 12)}, Total count    = {total:12d}]\n")
    out.append(f"#[Buckets = {hist.bucket_count:12d}, SubBuckets     = "
               f"{hist.sub_bucket_count:12d}]\n")
    return "".join(out)


def write_hgrm(path: str | Path, hist: HdrHistogram) -> Path:
    """Write the ``.hgrm`` percentile distribution of ``hist`` (µs) to ``path``."""
    path = Path(path)
    jsonio.write_text(path, hgrm_text(hist))
    return path


def endpoint_histograms(record: Mapping) -> dict[str, HdrHistogram]:
    """``all`` endpoints' histogram over every status class, and each endpoint's when several."""
    by_endpoint = {k: v for k, v in record["histograms"]["by_endpoint"].items() if k != "all"}
    out = {"all": hdr.merge(b for classes in by_endpoint.values() for b in classes.values())}
    if len(by_endpoint) > 1:
        out |= {name: hdr.merge(classes.values()) for name, classes in sorted(by_endpoint.items())}
    return out


def _file_name(stem: str, endpoint: str, suffix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", endpoint)
    return f"{stem}{suffix}" if endpoint == "all" else f"{stem}.{safe}{suffix}"


# --- .hlog: the interval log ---------------------------------------------------------------------


def hlog_text(record: Mapping, start_epoch_s: float) -> str:
    """An interval log (format 1.3) of the record's windows, relative to ``start_epoch_s``.

    ``start_epoch_s`` is the instant the windows count from: the run's first intended start.
    Untagged lines hold every endpoint of a window; ``Tag=<endpoint>`` lines each endpoint's
    own, when there are several.
    """
    windows = record.get("windows") or {}
    seconds = float(windows.get("seconds") or 0)
    duration = record["load"].get("duration_s")
    by_endpoint = windows.get("by_endpoint") or {}
    by_start: dict[float, dict[str, str]] = {}
    for name, entries in by_endpoint.items():
        for w in entries:
            by_start.setdefault(float(w["t_s"]), {})[name] = w["histogram"]
    stamp = datetime.fromtimestamp(start_epoch_s, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    lines = [f"#[Logged with certctl-workbench: run {record['run_id']}, scenario "
             f"{record['scenario']}; values in microseconds]",
             f"#[Histogram log format version {HLOG_VERSION}]",
             f"#[StartTime: {start_epoch_s:.3f} (seconds since epoch), {stamp}]",
             f"#[BaseTime: {start_epoch_s:.3f} (seconds since epoch)]",
             '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"']
    for start in sorted(by_start):
        length = seconds if not duration else max(min(seconds, float(duration) - start), 0.0)
        parts = by_start[start]
        entries = [(None, hdr.merge(parts.values()))]
        if len(by_endpoint) > 1:
            entries += [(name, hdr.merge([parts[name]])) for name in sorted(parts)]
        for tag, hist in entries:
            prefix = "" if tag is None else "Tag=" + re.sub(r"[,\s]", "_", tag) + ","
            lines.append(f"{prefix}{start:.3f},{length:.3f},{hist.get_max_value() / MS:.3f},"
                         f"{hdr.encode(hist)}")
    return "\n".join(lines) + "\n"


def write_hlog(path: str | Path, record: Mapping, start_epoch_s: float) -> Path:
    """Write the record's windows as an HdrHistogram interval log (see :func:`hlog_text`)."""
    path = Path(path)
    jsonio.write_text(path, hlog_text(record, start_epoch_s))
    return path


def start_epoch_s(record: Mapping, requests: pd.DataFrame | Requests | None = None) -> float:
    """Where the record's windows start: the first intended start, else the run's start."""
    if requests is not None and len(requests):
        return as_requests(requests).t0_ns / 1e9
    return datetime.fromisoformat(record["run"]["started_at"]).timestamp()


# --- everything for one run ----------------------------------------------------------------------


def write_all(run_dir: str | Path, record: Mapping,
              requests: pd.DataFrame | Requests | None = None,
              verdicts: pd.DataFrame | Iterable[Mapping] | None = None,
              environ: Mapping[str, str] | None = None) -> list[Path]:
    """Write every export of a run into ``run_dir``; append the step summary when in CI.

    Returns the paths written (the step summary's last, when it was appended).
    """
    run_dir = Path(run_dir)
    written = [write_junit(run_dir, record, verdicts)]
    for name, hist in endpoint_histograms(record).items():
        written.append(write_hgrm(run_dir / _file_name("latency", name, ".hgrm"), hist))
    if (record.get("windows") or {}).get("by_endpoint"):
        written.append(write_hlog(run_dir / HLOG_FILE, record, start_epoch_s(record, requests)))
    summary = github_step_summary(record, verdicts, environ)
    return written + ([summary] if summary else [])
