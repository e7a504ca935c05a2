"""Capacity records: a capacity search kept like a baseline, one immutable JSON per search.

A record says what was measured and where (schema version, machine, target version and
commit, the workbench's revision, the scenario's parameters, the search's options and
thresholds, the machine's calibration before the first step and after the last) and what the
search found (verdict, the answer, its bracket, the limiting check, how it repeated: the
bracket's repeats and, for ``--repeat-search``, every search's answer with the median and range;
every step with its length, fixture and the rule that judged its driver). Schema 2 adds
``calibration`` (:mod:`workbench.report.calibration`); a version-1 record is migrated on load, with
a calibration that says it was never measured. ``workbench baseline commit RUN`` files it as
``baselines/<machine>/<scenario>/capacity/<UTC start>_<sha12>_<run8>.json`` and
``baselines/README.md`` shows it in a capacity table beside the latency table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.report import calibration

CAPACITY_RECORD_FILE = "capacity-record.json"
SCHEMA_VERSION = 2
KIND = "capacity"
REQUIRED = ("schema_version", "kind", "run_id", "scenario", "machine", "target", "workbench",
            "run", "parameters", "search", "verdict", "unit", "max_sustainable", "interval",
            "limiting_check", "steps", "calibration")
_STEP_FIELDS = ("load", "offered_rate", "vus", "achieved_rate", "throughput", "p50", "p95",
                "p99", "passed", "valid", "driver_bound", "failed", "requests", "errors",
                "confirmation", "step_s", "search", "fixture", "shards", "schedule_lag_p99",
                "driver_cpu", "driver_rule")


def build(doc: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
    """A record from ``capacity.json``'s content and the run's context (run_id, scenario,
    profile, parameters, target, workbench, machine, software, run, calibration)."""
    record = {"schema_version": SCHEMA_VERSION, "kind": KIND,
              "calibration": calibration.missing("not measured: the search was recorded "
                                                 "without a calibration"), **context,
              "search": {"options": doc["options"], "thresholds": doc.get("thresholds"),
                         "max_error_rate": doc.get("max_error_rate"),
                         "driver": doc.get("driver")},
              "verdict": doc["verdict"], "unit": doc["unit"],
              "max_sustainable": doc["max_sustainable"], "interval": doc["interval"],
              "limiting_check": doc["limiting_check"], "sentence": doc.get("sentence"),
              "fleet": doc.get("fleet"),
              # how the answer repeated: the bracket's repeats, and several searches' range
              "repeats": doc.get("repeats"), "searches": doc.get("searches"),
              "answers": doc.get("answers"), "spread": doc.get("spread"),
              # run folders are local: a record keeps what each step measured, not where
              "steps": [{k: s.get(k) for k in _STEP_FIELDS} for s in doc["steps"]]}
    validate(record)
    return record


def _v1_to_v2(record: dict) -> dict:
    """Version 2 measures the machine beside the search; a version-1 record never did."""
    return record | {"schema_version": 2, "calibration": calibration.missing(
        "recorded with capacity record schema 1, before calibration existed")}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


def migrate(record: dict) -> dict:
    """A capacity record of an older schema version brought up to :data:`SCHEMA_VERSION`."""
    while (record.get("kind") == KIND and isinstance(record.get("schema_version"), int)
           and record["schema_version"] in MIGRATIONS):
        record = MIGRATIONS[record["schema_version"]](record)
    return record


def validate(record: Mapping[str, Any], where: str = "capacity record") -> None:
    """Refuse a record of another schema version or without the fields a reader needs."""
    if record.get("kind") != KIND or record.get("schema_version") != SCHEMA_VERSION:
        raise WorkbenchError(f"{where} is not a capacity record of schema version "
                             f"{SCHEMA_VERSION} (kind {record.get('kind')!r}, version "
                             f"{record.get('schema_version')!r}); search again")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise WorkbenchError(f"{where} lacks {', '.join(missing)}; search again")
    if "name" not in (record["machine"] or {}) or "started_at" not in (record["run"] or {}):
        raise WorkbenchError(f"{where} lacks machine.name or run.started_at; search again")


def load(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot read capacity record {path}: {exc}") from None
    record = migrate(record) if isinstance(record, dict) else record
    validate(record, str(path))
    return record


HEADER = ("scenario", "capacity", "unit", "verdict", "fails at", "limiting check", "searches",
          "fleet", "step s", "date (UTC)", "commit", "target", "machine", "calibration")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _searches(record: dict) -> str:
    """How many whole searches the capacity is the median of, and their range: a reader sees
    whether the number repeated (``1`` for a record of one search)."""
    answers = record.get("answers")
    if not answers or answers.get("searches", 1) < 2:
        return "1"
    return (f"{answers['searches']}: {_num(answers['min'])}-{_num(answers['max'])} "
            f"({answers['spread']:.0%} of the median)")


def table(root: Path) -> list[str]:
    """The capacity table's Markdown lines (none without a capacity record)."""
    rows = []
    for path in sorted((root / "baselines").glob("*/*/capacity/*.json")):
        r = load(path)
        low, high = r["interval"]
        rows.append((r["scenario"], _num(low), r["unit"], r["verdict"], _num(high),
                     (r["limiting_check"] or "").replace("|", "\\|"), _searches(r),
                     r.get("fleet") or "",
                     f"{r['search']['options']['step_s']:g}",
                     r["run"]["started_at"][:16].replace("T", " "),
                     (r["target"].get("commit") or "unknown")[:12], r["target"]["kind"],
                     r["machine"]["name"], calibration.cell(r)))
    if not rows:
        return []
    rows.sort(key=lambda row: (row[0], row[9], row[12]))
    return ["", "## Capacity", "",
            "The highest load each scenario sustained while every threshold held "
            "(`workbench run SCENARIO --find-capacity`): a `knee` is bracketed between the "
            "capacity and the load that failed; `driver bound`, `not reached` and `below start` "
            "are bounds only.", "",
            "| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]
