"""``workbench run all``: preflight and seed once, run every scenario in turn (in name order),
write one combined report.

The combined report (``runs/<stamp>_all_<id>/``) has one row per scenario and endpoint:
requests, failures, achieved rate, percentiles, the scenario's threshold verdict and validity,
bulk-renew's response totals and the two 429 counters. ``summary.csv`` and ``summary.json``
hold the table; ``report.html`` opens on the combined verdict, then shows the table with a link
to each scenario's own report.
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from workbench import driver, exitcodes, jsonio, scenarios
from workbench.analyse import analysis
from workbench.errors import WorkbenchError
from workbench.paths import runs_dir
from workbench.report import view
from workbench.run import launcher
from workbench.run.kernel import Kernel, for_terminal
from workbench.run.scenario import new_run_id
from workbench.target import preflight

SUMMARY_SCHEMA_VERSION = 1
COLUMNS = ("scenario", "endpoint", "requests", "failed", "dropped", "error_rate", "achieved_rps",
           "p50", "p95", "p99", "max", "passed", "valid", "exit_code", "notes", "run_dir")


def run_all(profile: str, target_url: str | None = None, ca_file: str | None = None,
            insecure: bool = False, overrides: Mapping | None = None, strict: bool = False,
            names: Sequence[str] | None = None,
            notebook_kernel: Kernel | None = None) -> tuple[Path, int]:
    """Every scenario that loads certctl (or ``names``) at ``profile``; returns the report
    folder and the worst of their exit codes (:mod:`workbench.exitcodes`). Bad input is refused
    before any load; the target is preflighted once for all of them, every fixture seeded
    once. A scenario with targets of its own (connector_handshake) is left out, with a line.
    Every notebook runs in one kernel (``notebook_kernel``, or one started here)."""
    if notebook_kernel is None:
        with for_terminal() as own:
            return run_all(profile, target_url, ca_file, insecure, overrides, strict, names, own)
    planned = scenarios.plan_all(overrides or {}, names or scenarios.certctl_names())
    params = {name: scenarios.get(name).params_for(profile, own)
              for name, own in planned.items()}
    traps, acme_profiles, probes = {}, {}, []
    for name, own in params.items():
        checks = scenarios.get(name).preflight_args(own)
        traps |= dict.fromkeys(checks["traps"])
        acme_profiles |= dict.fromkeys(checks["acme_profiles"])
        probes += checks["probes"]
    target = preflight.resolve_target(target_url, ca_file, insecure)
    identity = preflight.preflight(target, preflight.token_for(target), strict=strict,
                                   acme_profiles=tuple(acme_profiles), traps=tuple(traps),
                                   probes=probes)
    for warning in identity["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if any(scenarios.get(name).needs_database for name in params):
        preflight.check_database(target, parents="fixture_parents" in traps)
    for name, own in params.items():  # seed once; each notebook then resets what runs changed
        seeded = scenarios.get(name).seed(target.dsn, own)
        print(f"[workbench] seeded {name}: {seeded}", file=sys.stderr)

    for other in sorted(set(scenarios.names()) - set(scenarios.certctl_names()) - set(params)):
        print(f"[workbench] run all leaves out {other}: it loads its own targets, not "
              f"certctl; run it by name (workbench run {other})", file=sys.stderr)
    suite_dir = runs_dir() / new_run_id("all")
    suite_dir.mkdir(parents=True)
    outcomes, exited, order = [], None, list(params)
    for name in order:
        exited = preflight.exit_report(target)  # a started server that died: stop here
        if exited:
            print(f"error: {exited}; not run: {', '.join(order[order.index(name):])}",
                  file=sys.stderr)
            break
        run_dir, code = launcher.execute(name, profile, target_url, ca_file, insecure,
                                         planned[name], seed_fixtures=False, identity=identity,
                                         kernel=notebook_kernel)
        outcomes.append((name, run_dir, code))
    summary = combined_summary(outcomes)
    write_report(suite_dir, summary, identity, profile)
    return suite_dir, exitcodes.worst([exitcodes.FAILED if exited else exitcodes.PASSED,
                                       *(code for _, _, code in outcomes)])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _read_result(run_dir: Path) -> dict:
    """The run's driver result, or {} when the run wrote none (or an unreadable one)."""
    try:
        return driver.load_result(run_dir)
    except WorkbenchError:
        return {}


def _notes(name: str, result: Mapping, tag: str) -> str:
    """One endpoint's notes as short text: the scenario's own and the two 429 counters (the
    REST limiter can refuse any scenario's requests)."""
    notes = dict.fromkeys((*scenarios.get(name).notes, scenarios.RATE_LIMITED))
    return "; ".join(line for note in notes if (line := note.line(result, tag)))


def combined_summary(outcomes: list[tuple[str, Path, int]]) -> pd.DataFrame:
    """One row per scenario and endpoint, from each run's requests, result and record."""
    rows = []
    for name, run_dir, code in outcomes:
        result = _read_result(run_dir)
        record = _read_json(run_dir / "record.json")
        common = {"scenario": name, "passed": record.get("passed", False) and code == 0,
                  # the record's verdict (the analysis's) over the driver's own
                  "valid": (record.get("validity") or {}).get("valid", result.get("valid", False)),
                  "exit_code": code,
                  "run_dir": str(run_dir)}
        if not (run_dir / "requests.parquet").exists():
            rows.append(common | {"endpoint": "-", "notes": "no requests recorded"})
            continue
        frame = analysis.summarize(analysis.load_requests(run_dir),
                                   float(result.get("duration_s") or 0.0))
        for endpoint, stats in frame.iterrows():
            rows.append(common | {"endpoint": str(endpoint),
                                  "notes": _notes(name, result, str(endpoint)),
                                  **{k: stats.get(k) for k in COLUMNS if k in stats}})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_report(suite_dir: Path, summary: pd.DataFrame, identity: dict, profile: str) -> None:
    """``summary.csv``, ``summary.json`` and ``report.html`` (no secret: no token, DSN redacted).

    The report opens on the verdict (passed or failed, which scenarios breached or were
    invalid, the target), then one row per scenario and endpoint, then links to each
    scenario's own report.
    """
    jsonio.write_text(suite_dir / "summary.csv", summary.to_csv(index=False))
    payload = {"schema_version": SUMMARY_SCHEMA_VERSION, "profile": profile,
               "target": {k: identity.get(k) for k in ("url", "kind", "version", "commit")},
               "warnings": identity.get("warnings", []),
               "passed": bool(len(summary)) and bool(summary["passed"].all()),
               "rows": json.loads(summary.to_json(orient="records"))}
    jsonio.write_json(suite_dir / "summary.json", payload)
    sections = [view.Section("", verdict_html(summary, payload)),
                view.Section("Scenarios and endpoints", rows_html(summary))]
    if payload["warnings"]:
        warnings = "".join(f"<li>{html.escape(w)}</li>" for w in payload["warnings"])
        sections.append(view.Section("Preflight warnings", f"<ul>{warnings}</ul>"))
    links = "".join(
        f'<li><a href="{_link(d)}">{html.escape(s)}</a></li>'
        for s, d in summary.drop_duplicates("scenario")[["scenario", "run_dir"]].itertuples(
            index=False))
    sections.append(view.Section("Scenario reports", f"<ul>{links}</ul>"))
    jsonio.write_text(suite_dir / "report.html",
                      view.page(f"workbench run all, profile {profile}", sections))


def _link(run_dir: str) -> str:
    return f"../{html.escape(Path(run_dir).name)}/report.html"


def verdict_html(summary: pd.DataFrame, payload: Mapping) -> str:
    """The combined verdict: passed or failed, which scenarios breached or were invalid, and
    the target they ran against."""
    per_scenario = summary.groupby("scenario", sort=False).agg(
        passed=("passed", "all"), valid=("valid", "all"), exit_code=("exit_code", "max"))
    breached = [s for s, r in per_scenario.iterrows() if not r["passed"]]
    invalid = [s for s, r in per_scenario.iterrows() if not r["valid"]]
    n = len(per_scenario)
    if payload["passed"]:
        head = view.coloured(f"PASSED ({n} scenarios)", view.PASS, bold=True)
    else:
        head = view.coloured(f"FAILED ({len(breached)} of {n} scenarios): "
                               + ", ".join(breached), view.FAIL, bold=True)
    validity = (view.coloured("all valid", view.PASS) if not invalid else
                view.coloured("INVALID: " + ", ".join(invalid), view.FAIL))
    target = payload["target"]
    colour = view.PASS if payload["passed"] and not invalid else view.FAIL
    return (f'<div class="workbench-verdict" style="border-left:6px solid {colour};'
            f'padding:0.4em 1em;margin:0.5em 0 1em 0"><h2 style="margin:0.2em 0">{head} · '
            f"{validity}</h2><p>Target: {html.escape(str(target['kind']))} "
            f"{html.escape(str(target['version']))} (commit "
            f"{html.escape(str(target['commit'])[:12])}) at {html.escape(str(target['url']))}"
            "</p></div>")


SHOWN = ("requests", "failed", "dropped", "error_rate", "achieved_rps", "p50", "p95", "p99",
         "max")


def rows_html(summary: pd.DataFrame) -> str:
    """One row per scenario and endpoint: verdicts in colour, numbers rounded, integers as
    integers, blanks (never NaN) where a run recorded nothing."""
    heads = ["scenario", "endpoint", "passed", "valid", "requests", "failed", "dropped",
             "error rate", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "notes"]
    body = []
    for row in summary.to_dict("records"):
        cells = [f'<a href="{_link(row["run_dir"])}">{html.escape(str(row["scenario"]))}</a>',
                 html.escape(str(row["endpoint"])),
                 view.coloured("pass" if row["passed"] else "FAIL",
                                 view.PASS if row["passed"] else view.FAIL, True),
                 view.coloured("valid" if row["valid"] else "INVALID",
                                 view.PASS if row["valid"] else view.FAIL)]
        cells += [html.escape(view.number(row.get(k))) if not _blank(row.get(k)) else ""
                  for k in SHOWN]
        cells.append(html.escape(str(row.get("notes") or "")) if not _blank(row.get("notes"))
                     else "")
        left = (0, 1, len(cells) - 1)  # names and notes read from the left
        body.append("<tr>" + "".join(f'<td style="text-align:left">{c}</td>' if i in left
                                     else f"<td>{c}</td>" for i, c in enumerate(cells))
                    + "</tr>")
    return ('<div style="overflow-x:auto"><table><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def print_summary(suite_dir: Path) -> None:
    """The combined table on stdout, and where the report is."""
    summary = pd.read_csv(suite_dir / "summary.csv")
    shown = summary[["scenario", "endpoint", "requests", "failed", "p95", "p99", "passed",
                     "notes"]].copy()
    for column in ("requests", "failed"):  # NaN (a scenario without requests) made them floats
        shown[column] = shown[column].astype("Int64")
    shown = shown.astype(object).fillna("")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format="{:.2f}".format))
    print(f"  report: {suite_dir / 'report.html'}")
