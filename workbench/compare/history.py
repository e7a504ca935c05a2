"""A load across certctl's history: ``workbench history`` (asv's ``run`` over a range) and
``--bisect`` (asv's ``find``).

``run_history`` builds each commit of a git range of a certctl checkout (:func:`commits`,
oldest first; each build cached per commit, :func:`workbench.target.certctl.build`), runs it as the
workbench's instance ``history`` on a fresh database, placed as ``ab`` places a target
(:func:`workbench.compare.ab.placed`), warms it up and measures the load once
(:func:`workbench.compare.ab.measure`: a complete run folder with its record and the machine's
calibration). ``history.json`` is rewritten after every commit (a commit that fails to build or run
is noted and the next one goes on); the trend figures (``trend_<endpoint>.png``: p95 and p99 with
their intervals against commit order) and ``report.html`` come at the end. A history is one run per
commit, measured minutes apart: its figure shows where to look, and ``ab`` (or ``--bisect``) is what
says a commit is slower.

``run_bisect`` finds the first commit between GOOD and BAD (first-parent line, GOOD an ancestor
of BAD) that ``ab`` against GOOD calls slower: it checks BAD first (a BAD that is not slower
ends the search with no answer, rather than naming a commit by elimination), then halves the
range, ``ceil(log2 n)`` comparisons for n commits, each a whole ``ab`` (both sides started fresh,
interleaved rounds, the sequential rule) in ``step<NN>_<commit>/``. A step that is not settled
as slower (no change, faster, inconclusive) counts as not slower, as the question is where
``ab`` first says slower; ``bisect.json`` keeps every step's verdict, and the answer says how many
steps were unsettled.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from workbench import jsonio
from workbench.analyse.analysis import ALL
from workbench.compare import ab, paired, runs
from workbench.compare.ab import Echo, Load, Options
from workbench.errors import WorkbenchError
from workbench.report import view
from workbench.target import certctl, preflight
from workbench.target.ports import free_port

HISTORY_FILE, BISECT_FILE, REPORT_FILE = "history.json", "bisect.json", ab.REPORT_FILE
SCHEMA_VERSION = 1
RUN_S = 60.0  # a history's run per commit: one run each, so longer than an ab round
INSTANCE = "history"
COMMIT_REPO_ENV = "CERTCTL_REPO"  # where a record looks up its commit's date


# --- commits -----------------------------------------------------------------------------------


def _listed(src: Path, *args: str) -> list[dict]:
    out = certctl.git(src, "log", "--format=%H%x09%cI%x09%s", *args)
    rows = [line.split("\t", 2) for line in out.splitlines() if line]
    return [{"commit": c, "date": d, "subject": s} for c, d, s in rows]


def commits(src: str | Path, rev_range: str, steps: int | None = None) -> list[dict]:
    """The commits of ``rev_range`` in a checkout, oldest first, on the first-parent line:
    git's range syntax (``v2.0.60..v2.0.71``: after the first, up to the second) or one
    revision. Each: commit, date (committer, ISO 8601), subject. ``steps``: at most that many,
    evenly spaced, the last included (asv's ``--steps``)."""
    src = Path(src).expanduser().resolve()
    if rev_range.startswith("-"):
        raise WorkbenchError(f"REV_RANGE {rev_range!r}: name a range (A..B) or a revision")
    if ".." in rev_range:
        found = _listed(src, "--reverse", "--first-parent", rev_range, "--")
    else:
        found = _listed(src, "-1", f"{rev_range}^{{commit}}", "--")
    if not found:
        raise WorkbenchError(f"REV_RANGE {rev_range!r} names no commit in {src} (A..B holds "
                             "the commits after A up to B)")
    if steps is not None and len(found) > steps:
        last = len(found) - 1
        picked = sorted({round(last - i * last / max(steps - 1, 1)) for i in range(steps)})
        found = [found[i] for i in picked]
    return found


def between(src: str | Path, good: str, bad: str) -> tuple[dict, list[dict]]:
    """GOOD, and the commits after it up to BAD (oldest first) on BAD's first-parent line;
    GOOD must be an ancestor of BAD."""
    src = Path(src).expanduser().resolve()
    named = {}
    for flag, rev in (("GOOD", good), ("BAD", bad)):
        try:
            named[flag] = _listed(src, "-1", f"{rev}^{{commit}}", "--")[0]
        except (WorkbenchError, IndexError):
            raise WorkbenchError(f"--bisect {flag} {rev!r}: no such commit in {src}") from None
    if named["GOOD"]["commit"] == named["BAD"]["commit"]:
        raise WorkbenchError("--bisect GOOD BAD: they are one commit; name a good commit and "
                             "a later, slower one")
    ancestor = subprocess.run(["git", "-C", str(src), "merge-base", "--is-ancestor",
                               named["GOOD"]["commit"], named["BAD"]["commit"]])
    if ancestor.returncode != 0:
        raise WorkbenchError(f"--bisect: GOOD {good} is not an ancestor of BAD {bad}; name "
                             "an older good commit on BAD's line")
    chain = _listed(src, "--reverse", "--first-parent", "--ancestry-path",
                    f"{named['GOOD']['commit']}..{named['BAD']['commit']}", "--")
    return named["GOOD"], chain


@contextlib.contextmanager
def _commit_dates_from(src: Path) -> Iterator[None]:
    """Records look up their commit's date in ``CERTCTL_REPO``: the checkout measured."""
    saved = os.environ.get(COMMIT_REPO_ENV)
    os.environ[COMMIT_REPO_ENV] = str(src)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(COMMIT_REPO_ENV, None)
        else:
            os.environ[COMMIT_REPO_ENV] = saved


# --- history -----------------------------------------------------------------------------------


def measure_commit(load: Load, src: Path, row: Mapping, options: Options, out: Path,
                   state: Path | None, echo: Echo) -> dict:
    """Build the commit, run it fresh as instance ``history``, warm it up, measure it once;
    returns its record. The instance is stopped afterwards, whatever happened."""
    made = certctl.build(src, row["commit"], state=state, echo=echo)
    with ab.holding([INSTANCE], state):
        certctl.stop(INSTANCE, state)
        info = certctl.start(made, INSTANCE, port=options.port or free_port(),
                             env=options.certctl_env, state=state, fresh_database=True,
                             echo=echo)
        side = ab.Side("A", f"certctl:{row['commit'][:12]}", preflight.started_target(info),
                       build=made, instance=INSTANCE)
        try:
            ab.check_side(load, side, options.round_s)
            with ab.placed([side]):
                if options.warmup_s > 0:
                    ab.measure(load, side, out / f"warmup_{row['commit'][:12]}",
                               options.warmup_s)
                return ab.measure(load, side, out / f"{row['index']:02d}_"
                                  f"{row['commit'][:12]}_{secrets.token_hex(4)}", options.round_s)
        finally:
            certctl.stop(INSTANCE, state)


def run_history(load: Load, src: str | Path, rev_range: str, options: Options,
                out: Path | None = None, state: Path | None = None, echo: Echo = print,
                steps: int | None = None) -> dict:
    """``workbench history``: the load once at every commit of ``rev_range`` (at most
    ``steps`` of them, evenly spaced; module doc)."""
    options.check()
    load.check(options.round_s)
    if steps is not None and steps < 1:
        raise WorkbenchError(f"--steps must be at least 1, got {steps}")
    src = Path(src).expanduser().resolve()
    rows = [{"index": i} | c for i, c in enumerate(commits(src, rev_range, steps), start=1)]
    out = out or ab.new_dir(load, "history")
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": SCHEMA_VERSION, "kind": "history", "history_id": out.name,
           "source": str(src), "range": rev_range, "steps": steps, "load": load.facts(),
           "label": load.label(),
           "options": {"run_s": options.round_s, "warmup_s": options.warmup_s},
           "started_at": ab._now(), "commits": rows}
    clock = time.monotonic()
    records: list[dict] = []
    with _commit_dates_from(src):
        try:
            for row in rows:
                echo(f"[history] {row['index']}/{len(rows)} {row['commit'][:12]} "
                     f"{row['subject']}")
                try:
                    rec = measure_commit(load, src, row, options, out, state, echo)
                except WorkbenchError as exc:  # the next commit may build and run
                    row["error"] = str(exc)
                    echo(f"[history] {row['commit'][:12]}: {exc}")
                else:
                    records.append(rec)
                    row |= commit_row(rec)
                    echo(f"[history] {row['commit'][:12]}: {row_line(row)}")
                doc |= {"ended_at": ab._now(), "seconds": round(time.monotonic() - clock, 1)}
                jsonio.write_json(out / HISTORY_FILE, doc)
        finally:
            doc["figures"] = write_trend(out, doc, records)
            jsonio.write_json(out / HISTORY_FILE, doc)
            jsonio.write_text(out / REPORT_FILE, history_html(doc, out))
    return doc


def commit_row(rec: Mapping) -> dict:
    """What history.json keeps of a commit's run: its folder, version, validity, calibration
    and per endpoint p50/p95/p99."""
    values = ab.run_values(rec)
    return {"run_id": rec["run_id"], "version": rec["target"].get("version"),
            "valid": values["valid"], "invalid_reasons": values["invalid_reasons"],
            "calibration": values["calibration"], "endpoints": values["endpoints"]}


def _first_endpoint(row: Mapping) -> str | None:
    names = sorted(row.get("endpoints") or {}, key=lambda n: (n != ALL, n))
    return names[0] if names else None


def row_line(row: Mapping) -> str:
    endpoint = _first_endpoint(row)
    e = (row.get("endpoints") or {}).get(endpoint) or {}
    return (f"{endpoint} " + " ".join(f"{s} {view.number(e.get(s))}" for s in ab.STATS)
            + " ms" + ("" if row.get("valid") is not False else " (invalid)"))


def trend_frame(doc: Mapping, records: Sequence[Mapping]):
    """compare's trend rows of the records, positioned in the range's commit order."""
    frame = runs.trend(records)
    order = {row["commit"][:12]: row["index"] for row in doc["commits"]}
    if len(frame):
        frame["position"] = frame["commit"].map(order)
        frame = frame.sort_values(["position", "endpoint"], kind="stable")
    return frame


def write_trend(out: Path, doc: Mapping, records: Sequence[Mapping]) -> list[str]:
    """``trend_<endpoint>.png`` for every endpoint measured: p95 and p99 against commit
    order. Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.report import plots

    frame = trend_frame(doc, records)
    if not len(frame):
        return []
    names = []
    scenario = str(frame["scenario"].iloc[0])
    for endpoint in sorted(frame["endpoint"].unique(), key=lambda n: (n != ALL, n)):
        fig = plots.trend_plot(frame[frame["endpoint"] == endpoint], scenario,
                               target=f"{endpoint}: certctl over {doc['range']}",
                               heading="p95 and p99 at each commit")
        name = f"trend_{''.join(c if c.isalnum() or c in '-_' else '_' for c in endpoint)}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def history_table(doc: Mapping):
    import pandas as pd

    rows = []
    for row in doc["commits"]:
        endpoint = _first_endpoint(row)
        e = (row.get("endpoints") or {}).get(endpoint) or {}
        rows.append({"#": row["index"], "commit": row["commit"][:12],
                     "subject": row["subject"], "date": row["date"][:10],
                     "version": row.get("version"), "endpoint": endpoint,
                     **{s: e.get(s) for s in ab.STATS}, "valid": row.get("valid"),
                     "calibration": row.get("calibration"), "run": row.get("run_id"),
                     "error": row.get("error")})
    return pd.DataFrame(rows).set_index("#") if rows else pd.DataFrame()


def history_html(doc: Mapping, out: Path) -> str:
    import base64
    import html

    measured = sum(1 for r in doc["commits"] if r.get("run_id"))
    failed = [r for r in doc["commits"] if r.get("error")]
    head = (f"{doc['label']} at {measured} of {len(doc['commits'])} commits of "
            f"{doc['range']}" + (f"; {len(failed)} failed" if failed else ""))
    colour = view.WARN if failed else view.PASS
    facts = [f"Source: {doc['source']}",
             f"One run of {doc['options']['run_s']:g} s per commit (after a "
             f"{doc['options']['warmup_s']:g} s warm-up), each on a fresh database, in commit "
             "order; one run a commit shows where to look: workbench ab (or --bisect) says "
             "whether a commit is slower"]
    facts += [f"{r['commit'][:12]}: {r['error']}" for r in failed]
    images = "".join(
        '<img style="max-width:100%" src="data:image/png;base64,'
        + base64.b64encode((out / name).read_bytes()).decode() + '">'
        for name in doc.get("figures") or [])
    sections = [view.Section("", f'<div class="workbench-verdict" style="border-left:6px '
                                   f'solid {colour};padding:0.4em 1em;margin:0.5em 0 1em 0">'
                                   f'<h2 style="margin:0.2em 0">'
                                   f"{view.coloured(head, colour)}</h2><p>"
                                   + "<br>".join(html.escape(f) for f in facts) + "</p></div>"),
                view.Section("p95 and p99 at each commit, per endpoint", images),
                view.Section("Commits, in order", view.frame_html(history_table(doc)))]
    return view.page(f"workbench history: {doc['label']}", sections)


def history_text(doc: Mapping, out: Path) -> str:
    lines = [f"history {doc['label']} over {doc['range']}: {len(doc['commits'])} commits"]
    for row in doc["commits"]:
        error = str(row.get("error"))
        what = row_line(row) if row.get("run_id") else \
            f"failed: {error[:120]}{' ...' if len(error) > 120 else ''} (in history.json)"
        lines.append(f"  {row['index']:>2} {row['commit'][:12]} {row['subject'][:48]:<48} "
                     f"{what}")
    lines.append(f"  figures: {', '.join(str(out / f) for f in doc.get('figures') or [])}")
    lines.append(f"  report: {out / REPORT_FILE}")
    return "\n".join(lines)


# --- bisect ------------------------------------------------------------------------------------


def run_bisect(load: Load, src: str | Path, good: str, bad: str, options: Options,
               out: Path | None = None, state: Path | None = None, echo: Echo = print
               ) -> dict:
    """``workbench history --bisect GOOD BAD``: the first commit ``ab`` against GOOD calls
    slower (module doc). Returns the bisect document (``bisect.json``)."""
    options.check()
    load.check(options.round_s)
    src = Path(src).expanduser().resolve()
    first, chain = between(src, good, bad)
    out = out or ab.new_dir(load, "bisect")
    out.mkdir(parents=True, exist_ok=True)
    most = 1 + math.ceil(math.log2(len(chain))) if len(chain) > 1 else 1
    doc: dict = {"schema_version": SCHEMA_VERSION, "kind": "bisect", "bisect_id": out.name,
                 "source": str(src), "good": first, "bad": chain[-1], "commits": chain,
                 "load": load.facts(), "label": load.label(), "started_at": ab._now(),
                 "most_steps": most, "steps": [], "answer": None, "sentence": ""}
    clock = time.monotonic()

    def save() -> None:
        doc.update(ended_at=ab._now(), seconds=round(time.monotonic() - clock, 1))
        jsonio.write_json(out / BISECT_FILE, doc)

    def slower(i: int) -> bool:
        row = chain[i]
        step = len(doc["steps"]) + 1
        echo(f"[bisect] step {step} (at most {most}): ab {first['commit'][:12]} (GOOD) "
             f"against {row['commit'][:12]} {row['subject']}")
        folder = out / f"step{step:02d}_{row['commit'][:12]}"
        result = ab.run_ab(load, f"certctl:{first['commit']}", f"certctl:{row['commit']}",
                           options, src=src, out=folder, state=state, echo=echo)
        doc["steps"].append({"step": step, "index": i, "commit": row["commit"],
                             "subject": row["subject"], "verdict": result["verdict"],
                             "verdict_text": result["verdict_text"],
                             "rounds": len(result["rounds"]), "ab": folder.name})
        echo(f"[bisect] {row['commit'][:12]}: {result['verdict_text']}")
        save()
        return result["verdict"] == "slower"

    save()
    try:
        if not slower(len(chain) - 1):
            said, folder = doc["steps"][-1]["verdict"], doc["steps"][-1]["ab"]
            doc["sentence"] = (f"no answer: BAD {chain[-1]['commit'][:12]} is not slower than "
                               f"GOOD {first['commit'][:12]} by ab ({said}); nothing to bisect"
                               + ("" if said in paired.SETTLED else
                                  f" (what would settle it: {folder}/report.html)"))
        else:
            low, high = -1, len(chain) - 1  # chain[high] is slower; low (or GOOD) is not
            while high - low > 1:
                mid = (low + high) // 2
                if slower(mid):
                    high = mid
                else:
                    low = mid
            doc["answer"] = chain[high]
            unsettled = sorted({s["verdict"] for s in doc["steps"]} - set(paired.SETTLED))
            counted = sum(s["verdict"] in unsettled for s in doc["steps"])
            doc["sentence"] = (
                f"first slower commit: {chain[high]['commit'][:12]} {chain[high]['subject']} "
                f"({len(doc['steps'])} ab comparisons over {len(chain)} commits)"
                + (f"; {counted} step(s) {' or '.join(unsettled)}, counted as not slower"
                   if unsettled else ""))
    finally:
        if not doc["sentence"]:
            doc["sentence"] = "interrupted: " + (f"{len(doc['steps'])} step(s) ran"
                                                 if doc["steps"] else "no step ran")
        save()
        jsonio.write_text(out / REPORT_FILE, bisect_html(doc))
    return doc


def bisect_html(doc: Mapping) -> str:
    import html

    import pandas as pd

    colour = view.PASS if doc.get("answer") else view.WARN
    facts = [f"GOOD {doc['good']['commit'][:12]} {doc['good']['subject']}; BAD "
             f"{doc['bad']['commit'][:12]} {doc['bad']['subject']}; {len(doc['commits'])} "
             f"commits after GOOD, at most {doc['most_steps']} comparisons",
             f"Load: {doc['label']}; each step is a whole workbench ab of GOOD against the "
             "commit (its folder holds ab.json and its report)"]
    steps = pd.DataFrame(doc["steps"], columns=["step", "commit", "subject", "verdict",
                                                "rounds", "verdict_text", "ab"])
    if len(steps):
        steps["commit"] = steps["commit"].str[:12]
        steps = steps.set_index("step")
    sections = [view.Section("", f'<div class="workbench-verdict" style="border-left:6px '
                                   f'solid {colour};padding:0.4em 1em;margin:0.5em 0 1em 0">'
                                   f'<h2 style="margin:0.2em 0">'
                                   f"{view.coloured(doc['sentence'], colour)}</h2><p>"
                                   + "<br>".join(html.escape(f) for f in facts) + "</p></div>"),
                view.Section("Steps, in the order they ran", view.frame_html(steps))]
    return view.page(f"workbench history --bisect: {doc['label']}", sections)
