"""Interleaved A/B of two targets on this host: ``workbench ab``.

Two targets take the same load alternately, in rounds of one short run each, in ABBA order
(:func:`workbench.compare.paired.abba_order`), and after every round from the third the paired runs
are judged per endpoint and p50/p95/p99 (:func:`workbench.compare.paired.judge`: B/A per pair, its
interval, a paired t), with compare's verdict words; the comparison stops as soon as the verdict is
settled (:func:`workbench.compare.paired.settled`, under the sequential rule in
:mod:`workbench.compare.paired`), or at ``max_rounds``, or when the next round would end past
``budget_s`` (counted from the first warm-up, the targets up).

A target is a URL or ``certctl:REV``: a build of a certctl checkout at REV
(:func:`workbench.target.certctl.build`, cached per commit) that the workbench runs as an instance
of its own (``ab_a``, ``ab_b``), each on its own fresh database and port, stopped at the end. The
load is a scenario (its profile, its ``-p`` overrides, ``duration_s`` set to the round's length)
or one request at a fixed rate (:class:`Load`, as ``workbench drive`` sends it).

**Fair to both sides**, and why:

* Both targets stay up, idle, for the whole comparison, and only the one measured takes load:
  a side restarted before each run would be measured cold every time (and cost a boot per
  run), and one kept up while the other restarts would be warmer. Before the first round each
  side runs once, not judged (``warmup_s``), so the first pair does not time one cold process.
* Each side has its own database; before every run its fixtures are seeded (the first) or
  reset, so both sides start every run from the same rows. The same parameters give both the
  same schedule and the same requests in the same order (the driver's schedule and the
  fixtures are deterministic).
* The driver and the target never share a core: for the comparison this process (and so the
  driver processes it starts, which claim a core among those they may use) keeps to one core,
  the least busy when it starts, and each target the workbench started (its certctl
  processes, and the embedded PostgreSQL with every backend) to the others; both are restored
  at the end. A URL target is not the workbench's to move: it runs where it is, and
  ``placement`` says so.
* A run is driven from this process (a :class:`workbench.run.scenario.Run`, or a drive), not through
  a notebook: papermill costs seconds per run. Each run still writes a complete run folder with
  its ``record.json`` and the machine's calibration around it.

Output, in one folder under ``runs/``: ``ab.json`` (rewritten after every round, so an
interrupted comparison keeps what it measured), a run folder per run (``NNS_<id>``: round,
side), ``rounds.png`` (per-round p50/p95/p99 of A and B) and ``report.html``, which opens on the
verdict.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from workbench import driver, jsonio, scenarios
from workbench.analyse import stats
from workbench.analyse.analysis import ALL
from workbench.compare import paired
from workbench.driver import priority
from workbench.driver.launch import LiveLine
from workbench.errors import WorkbenchError
from workbench.paths import runs_dir
from workbench.report import calibration, record, view
from workbench.run import adhoc
from workbench.run.scenario import Run, new_run_id, write_preflight
from workbench.target import certctl, embedded, preflight
from workbench.target.ports import free_port

AB_FILE, FIGURE_FILE, REPORT_FILE = "ab.json", "rounds.png", "report.html"
SCHEMA_VERSION = 1
ROUND_S = 20.0  # seconds of load per run: short, so that a pair sits close in time
WARMUP_S = 5.0  # one run per side before the first round, not judged
CERTCTL_PREFIX = "certctl:"
INSTANCES = {"A": "ab_a", "B": "ab_b"}
STATS = ("p50", "p95", "p99")
TOKEN_ENV = "WORKBENCH_AB_TOKEN"  # a drive-style run's token reaches its driver here only
STOPPED = ("settled", "max rounds", "budget", "interrupted", "failed")

Echo = Callable[[str], None]


# --- what each run sends -----------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What every run sends: a scenario (``scenario``, its ``profile`` and ``overrides``), or
    one request at ``rate`` per second (``path`` and the drive options), as ``workbench drive``
    sends it."""

    scenario: str | None = None
    profile: str = "canonical"
    overrides: Mapping = field(default_factory=dict)
    path: str | None = None
    rate: float | None = None
    method: str = "GET"
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    send_token: bool = False
    protocol: str = "h1"
    max_vus: int = 200
    timeout_s: float = 10.0

    @property
    def name(self) -> str:
        return self.scenario or adhoc.SCENARIO

    def label(self) -> str:
        if self.scenario:
            return f"{self.scenario} ({self.profile})"
        return f"{self.method} {self.path} at {self.rate:g}/s"

    def scenario_spec(self) -> scenarios.Scenario:
        if self.scenario is None:
            raise WorkbenchError("this load is a request at a rate, not a scenario")
        return scenarios.get(self.scenario)

    def params(self, duration_s: float) -> dict:
        """The scenario's parameters of a run ``duration_s`` long."""
        return self.scenario_spec().params_for(self.profile, self.overrides_for(duration_s))

    def overrides_for(self, duration_s: float) -> dict:
        return dict(self.overrides) | {"duration_s": float(duration_s)}

    def spec(self, base_url: str, ca_file: str | None, insecure: bool,
             duration_s: float) -> driver.DriveSpec:
        """A drive-style run's spec against ``base_url``."""
        return driver.DriveSpec(
            base_url=base_url, templates=(driver.RequestTemplate(
                self.method.upper(), self.path or "/", adhoc.SCENARIO, self.body,
                tuple(self.headers)),),
            rate=float(self.rate or 0), duration_s=float(duration_s), max_vus=self.max_vus,
            timeout_s=self.timeout_s, ca_file=ca_file, insecure=insecure,
            token_env=TOKEN_ENV if self.send_token else None, scenario=adhoc.SCENARIO,
            protocol=self.protocol)

    def check(self, round_s: float) -> None:
        """Refuse bad input before anything is built, started or loaded."""
        if (self.scenario is None) == (self.path is None):
            raise WorkbenchError("name a scenario (workbench ab agent_storm ...) or a path to "
                                 "drive at a rate (workbench ab /health --rate 100 ...)")
        if self.scenario is not None:
            spec = self.scenario_spec()
            if "duration_s" in self.overrides:
                raise WorkbenchError("-p duration_s: each run's length is --duration here")
            if spec.own_target is not None:
                raise WorkbenchError(f"{spec.name} loads a target of its own, not certctl: it "
                                     "has no A and B to compare")
            self.params(round_s)  # bad profile or parameter: refused here
            return
        if not (self.path or "").startswith("/"):
            raise WorkbenchError(f"the path to drive must start with /, got {self.path!r}")
        if not self.rate or self.rate <= 0:
            raise WorkbenchError("a path needs --rate R (requests/s) to drive it at")
        self.spec("https://127.0.0.1:1", None, False, round_s).validate()

    def facts(self) -> dict:
        """What ab.json keeps of it (no header values or body: their hashes, as drive)."""
        if self.scenario:
            return {"scenario": self.scenario, "profile": self.profile,
                    "overrides": dict(self.overrides)}
        spec = self.spec("https://127.0.0.1:1", None, False, 1.0)
        return {"scenario": adhoc.SCENARIO} | {
            k: v for k, v in adhoc.parameters(spec).items() if k != "duration_s"}


@dataclass(frozen=True)
class Options:
    """How the comparison runs and judges (the command line's flags)."""

    round_s: float = ROUND_S
    warmup_s: float = WARMUP_S
    max_rounds: int = paired.MAX_PAIRS
    budget_s: float | None = None
    factor: float = stats.FACTOR
    alpha: float = stats.ALPHA
    confidence: float = stats.CONFIDENCE
    judged: tuple[str, ...] = STATS  # the percentiles judged and stopped on (each run keeps all)
    port: int | None = None  # the first of two ports for the targets it runs (None: free ones)
    certctl_env: Mapping[str, str] = field(default_factory=dict)
    ca_file: str | None = None  # a URL target's CA
    insecure: bool = False

    def check(self) -> None:
        if not self.round_s > 0:
            raise WorkbenchError(f"--duration must be above 0 s, got {self.round_s:g}")
        if self.warmup_s < 0:
            raise WorkbenchError(f"--warmup must be 0 s or more, got {self.warmup_s:g}")
        if self.max_rounds < paired.MIN_PAIRS:
            raise WorkbenchError(f"--max-rounds must be at least {paired.MIN_PAIRS}: the first "
                                 f"look at the pairs is after round {paired.MIN_PAIRS}")
        if self.budget_s is not None and not self.budget_s > 0:
            raise WorkbenchError("--budget must be a duration above 0, e.g. 10m")
        if not self.factor > 1:
            raise WorkbenchError(f"--factor must be above 1 (1.10 means 10 %), got "
                                 f"{self.factor}")
        if not 0 < self.alpha < 1:
            raise WorkbenchError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if not self.judged or set(self.judged) - set(STATS):
            raise WorkbenchError(f"--judge takes one or more of {', '.join(STATS)}, got "
                                 f"{', '.join(self.judged) or 'none'}")

    def rule(self) -> dict:
        """The sequential rule's numbers (:mod:`workbench.compare.paired`)."""
        looks = paired.looks(paired.MIN_PAIRS, self.max_rounds)
        return {"min_pairs": paired.MIN_PAIRS, "looks": looks, "factor": self.factor,
                "alpha": self.alpha, "confidence": self.confidence,
                "alpha_look": self.alpha / looks,
                "confidence_look": 1 - (1 - self.confidence) / looks,
                "disturbed": paired.DISTURBED, "judged": list(self.judged),
                "text": (f"{', '.join(self.judged)} judged after every round from round "
                         f"{paired.MIN_PAIRS} to {self.max_rounds} ({looks} looks): "
                         f"slower/faster when B/A is beyond {self.factor:g} and the paired t "
                         f"on per-run log ratios gives p < {self.alpha:g}/{looks}; no change "
                         f"when its {1 - (1 - self.confidence) / looks:.2%} interval lies "
                         f"inside [{1 / self.factor:.3g}, {self.factor:g}]; else "
                         f"inconclusive; a round whose run is over {paired.DISTURBED:g}x off "
                         f"its side's median is set aside as disturbed")}


# --- the two targets ---------------------------------------------------------------------------


def parse_target(text: str, flag: str) -> str | None:
    """The revision of a ``certctl:REV`` target, None for a URL (checked)."""
    if text.startswith(CERTCTL_PREFIX):
        rev = text[len(CERTCTL_PREFIX):].strip()
        if not rev:
            raise WorkbenchError(f"{flag} {text!r}: name the revision, e.g. certctl:HEAD or "
                                 "certctl:v2.0.71")
        return rev
    try:
        preflight.validate_url(text)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{flag} {text!r}: a target is a URL (https://HOST:PORT) or "
                             f"certctl:REV ({exc})") from None
    return None


@dataclass
class Side:
    """One target, ready for runs: where it answers, its token and what it said it is."""

    name: str  # "A" or "B"
    named: str  # as given: a URL or certctl:REV
    target: preflight.Target
    token: str = field(default="", repr=False)  # "" when its requests carry none
    identity: dict = field(default_factory=dict)
    build: certctl.Build | None = None
    instance: str | None = None  # the certctl instance the workbench runs for it
    seeded: bool = False

    def facts(self) -> dict:
        """What ab.json keeps of it: no token, the DSN without a password."""
        i = self.identity
        return {"named": self.named, "url": self.target.url, "kind": i.get("kind"),
                "version": i.get("version"), "commit": i.get("commit"),
                "modified": i.get("modified"), "instance": self.instance,
                "database": self.target.started.database if self.instance else None,
                "build": self.build.key if self.build else None,
                "dsn": self.target.safe_dsn}

    def label(self) -> str:
        i = self.identity
        return (f"{self.named} = {i.get('kind') or 'unknown'} {i.get('version') or ''} "
                f"(commit {(i.get('commit') or 'unknown')[:12]}) at {self.target.url}")


def url_target(url: str, ca_file: str | None, insecure: bool) -> preflight.Target:
    """A URL side: the server ``workbench target up`` started when the URL is on it (its CA,
    token and database), else a server of its own (``CERTCTL_TOKEN``, ``CERTCTL_DSN``)."""
    found = preflight.target_at(url, ca_file, insecure)
    return found if found.started is not None else preflight.resolve_target(url, ca_file,
                                                                            insecure)


def builds(named: Mapping[str, str], src: str | Path | None, state: Path | None = None,
           echo: Echo = print) -> dict[str, certctl.Build]:
    """The build of every ``certctl:REV`` side (cached per commit), before anything starts."""
    revs = {side: parse_target(text, f"--{side.lower()}") for side, text in named.items()}
    wanted = {side: rev for side, rev in revs.items() if rev is not None}
    if wanted and src is None:
        raise WorkbenchError("a certctl:REV target is built from a checkout: pass "
                             "--certctl-src PATH (a git clone of certctl)")
    made = {}
    for side, rev in wanted.items():
        made[side] = certctl.build(src, rev, state=state, echo=echo)
        if made[side].cached:
            echo(f"[ab] {side}: cached build {made[side].key[:12]} ({made[side].version})")
    return made


@contextlib.contextmanager
def holding(names: Sequence[str], state: Path | None = None) -> Iterator[None]:
    """Locks on the instances ``names`` of this state folder for the duration: a second
    ``ab`` or ``history`` started meanwhile would replace the instances this one measures."""
    folder = embedded.instance_dir(state, names[0]).parent if names else None
    held: list[int] = []
    try:
        for name in names:
            embedded.instance_dir(state, name)  # a valid name
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise WorkbenchError(
                    f"instance {name} of {folder.parent} is in use by another workbench ab or "
                    "history; wait for it, or give this one its own WORKBENCH_STATE_DIR"
                ) from None
        yield
    finally:
        for fd in held:
            os.close(fd)


def open_sides(load: Load, named: Mapping[str, str], made: Mapping[str, certctl.Build],
               options: Options, state: Path | None = None, echo: Echo = print
               ) -> list[Side]:
    """Start each certctl side on a fresh database and its own port, resolve each URL side,
    and check both as the load needs (preflight, its database), before any load. On failure
    whatever was started is stopped again."""
    sides: list[Side] = []
    try:
        for k, (name, text) in enumerate(named.items()):
            if name in made:
                instance = INSTANCES[name]
                certctl.stop(instance, state)  # never a leftover's database: a fresh one
                port = options.port + k if options.port else free_port()
                info = certctl.start(made[name], instance, port=port, env=options.certctl_env,
                                     state=state, fresh_database=True, echo=echo)
                side = Side(name, text, preflight.started_target(info), build=made[name],
                            instance=instance)
            else:
                side = Side(name, text, url_target(text, options.ca_file, options.insecure))
            sides.append(side)
            check_side(load, side, options.round_s)
            echo(f"[ab] {name}: {side.label()}")
    except BaseException:
        close_sides(sides, state)
        raise
    return sides


def check_side(load: Load, side: Side, round_s: float) -> None:
    """Preflight one side for the load: its identity and token (and database) or, for a
    request at a rate, what ``/api/v1/version`` says."""
    if load.scenario is None:
        side.token = preflight.token_for(side.target) if load.send_token else ""
        side.identity = adhoc.identify(side.target.url, side.target.verify())
        return
    spec = load.scenario_spec()
    side.token = spec.token(side.target)
    side.identity = spec.check_target(side.target, side.token, load.params(round_s))
    for warning in side.identity.get("warnings") or []:
        print(f"warning: {side.name}: {warning}", file=sys.stderr)
    if spec.needs_database:
        preflight.check_database(side.target, parents="fixture_parents" in spec.traps)


def close_sides(sides: Sequence[Side], state: Path | None = None) -> None:
    """Stop the certctl instances the comparison started (their databases stay)."""
    for side in sides:
        if side.instance:
            certctl.stop(side.instance, state)


# --- where the driver and the targets run ------------------------------------------------------


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _postgres_pids(pgdata: str) -> list[int]:
    """The embedded PostgreSQL's postmaster and every process it forked."""
    import psutil

    try:
        pid = int((Path(pgdata) / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [pid] + [p.pid for p in postmaster.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


@contextlib.contextmanager
def placed(sides: Sequence[Side]) -> Iterator[dict]:
    """The driver on one core this process may use (the least busy now, before any load), the
    targets the workbench started (certctl processes, PostgreSQL and its backends) on the
    others; restored on leaving. Yields what was placed where, for ab.json."""
    allowed = sorted(os.sched_getaffinity(0))
    busy = priority.core_busy(allowed)
    core = min(allowed, key=lambda c: (busy[c], c))
    started = [s for s in sides if s.instance and s.target.started is not None]
    facts: dict = {"driver_core": core, "target_cores": [c for c in allowed if c != core],
                   "placed": [], "notes": []}
    urls = [s.name for s in sides if not s.instance]
    if urls:
        facts["notes"].append(f"{' and '.join(urls)}: a URL target runs where it is (not the "
                              "workbench's to move); the driver keeps its core")
    if len(allowed) < 2 or not started:
        if len(allowed) < 2:
            facts["notes"].append("one core: the driver and the targets share it")
        facts["target_cores"] = []
        yield facts
        return
    cores = set(facts["target_cores"])
    pgdata = started[0].target.started.pg_pgdata
    groups = [(f"certctl {s.name} (pid {s.target.started.pid})", [s.target.started.pid])
              for s in started] + [("PostgreSQL and its backends", _postgres_pids(pgdata))]
    saved: dict[int, set[int]] = {}
    own = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {core})  # the driver processes inherit it, and claim it
        for label, pids in groups:
            tids = [t for pid in pids for t in _threads(pid)]
            for tid in tids:
                with contextlib.suppress(OSError):
                    saved.setdefault(tid, os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, cores)
            if tids:
                facts["placed"].append(label)
        yield facts
    finally:
        os.sched_setaffinity(0, own)
        postgres = _postgres_pids(pgdata)  # backends forked meanwhile took the pinned set
        back = next((saved[p] for p in postgres[:1] if p in saved), own)
        for tid in set(saved) | {t for pid in postgres for t in _threads(pid)}:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, saved.get(tid, back))


# --- one run -----------------------------------------------------------------------------------


def measure(load: Load, side: Side, run_dir: Path, duration_s: float,
            echo: Echo | None = None) -> dict:
    """One run of ``load`` against ``side`` into ``run_dir``, fixtures seeded (the side's
    first run) or reset first, the machine calibrated before and after; returns its record
    (``record.json``). A target that exited during the run fails it, after the record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    live = echo or LiveLine()
    if load.scenario is not None:
        write_preflight(run_dir, load.scenario, load.params(duration_s), side.identity)
        r = Run(load.scenario, load.overrides_for(duration_s), run_dir=run_dir,
                    profile=load.profile, seed_fixtures=not side.seeded, target=side.target)
        r.seed()
        side.seeded = True
        with _no_step_summary():
            r.drive()
            r.record()
        if r.target_exit:
            raise WorkbenchError(f"{side.name}: {r.target_exit}")
        return dict(r.baseline or {})
    spec = load.spec(side.target.url, side.target.ca_file, side.target.insecure, duration_s)
    before = calibration.measure(side.target.dsn)
    try:
        driver.drive(spec, run_dir, env={TOKEN_ENV: side.token} if side.token else None,
                     echo=live)
    finally:
        if isinstance(live, LiveLine):
            live.close()
    machine = calibration.section(before, calibration.measure(side.target.dsn))
    target = {k: side.identity.get(k) for k in ("url", "kind", "version", "commit",
                                                "modified", "commit_date")}
    target["url"], target["dsn"] = side.target.url, side.target.safe_dsn
    rec, *_ = adhoc.build_record(run_dir, spec, None, target, machine)
    jsonio.write_json(run_dir / record.RECORD_FILE, rec, exclusive=True)
    exit_report = preflight.exit_report(side.target)
    if exit_report:
        raise WorkbenchError(f"{side.name}: {exit_report}")
    return rec


@contextlib.contextmanager
def _no_step_summary() -> Iterator[None]:
    """A run inside a comparison appends nothing to GitHub's step summary: thirty runs'
    tables would bury the one that matters."""
    saved = os.environ.pop("GITHUB_STEP_SUMMARY", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["GITHUB_STEP_SUMMARY"] = saved


def run_values(rec: Mapping) -> dict:
    """What a pair needs of a run's record: per endpoint p50/p95/p99, validity, calibration."""
    return {"run_id": rec["run_id"], "valid": (rec.get("validity") or {}).get("valid"),
            "invalid_reasons": (rec.get("validity") or {}).get("reasons") or [],
            "endpoints": {name: {s: e.get(s) for s in STATS}
                          for name, e in (rec.get("endpoints") or {}).items()},
            "calibration": calibration.describe([rec])}


# --- judging -----------------------------------------------------------------------------------


def _value(v: object) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def judge_rounds(rounds: Sequence[Mapping], options: Options) -> list[dict]:
    """One row per endpoint (measured in every run) and percentile: the paired verdict."""
    runs = [r[s] for r in rounds for s in ("A", "B")]
    common = set.intersection(*(set(r["endpoints"]) for r in runs)) if runs else set()
    rows = []
    for endpoint in sorted(common, key=lambda n: (n != ALL, n)):
        for stat in options.judged:
            a = [_value(r["A"]["endpoints"][endpoint][stat]) for r in rounds]
            b = [_value(r["B"]["endpoints"][endpoint][stat]) for r in rounds]
            row = paired.judge(a, b, options.factor, options.alpha, options.confidence,
                               paired.MIN_PAIRS, options.max_rounds)
            rows.append({"endpoint": endpoint, "stat": stat,
                         "a_ms": float(np.nanmedian(a)) if np.isfinite(a).any() else None,
                         "b_ms": float(np.nanmedian(b)) if np.isfinite(b).any() else None}
                        | row)
    return rows


def settle_rows(rows: list[dict], options: Options) -> list[dict]:
    """What would settle each unsettled row, also when the comparison stopped before its last
    planned look (the budget, an interruption)."""
    out = []
    for row in rows:
        if row["verdict"] not in paired.SETTLED and not row["to_settle"]:
            row = row | {"to_settle": paired.to_settle(
                row, options.factor, options.alpha, options.confidence, paired.MIN_PAIRS)
                if row["pairs"] >= paired.MIN_PAIRS else
                f"at least {paired.MIN_PAIRS} rounds (pairs): {row['pairs']} ran"}
        out.append(row)
    return out


def verdict_text(verdict: str, rows: Sequence[Mapping], rounds: int, options: Options) -> str:
    """The verdict in a sentence: which rows decided it, and with what."""
    def shown(row: Mapping) -> str:
        interval = (f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
                    if _finite(row.get("ci_low")) else "")
        p = f", p {row['p_value']:.2g}" if _finite(row.get("p_value")) else ""
        return f"{row['endpoint']} {row['stat']} B/A {row['ratio']:.3f}{interval}{p}"

    n = f"{rounds} round{'s' if rounds != 1 else ''}"
    if verdict in ("slower", "faster"):
        decided = [shown(r) for r in rows if r["verdict"] == verdict]
        return f"B is {verdict} than A after {n}: " + "; ".join(decided[:3]) + (
            f" (and {len(decided) - 3} more)" if len(decided) > 3 else "")
    if verdict == "no change":
        widest = max(rows, key=lambda r: abs(math.log(r["ci_high"])) + abs(math.log(
            r["ci_low"])))
        return (f"no change after {n}: every B/A interval lies inside [{1 / options.factor:.3g}, "
                f"{options.factor:g}] (widest: {shown(widest)})")
    if verdict == "inconclusive":
        return (f"inconclusive after {n}: neither a change beyond {options.factor:g} x nor its "
                "absence is shown; see what would settle it")
    return (f"insufficient data after {n}: the first look at the pairs is after round "
            f"{paired.MIN_PAIRS}")


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _json_row(row: Mapping) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


# --- the comparison ----------------------------------------------------------------------------


def new_dir(load: Load, kind: str = "ab") -> Path:
    return runs_dir() / new_run_id(f"{kind}_{load.name}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def compare_sides(load: Load, sides: Sequence[Side], options: Options, out: Path,
                  echo: Echo = print) -> dict:
    """The rounds, judged after each, on sides already open; writes ab.json after every round
    and the figure and report at the end. Returns the ab document."""
    by = {s.name: s for s in sides}
    out.mkdir(parents=True, exist_ok=True)
    started, clock = _now(), time.monotonic()
    doc: dict = {"schema_version": SCHEMA_VERSION, "kind": "ab", "ab_id": out.name,
                 "load": load.facts(), "label": load.label(), "started_at": started,
                 "sides": {s.name: s.facts() for s in sides},
                 "options": {"round_s": options.round_s, "warmup_s": options.warmup_s,
                             "max_rounds": options.max_rounds, "budget_s": options.budget_s,
                             "judged": list(options.judged)},
                 "rule": options.rule(), "placement": None, "warmup": {}, "rounds": [],
                 "rows": [], "verdict": "insufficient data", "stopped": None, "error": None}
    records: dict[str, list[dict]] = {"A": [], "B": []}

    def save(stopped: str | None = None) -> None:
        rows = judge_rounds(doc["rounds"], options)
        doc["verdict"] = stats.overall(r["verdict"] for r in rows) if rows else \
            "insufficient data"
        if stopped is not None and doc["verdict"] not in paired.SETTLED:
            rows = settle_rows(rows, options)
        doc["rows"] = [_json_row(r) for r in rows]
        doc["verdict_text"] = verdict_text(doc["verdict"], rows, len(doc["rounds"]), options)
        doc["stopped"], doc["ended_at"] = stopped, _now()
        doc["seconds"] = round(time.monotonic() - clock, 1)
        ratios = calibration.judge(records["A"], records["B"])[0] \
            if records["A"] and records["B"] else {}
        doc["calibration"] = {"A": calibration.describe(records["A"]) if records["A"] else "",
                              "B": calibration.describe(records["B"]) if records["B"] else "",
                              "ratios": ratios}
        doc["invalid_runs"] = {s: sum(1 for r in doc["rounds"] if r[s]["valid"] is False)
                               for s in ("A", "B")}
        jsonio.write_json(out / AB_FILE, doc)

    def one(name: str, label: str, seconds: float) -> dict:
        folder = out / f"{label}_{secrets.token_hex(4)}"
        echo(f"[ab] {label}: {by[name].named}, {seconds:g} s")
        return measure(load, by[name], folder, seconds)

    stopped, error = None, None
    with placed(sides) as placement:
        doc["placement"] = placement
        if placement["target_cores"]:
            echo(f"[ab] driver on core {placement['driver_core']}, targets on core(s) "
                 f"{', '.join(map(str, placement['target_cores']))}")
        try:
            if options.warmup_s > 0:
                for name in ("A", "B"):
                    doc["warmup"][name] = one(name, f"warmup{name}", options.warmup_s)["run_id"]
            last_round_s = 0.0
            for k, pair in enumerate(paired.abba_order(options.max_rounds), start=1):
                spent = time.monotonic() - clock
                if options.budget_s is not None and k > 1 and \
                        spent + last_round_s > options.budget_s:
                    stopped = "budget"
                    break
                began = time.monotonic()
                entry: dict = {"round": k, "order": "".join(pair)}
                for name in pair:
                    rec = one(name, f"{k:02d}{name}", options.round_s)
                    records[name].append(rec)
                    entry[name] = run_values(rec)
                doc["rounds"].append(entry)
                last_round_s = time.monotonic() - began
                save()
                echo(round_line(doc, k, options))
                if paired.settled(r["verdict"] for r in doc["rows"]):
                    stopped = "settled"
                    break
            else:
                stopped = "max rounds"
        except KeyboardInterrupt:
            stopped = "interrupted"
            raise
        except Exception as exc:
            stopped = "failed"
            error = str(exc) if isinstance(exc, WorkbenchError) else \
                f"{type(exc).__name__}: {exc}"
            raise
        finally:
            doc["error"] = error
            save(stopped or "failed")
            write_outputs(out, doc)
    return doc


def round_line(doc: Mapping, k: int, options: Options) -> str:
    """After round k: both sides' percentiles of the first endpoint, and the verdict so far."""
    entry = doc["rounds"][-1]
    endpoint = doc["rows"][0]["endpoint"] if doc["rows"] else None

    def side(name: str) -> str:
        e = entry[name]["endpoints"].get(endpoint) or {}
        cells = " ".join(f"{s} {view.number(e.get(s))}" for s in STATS)
        return f"{name} {cells} ms" + ("" if entry[name]["valid"] is not False else " (invalid)")

    return (f"[ab] round {k}/{options.max_rounds} ({entry['order']}) {endpoint}: {side('A')}"
            f" · {side('B')} -> {doc['verdict']}")


def run_ab(load: Load, a: str, b: str, options: Options, src: str | Path | None = None,
           out: Path | None = None, state: Path | None = None, echo: Echo = print) -> dict:
    """``workbench ab``: check the input, build, start and check both sides, run the rounds,
    stop what was started. Returns the ab document (``<out>/ab.json``)."""
    options.check()
    load.check(options.round_s)
    named = {"A": a, "B": b}
    made = builds(named, src, state, echo)
    with holding([INSTANCES[name] for name in made], state):
        sides = open_sides(load, named, made, options, state, echo)
        try:
            return compare_sides(load, sides, options, out or new_dir(load), echo)
        finally:
            close_sides(sides, state)


# --- reporting ---------------------------------------------------------------------------------


def rows_table(doc: Mapping):
    """The judged rows as a table: endpoint, percentile, A and B (median of runs), B/A with its
    interval, p, pairs, the rounds set aside as disturbed, verdict, what would settle it."""
    import pandas as pd

    columns = ["endpoint", "stat", "a_ms", "b_ms", "ratio", "ci_low", "ci_high", "p_value",
               "pairs", "set_aside", "verdict", "to_settle"]
    frame = pd.DataFrame(doc["rows"], columns=columns)
    frame["set_aside"] = [", ".join(map(str, r)) if isinstance(r, list) else ""
                          for r in frame["set_aside"]]
    return frame.rename(columns={"set_aside": "set aside", "a_ms": "A ms", "b_ms": "B ms",
                                 "ratio": "B/A",
                                 "ci_low": "B/A_lo", "ci_high": "B/A_hi", "p_value": "p",
                                 "to_settle": "to settle"}).set_index(["endpoint", "stat"])


def runs_table(doc: Mapping):
    """Every run: round, order, side, its p50/p95/p99 of the first endpoint, validity and
    calibration, and its folder."""
    import pandas as pd

    endpoint = doc["rows"][0]["endpoint"] if doc["rows"] else None
    rows = []
    for entry in doc["rounds"]:
        for name in entry["order"]:
            v = entry[name]
            e = v["endpoints"].get(endpoint) or {}
            rows.append({"round": entry["round"], "side": name, **{s: e.get(s) for s in STATS},
                         "valid": v["valid"], "why invalid": "; ".join(v["invalid_reasons"]),
                         "calibration": v["calibration"], "run": v["run_id"]})
    return pd.DataFrame(rows).set_index(["round", "side"]) if rows else pd.DataFrame()


def text(doc: Mapping) -> str:
    """The comparison for the terminal: sides, rule, verdict, the rows, what would settle."""
    lines = [f"ab {doc['label']}: {doc['verdict_text']}"]
    for name in ("A", "B"):
        s = doc["sides"][name]
        lines.append(f"  {name}: {s['named']} = {s['kind']} {s['version']} (commit "
                     f"{(s['commit'] or 'unknown')[:12]}) at {s['url']}")
    rounds = len(doc["rounds"])
    lines.append(f"  {rounds} round{'s' if rounds != 1 else ''} of {doc['options']['round_s']:g} "
                 f"s a run, stopped: {doc['stopped']}, {doc['seconds']:.0f} s in all"
                 + (f"; invalid runs A {doc['invalid_runs']['A']}, B "
                    f"{doc['invalid_runs']['B']}" if any(doc["invalid_runs"].values()) else ""))
    lines.append(f"  rule: {doc['rule']['text']}")
    if doc.get("error"):
        lines.append(f"  error: {doc['error']}")
    table = rows_table(doc)
    if len(table):
        shown = table.copy()
        for col in ("A ms", "B ms"):
            shown[col] = shown[col].map(view.number)
        shown["B/A"] = [f"{r:.3f} [{lo:.3f}, {hi:.3f}]" if _finite(lo) else
                        (f"{r:.3f}" if _finite(r) else "") for r, lo, hi in
                        zip(table["B/A"], table["B/A_lo"], table["B/A_hi"], strict=True)]
        shown["p"] = table["p"].map(lambda v: f"{v:.2g}" if _finite(v) else "")
        lines += ["", shown[["A ms", "B ms", "B/A", "p", "pairs", "set aside",
                             "verdict"]].to_string()]
        settle = [(i, t) for i, t in table["to settle"].items() if t]
        if settle and doc["verdict"] not in paired.SETTLED:
            lines += ["", "to settle:"] + [f"  {e} {s}: {t}" for (e, s), t in settle]
    return "\n".join(lines)


def verdict_html(doc: Mapping) -> str:
    colour = {"slower": view.FAIL, "faster": view.PASS, "no change": view.PASS
              }.get(doc["verdict"], view.WARN)
    facts = [f"{name}: {doc['sides'][name]['named']} = {doc['sides'][name]['kind']} "
             f"{doc['sides'][name]['version']} (commit "
             f"{(doc['sides'][name]['commit'] or 'unknown')[:12]}) at "
             f"{doc['sides'][name]['url']}" for name in ("A", "B")]
    facts.append(f"Load: {doc['label']}, {doc['options']['round_s']:g} s a run; "
                 f"{len(doc['rounds'])} rounds in ABBA order, stopped: {doc['stopped']} "
                 f"({doc['seconds']:.0f} s in all)")
    invalid = doc.get("invalid_runs") or {}
    if any(invalid.values()):
        facts.append(f"Invalid runs (the driver was late or short; see the runs): A "
                     f"{invalid['A']}, B {invalid['B']}")
    cal = doc.get("calibration") or {}
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in (cal.get("ratios") or {}).items())
    facts.append(f"Machine calibration: A {cal.get('A') or '–'}; B {cal.get('B') or '–'}"
                 + (f"; B/A {ratios}" if ratios else ""))
    placement = doc.get("placement") or {}
    if placement.get("target_cores"):
        facts.append(f"Placement: driver on core {placement['driver_core']}, "
                     f"{', '.join(placement['placed'])} on core(s) "
                     f"{', '.join(map(str, placement['target_cores']))}")
    facts += [f"Placement: {n}" for n in placement.get("notes") or []]
    facts.append(f"Rule: {doc['rule']['text']}")
    if doc.get("error"):
        facts.append(f"Error: {doc['error']}")
    import html

    return (f'<div class="workbench-verdict" style="border-left:6px solid {colour};'
            'padding:0.4em 1em;margin:0.5em 0 1em 0">'
            f'<h2 style="margin:0.2em 0">{view.coloured(doc["verdict_text"], colour)}</h2>'
            "<p>" + "<br>".join(html.escape(f) for f in facts) + "</p></div>")


def write_outputs(out: Path, doc: Mapping) -> None:
    """``rounds.png`` and ``report.html`` from the document."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.report import plots

    fig = plots.ab_rounds(doc)
    fig.savefig(out / FIGURE_FILE, dpi=110)
    sections = [view.Section("", verdict_html(doc)),
                view.Section("Per-round p50, p95 and p99 of A and B", view.figure_html(fig)),
                view.Section("Verdict per endpoint and percentile (B/A over the pairs)",
                               view.frame_html(rows_table(doc))),
                view.Section("Runs, in the order they ran", view.frame_html(runs_table(doc)))]
    plt.close(fig)
    jsonio.write_text(out / REPORT_FILE, view.page(f"workbench ab: {doc['label']}", sections))
