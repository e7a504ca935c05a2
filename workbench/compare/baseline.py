"""Baseline records: one immutable JSON per run, a generated table, and a git commit.

Layout (asv's ``results/``, one file per run)::

    baselines/<machine>/<scenario>/<UTC start>_<measured sha12>_<run8>.json
    baselines/README.md   generated from those files, deterministically

Records follow :mod:`workbench.report.record` (schema version 3); older versions are migrated on
load. Every record is written by :func:`workbench.jsonio.write_json` with ``exclusive`` (a temporary
file, then a hard link that fails if the name is taken), so a record is never half-written and
never overwritten. Committing uses the git CLI,
refuses a tree with changes outside ``baselines/`` and ``runs/`` (the record must name the code
that measured it), and never pushes.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from workbench import argtypes
from workbench.capacity import records
from workbench.errors import WorkbenchError
from workbench.jsonio import write_json, write_text
from workbench.report import calibration
from workbench.report.record import RECORD_FILE, SCHEMA_VERSION, migrate, validate

__all__ = ["RECORD_FILE", "SCHEMA_VERSION", "commit", "load_record", "render", "render_table"]

TABLE_HEADER = ("scenario", "endpoint", "p50 ms", "p95 ms", "p99 ms", "error rate", "req/s",
                "protocol", "date (UTC)", "commit", "target", "machine", "source", "valid",
                "calibration")


def git(root: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise WorkbenchError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def workbench_revision(root: Path) -> dict:
    """The workbench's own git SHA and whether its tree was clean (ignoring runs/, baselines/)."""
    sha = git(root, "rev-parse", "HEAD", check=False).strip() or None
    return {"git_sha": sha, "clean": not dirty_paths(root) if sha else None}


def dirty_paths(root: Path) -> list[str]:
    """Uncommitted paths outside baselines/ and runs/."""
    status = git(root, "status", "--porcelain", "--untracked-files=all", check=False)
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    return [p for p in paths if not p.startswith(("baselines/", "runs/", '"baselines/'))]


def load_record(path: Path) -> dict:
    """Read a baseline record, migrating an older schema version and validating it."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot read baseline record {path}: {exc}") from None
    record = migrate(record, str(path))
    validate(record, str(path))
    return record




def check_path_part(value: object, what: str) -> str:
    """``value`` if it can name a folder or file under ``baselines/``, else WorkbenchError.

    Only ``[A-Za-z0-9._-]``, not starting with a dot: a machine name, scenario or commit can
    never climb out of ``baselines/`` (``--machine ../../x``) or hide a file.
    """
    if not isinstance(value, str) or not argtypes.PATH_PART.fullmatch(value):
        raise WorkbenchError(f"{what} {value!r} cannot name a baseline file: use only letters, "
                             "digits, '.', '_' and '-' (not starting with '.')")
    return value


def _utc_stamp(started_at: str) -> str:
    """``20261126T120000Z`` from an ISO 8601 time (a zone-less one is UTC, as ours are)."""
    try:
        when = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise WorkbenchError(f"the record's start time {started_at!r} is not ISO 8601") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%SZ")


def baseline_path(root: Path, record: dict, kind: str | None = None) -> Path:
    """Where ``record`` is filed; every part checked, and the result inside ``baselines/``.

    ``baselines/<machine>/<scenario>/[<kind>/]<UTC start>_<sha12>_<run8>.json``; capacity
    records go in the ``capacity`` kind folder.
    """
    stamp = _utc_stamp(record["run"]["started_at"])
    sha12 = (record["target"].get("commit") or "unknown")[:12]
    run8 = record["run_id"].rsplit("_", 1)[-1][:8]
    parts = (check_path_part(record["machine"]["name"], "machine name"),
             check_path_part(record["scenario"], "scenario"),
             *((check_path_part(kind, "record kind"),) if kind else ()),
             check_path_part(f"{check_path_part(stamp, 'start time')}_"
                             f"{check_path_part(sha12, 'commit')}_"
                             f"{check_path_part(run8, 'run id')}.json", "record name"))
    base = (root / "baselines").resolve()
    dest = base.joinpath(*parts)
    if not dest.resolve().is_relative_to(base):  # a symlinked folder could still lead out
        raise WorkbenchError(f"{dest} is not under {base}; refusing to write outside baselines/")
    return root / "baselines" / Path(*parts)


def _fmt(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _source(record: dict) -> str:
    source = record["source"]
    return f"{source['tool']} import" if source.get("imported") else "measured"


def _valid(record: dict) -> str:
    valid = record["validity"]["valid"]
    return "n/a" if valid is None else "yes" if valid else "no"


def render_table(root: Path) -> str:
    """The Markdown table of every record, in a stable order, with no generation timestamp."""
    rows = []
    for path in sorted((root / "baselines").glob("*/*/*.json")):
        r = load_record(path)
        for endpoint, e in sorted(r["endpoints"].items()):
            rows.append((r["scenario"], endpoint, _fmt(e["p50"]), _fmt(e["p95"]), _fmt(e["p99"]),
                         _fmt(e["error_rate"], 4), _fmt(e["achieved_rps"], 1),
                         r.get("protocol") or "unknown",
                         r["run"]["started_at"][:16].replace("T", " "),
                         (r["target"].get("commit") or "unknown")[:12], r["target"]["kind"],
                         r["machine"]["name"], _source(r), _valid(r), calibration.cell(r)))
    rows.sort(key=lambda row: (row[0], row[1], row[8], row[11]))  # stable: ties keep path order
    lines = [
        "# Measured baselines",
        "",
        "Generated by `workbench baseline render` from the JSON records beside this file; do not",
        "edit by hand. Latency is response time from the intended start (coordinated omission",
        "corrected). Rows whose target is `stand-in` were measured against the workbench's",
        "embedded stand-in, not certctl, and say nothing about certctl's performance. Rows whose",
        "source is `k6 import` came from a k6 summary: k6 times each request from its send, so",
        "they are not corrected for coordinated omission, and their machine is unknown.",
        "The calibration column is what the machine measured beside each run (the fastest of a",
        "fixed CPU workload's repeats and of a loopback round trip's block medians); `workbench",
        "compare` refuses two records whose figures differ by more than 10 %, and `none` marks a",
        "record that has no calibration (recorded before it existed, or imported).",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" for _ in TABLE_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += records.table(root)
    lines += machines_section(root)
    return "\n".join(lines) + "\n"


LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


def _colocated(record: dict) -> bool:
    """Whether the target answered on this machine's loopback: it shared the driver's cores."""
    host = urlsplit(str(record["target"].get("url") or "")).hostname or ""
    return host.startswith("127.") or host in LOOPBACK_HOSTS


def machines_section(root: Path) -> list[str]:
    """What kind of numbers each machine's rows are: its hardware, and whether the target
    shared it with the driver (co-located) or was measured across a network."""
    machines: dict[str, tuple[dict, set[bool]]] = {}
    paths = [*(root / "baselines").glob("*/*/*.json"),
             *(root / "baselines").glob("*/*/capacity/*.json")]
    for path in sorted(paths):
        r = json.loads(path.read_text())
        if r.get("source", {}).get("imported"):
            continue  # an import's machine is unknown
        facts, where = machines.setdefault(r["machine"]["name"], (r["machine"], set()))
        where.add(_colocated(r))
    if not machines:
        return []
    lines = ["", "## Machines", ""]
    for name, (m, where) in sorted(machines.items()):
        hardware = (f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cores')} cores, "
                    f"{m.get('memory_gib')} GiB, {m.get('virtualisation') or 'bare metal'}, "
                    f"kernel {m.get('kernel')}")
        if where == {True}:
            kind = ("co-located: the target, its PostgreSQL and the workbench's driver shared "
                    "these cores (the driver at real-time priority, pinned to one core), so "
                    "these are lower bounds for what the target does on hardware of its own; "
                    "compare them only with rows of the same machine name")
        elif where == {False}:
            kind = "the target on another host: the numbers include the network between them"
        else:
            kind = "some rows co-located with the target, some across a network"
        lines.append(f"- `{name}`: {hardware}. {kind}.")
    return lines


def render(root: Path, check: bool = False) -> bool:
    """Write baselines/README.md; with ``check``, only report whether it is up to date."""
    path = root / "baselines" / "README.md"
    text = render_table(root)
    current = path.read_text() if path.exists() else None
    if check:
        return current == text
    if current != text:
        write_text(path, text)
    return True


def commit(run_dir: Path, root: Path, force: bool = False) -> Path:
    """File the run's record under baselines/, regenerate the table and make a git commit."""
    source = run_dir / RECORD_FILE
    if not source.exists() and (run_dir / records.CAPACITY_RECORD_FILE).exists():
        return commit_capacity(run_dir, root, force=force)
    if not source.exists():
        raise WorkbenchError(f"{run_dir} has no {RECORD_FILE}; run a scenario to completion "
                             "first (`workbench run NAME`)")
    record = load_record(source)
    if not force and not record["validity"]["valid"]:
        raise WorkbenchError("the run is invalid (" + "; ".join(record["validity"]["reasons"])
                             + "); its numbers measure the driver, not the target. Use --force "
                             "to commit it anyway")
    if not force and not record["passed"]:
        raise WorkbenchError("the run breached its thresholds; use --force to commit it anyway")
    return _file(root, record)


def _file(root: Path, record: dict, kind: str | None = None, summary: str | None = None
          ) -> Path:
    """File ``record`` under baselines/ (``kind``: its kind's folder, see
    :func:`baseline_path`), regenerate the tables and git commit both, the message naming what
    was measured (``summary`` first): all or nothing, so a retry never finds a half-filed
    record. The work tree must be clean, and a record is never filed over another."""
    _check_tree(root)
    dest = baseline_path(root, record, kind=kind)
    if dest.exists():
        raise WorkbenchError(f"{dest.relative_to(root)} already exists; records are immutable")
    sha12 = (record["target"].get("commit") or "unknown")[:12]
    message = "\n".join([
        f"{kind or 'baseline'}: {record['scenario']} on {record['machine']['name']}", "",
        *([summary] if summary else []),
        f"Measured {record['target']['kind']} at commit {sha12} "
        f"({record['target'].get('version')}) on {record['run']['started_at']}.",
        f"Workbench {record['workbench']['git_sha']}; run {record['run_id']}."])
    readme = root / "baselines" / "README.md"
    previous = readme.read_text() if readme.exists() else None
    rel = [str(dest.relative_to(root)), "baselines/README.md"]
    write_json(dest, record, exclusive=True)
    try:
        render(root)
        git(root, "add", "--", *rel)
        git(root, "commit", "--quiet", "--only", "-m", message, "--", *rel)
    except BaseException:
        _undo(root, dest, readme, previous, rel)
        raise
    return dest


def _undo(root: Path, dest: Path, readme: Path, previous: str | None, rel: list[str]) -> None:
    """Unstage and remove what a failed :func:`commit` wrote; put the table back."""
    git(root, "reset", "--quiet", "--", *rel, check=False)  # no HEAD yet: nothing was staged
    dest.unlink(missing_ok=True)
    for folder in (dest.parent, dest.parent.parent):  # the scenario's, the machine's, if empty
        try:
            folder.rmdir()
        except OSError:
            break
    if previous is None:
        readme.unlink(missing_ok=True)
    else:
        write_text(readme, previous)


def _check_tree(root: Path) -> None:
    """A git work tree with nothing uncommitted outside baselines/ and runs/."""
    if git(root, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise WorkbenchError(f"{root} is not a git work tree; baselines are committed with git")
    dirty = dirty_paths(root)
    if dirty:
        raise WorkbenchError("uncommitted changes outside baselines/ and runs/ ("
                             + ", ".join(dirty[:5]) + "); commit or stash them first, so the "
                             "baseline names the code that measured it")


def commit_capacity(run_dir: Path, root: Path, force: bool = False) -> Path:
    """File a capacity search's record under baselines/, regenerate the tables, git commit.

    Only a found capacity (a knee) is committed without ``force``: a driver-bound search
    measured the driver, and the other verdicts are bounds only."""
    record = records.load(run_dir / records.CAPACITY_RECORD_FILE)
    if not force and record["verdict"] != "knee":
        raise WorkbenchError(f"the capacity search ended {record['verdict']!r} "
                             f"({record.get('sentence')}); it is a bound, not a capacity. Use "
                             "--force to commit it anyway")
    return _file(root, record, kind="capacity", summary=record.get("sentence"))
