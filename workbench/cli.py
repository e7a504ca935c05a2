"""``workbench`` command line: target, run, seed, drive, baseline, compare, import-k6, notebooks.

Every value is parsed by a typed parser (:mod:`workbench.argtypes`) and every rule between
options is checked by the command's ``check_*`` function, before any heavy import, target start
or load: bad input is one ``error:`` line and exit 2. Exit codes come from
:mod:`workbench.exitcodes` only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from workbench import argtypes, exitcodes
from workbench.errors import WorkbenchError
from workbench.paths import project_root, runs_dir


@dataclass
class Outcome:
    """What a command ends with: its exit code and, for ``--json``, the object to print."""

    code: int
    summary: dict | None = None


class Parser(argparse.ArgumentParser):
    """argparse, with a refusal as one ``error:`` line (no usage block) and exit 2, and an
    epilog that may be computed only when help is shown (``lazy_epilog``)."""

    lazy_epilog: Callable[[], str] | None = None

    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.BAD_INPUT, f"error: {one_line(message)} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def one_line(text: str) -> str:
    """``text`` on one line: an error is one line on the terminal and in a CI log."""
    return " ".join(str(text).split())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("certctl-workbench")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: the installed version, looked up only when asked (importlib.metadata
    scans every installed package: 20-30 ms of every command otherwise)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and exit"):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(f"{parser.prog} {_version()}\n", sys.stdout)
        parser.exit()


# --- target ---------------------------------------------------------------------------------


def cmd_target(args) -> int:
    from workbench.target import connectors, embedded

    certctl_only = [flag for flag, given in (("--keygen-mode", args.keygen_mode),
                                             ("--certctl-env", args.certctl_env)) if given]
    if args.action != "up" and (args.certctl or args.certctl_bin or certctl_only):
        raise WorkbenchError(f"{(certctl_only or ['--certctl'])[0]} goes with `workbench target "
                             "up --certctl PATH` (or --certctl-bin FILE)")
    if args.action == "up":
        if args.certctl or args.certctl_bin:
            _target_up_certctl(args)
        elif certctl_only:
            raise WorkbenchError(f"{certctl_only[0]} goes with `workbench target up --certctl "
                                 "PATH` (or --certctl-bin FILE)")
        else:
            info = embedded.up(port=args.port)
            print(f"stand-in certctl at {info.url} (CA file {info.ca_file}); database {info.dsn}")
        if args.connectors:
            connectors.print_up(connectors.up(first_port=args.port + 1))
    elif args.action == "down":
        connectors.down()
        embedded.down()
        print("stopped every server the workbench started and PostgreSQL (data and builds kept)")
    else:
        state = embedded.status()
        for server in ([state] if state["kind"] else []) + state["instances"]:
            print(_server_line(server))
        if not state["kind"]:
            print("no current target (start one: workbench target up [--certctl PATH])")
        print(json.dumps(state | {"connectors": connectors.status()}, indent=1, default=str))
    return exitcodes.PASSED


def _server_line(server: dict) -> str:
    """One line naming a server the workbench started: kind, build, where, pid, database."""
    build = (f" {server['version']} (commit {(server['commit'] or 'unknown')[:12]}"
             f"{', modified' if server['modified'] else ''})" if server["kind"] == "certctl"
             else "")
    health = "ready" if server["ready"] else ("not ready" if server["alive"] else "not running")
    return (f"{server['name']}: {server['kind']}{build} at {server['url']}, pid {server['pid']}"
            f" ({health}), database {server['database']}")


def _target_up_certctl(args) -> int:
    """``target up --certctl PATH``: build (cached per commit) and run certctl as the target."""
    import time

    from workbench.target import certctl

    if args.certctl and args.certctl_bin:
        raise WorkbenchError("--certctl PATH builds from a checkout, --certctl-bin FILE runs a "
                             "built server: give one")
    env = _certctl_env(args.certctl_env)
    echo = lambda line: print(line, flush=True)  # noqa: E731
    started = time.monotonic()
    made = certctl.build(args.certctl, echo=echo) if args.certctl else \
        certctl.from_binary(args.certctl_bin)
    if made.cached and args.certctl:
        echo(f"cached build {made.key[:12]} ({made.version})")
    info = certctl.up(made, port=args.port, keygen_mode=args.keygen_mode or "agent", env=env,
                      echo=echo)
    identity = info.identity or {}
    print(f"certctl {identity.get('version', made.version)} (commit "
          f"{(identity.get('commit') or made.commit or 'unknown')[:12]}) at {info.url} (CA file "
          f"{info.ca_file}); database {info.database}; log {info.log_file}; "
          f"up in {time.monotonic() - started:.1f} s")
    return 0


def _certctl_env(items: list[str]) -> dict[str, str]:
    """``--certctl-env NAME=VALUE`` options as a mapping."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise WorkbenchError(f"--certctl-env {item!r}: write NAME=VALUE, e.g. "
                                 "CERTCTL_RATE_LIMIT_ENABLED=true")
        env[name] = value
    return env


# --- run and seed -----------------------------------------------------------------------------


def run_summary(run_dir: Path) -> dict:
    """A run's outcome as data: counts, load, latency, lag, validity, thresholds, target and
    where its files are. ``--json`` prints it; :func:`print_summary` words it."""
    from workbench.driver.result import RESULT_FILE, load_result
    from workbench.report.record import RECORD_FILE

    summary: dict = {"run_dir": str(run_dir), "result": None, "record": None, "report": None}
    if not (run_dir / RESULT_FILE).exists():
        return summary
    from workbench.compare.baseline import load_record
    from workbench.telemetry import read_sidecar

    r = load_result(run_dir)
    if r.get("scenario") == "adhoc":  # no scenario to warn: its registry (SQLAlchemy) not loaded
        warnings = []
    else:
        from workbench.scenarios import result_warnings

        warnings = result_warnings(r)
    summary |= {k: r[k] for k in ("scenario", "status", "scheduled", "completed", "failed",
                                  "dropped", "offered_rate", "achieved_rate", "error_rate",
                                  "latency_ms", "schedule_lag_ms", "valid", "invalid_reasons")}
    summary |= {"result": str(run_dir / RESULT_FILE), "vus": r["driver"]["vus"],
                "driver_cpu_fraction": r["driver"]["cpu_fraction"],
                "warnings": warnings, "telemetry": read_sidecar(run_dir)}
    if (run_dir / RECORD_FILE).exists():
        record = load_record(run_dir / RECORD_FILE)
        summary |= {"record": str(run_dir / RECORD_FILE), "passed": record["passed"],
                    "thresholds": record["thresholds"],
                    "target": {k: record["target"][k] for k in ("kind", "version", "commit")}}
    if (run_dir / "report.html").exists():
        summary["report"] = str(run_dir / "report.html")
    return summary


def print_summary(run_dir: Path | dict) -> None:
    """The run's outcome in a few lines (:func:`run_summary`, worded)."""
    s = run_summary(run_dir) if isinstance(run_dir, Path) else run_dir
    if s["result"] is None:
        print(f"no result in {s['run_dir']}")
        return
    lat, lag = s["latency_ms"], s["schedule_lag_ms"]
    print(f"\n{s['scenario']}: {s['status']}, {s['scheduled']} scheduled = {s['completed']} "
          f"completed + {s['failed']} failed + {s['dropped']} dropped")
    offered = (f"offered {s['offered_rate']:.1f} req/s" if s["offered_rate"] is not None
               else f"closed loop, {s['vus']} VUs")
    print(f"  {offered}, achieved {s['achieved_rate']:.1f} req/s,"
          f" error rate {s['error_rate'] or 0:.4f}")
    if lat["p50"] is not None:
        print(f"  latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p95 {lat['p95']:.2f}"
              f"  p99 {lat['p99']:.2f}  max {lat['max']:.2f}")
    if lag["p50"] is not None:
        print(f"  schedule lag ms: p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f};"
              f" driver CPU {s['driver_cpu_fraction']:.0%}")
    for warning in s["warnings"]:
        print(f"  warning: {warning}")
    print(f"  valid: {s['valid']}" + (f" ({'; '.join(s['invalid_reasons'])})"
                                       if s["invalid_reasons"] else ""))
    if s["record"]:
        for t in s["thresholds"]:
            print(f"  {'PASS' if t['ok'] else 'FAIL'} {t['metric']} {t['threshold']}"
                  f" (measured {t['value']:.4g})" if t["value"] is not None else
                  f"  FAIL {t['metric']} {t['threshold']} (no samples)")
        target = s["target"]
        print(f"  target: {target['kind']} {target['version']} commit {target['commit']}")
    _print_telemetry(s["telemetry"])
    if s["report"]:
        print(f"  report: {s['report']}")
    if s["record"]:
        print(f"  record: {s['record']}  (commit it: workbench baseline commit {s['run_dir']})")


def _print_telemetry(sidecar: dict | None) -> None:
    """One line: the telemetry's status and samples per source (or why a source was off)."""
    if sidecar is None:
        print("  telemetry: none sampled")
        return
    sources = ", ".join(f"{name} {s['samples']}" if s.get("enabled") else f"{name} off"
                        for name, s in (sidecar.get("sources") or {}).items())
    print(f"  telemetry ({sidecar.get('status')}): samples {sources}")


def _capacity_given(args) -> dict:
    """The --find-capacity flags given on the command line, as SearchOptions fields."""
    given = {field: getattr(args, dest) for field, dest in SEARCH_FLAGS.items()}
    return {k: v for k, v in given.items() if v is not None}


# SearchOptions field -> the --find-capacity flag (its argparse dest) that sets it
SEARCH_FLAGS = {"start": "start", "ceiling": "ceiling", "growth": "growth",
                "step_s": "step_duration", "tolerance": "tolerance", "max_steps": "max_steps",
                "repeats": "repeats", "max_step_s": "longest_step",
                "searches": "repeat_search"}


def _check_capacity_flags(args, shards: bool = False) -> None:
    """A capacity flag without --find-capacity would be silently ignored: refuse it
    (``shards``: ``run``'s --shards counts too; ``drive`` takes it for any run)."""
    if args.find_capacity:
        return
    given = [f"--{SEARCH_FLAGS[k].replace('_', '-')}" for k in _capacity_given(args)]
    given += ["--auto-shard"] * bool(args.auto_shard)
    given += ["--shards"] * (shards and getattr(args, "shards", None) is not None)
    if given:
        flags = ", ".join(given)
        raise WorkbenchError(f"{flags}: only with --find-capacity; add it, or drop "
                             f"{'them' if ',' in flags else 'it'}")


def check_run(args) -> dict:
    """Every rule of ``workbench run`` that needs no target: the scenario, profile, each -p
    value, thresholds, sizes and the options that exclude each other. Returns the overrides."""
    from workbench import scenarios
    from workbench.analyse import thresholds

    overrides = {name: argtypes.param_value(name, value) for name, value in args.param}
    _check_capacity_flags(args, shards=True)
    if args.fixture_sizes and args.find_capacity:
        raise WorkbenchError("--fixture-sizes and --find-capacity are separate runs; choose one")
    if args.scenario == "all":
        if args.fixture_sizes:
            raise WorkbenchError("--fixture-sizes sweeps one scenario; name it instead of all")
        if args.find_capacity:
            raise WorkbenchError("--find-capacity searches one scenario at a time; name it")
        for name, own in scenarios.plan_all(overrides, scenarios.names()).items():
            scenarios.get(name).params_for(args.profile, own)
        return overrides
    spec = scenarios.get(args.scenario)
    if "thresholds" in overrides:
        thresholds.parse_thresholds(overrides["thresholds"])
    params = {k: v for k, v in overrides.items() if k != "thresholds"}
    if args.fixture_sizes:
        scenarios.plan_sizes(args.scenario, args.profile, args.fixture_sizes, params)
    else:
        spec.params_for(args.profile, params)
    if args.target_pid is not None:
        import psutil

        if not psutil.pid_exists(args.target_pid):
            raise WorkbenchError(f"--target-pid {args.target_pid}: no such process on this "
                                 "machine; pass the pid of the target's server process (e.g. "
                                 "pgrep certctl-server)")
    if args.scrape and args.find_capacity:
        raise WorkbenchError("--scrape adds to a run's telemetry and a capacity search samples "
                             "none: drop --scrape, or run the scenario at one load")
    if args.scrape:
        from workbench.telemetry import prometheus

        prometheus.parse_options(args.scrape)
    return overrides


def cmd_run(args) -> Outcome:
    """One scenario's notebook through papermill, or every scenario with one combined report,
    in one kernel started as soon as the input is checked: its imports overlap this process's
    and the preflight."""
    overrides = check_run(args)
    from workbench.run import kernel
    from workbench.seed import ALLOW_REMOTE_ENV  # imported by the checks already

    # the kernel reads these from its environment (a parameter would change every notebook)
    if args.allow_remote_db:
        os.environ[ALLOW_REMOTE_ENV] = "1"
    if args.target_pid is not None:
        os.environ[kernel.TARGET_PID_ENV] = str(args.target_pid)
    if args.scrape:
        from workbench.telemetry import prometheus

        prometheus.to_env(args.scrape)
    preload = kernel.CAPACITY_PRELOAD if args.find_capacity else kernel.PRELOAD
    with kernel.for_terminal(preload) as notebook_kernel:
        return _run(args, overrides, notebook_kernel)


def _run(args, overrides: dict, notebook_kernel) -> Outcome:
    from workbench.run import launcher

    if args.fixture_sizes:
        return _run_sweep(args, overrides, notebook_kernel)
    if args.find_capacity:
        return _run_capacity(args, overrides, notebook_kernel)
    if args.scenario == "all":
        from workbench.run import suite

        suite_dir, code = suite.run_all(args.profile, args.target, args.ca_file, args.insecure,
                                        overrides, strict=args.strict,
                                        notebook_kernel=notebook_kernel)
        suite.print_summary(suite_dir)
        return Outcome(code, {"suite_dir": str(suite_dir)} | _read_json(suite_dir /
                                                                         "summary.json"))
    run_dir, code = launcher.execute(args.scenario, args.profile, args.target, args.ca_file,
                                     args.insecure, overrides, strict=args.strict,
                                     kernel=notebook_kernel)
    summary = run_summary(run_dir)
    print_summary(summary)
    return Outcome(code, summary)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_sweep(args, overrides: dict, notebook_kernel) -> Outcome:
    """``--fixture-sizes``: the scenario once per size, then latency against size."""
    from workbench.run import sweep

    sweep_dir, code = sweep.run_sweep(args.scenario, args.profile, args.fixture_sizes,
                                      args.target, args.ca_file, args.insecure, overrides,
                                      strict=args.strict, notebook_kernel=notebook_kernel)
    sweep.print_summary(sweep_dir)
    return Outcome(code, {"sweep_dir": str(sweep_dir)} | _read_json(sweep_dir / sweep.SWEEP_FILE))


def _run_capacity(args, overrides: dict, notebook_kernel) -> Outcome:
    """``run SCENARIO --find-capacity``: the capacity notebook through papermill."""
    from workbench.run import launcher

    driver = {"shards": args.shards, "auto_shard": args.auto_shard or None}
    run_dir, code, conclusion = launcher.execute_capacity(
        args.scenario, args.profile, args.target, args.ca_file, args.insecure, overrides,
        _capacity_given(args) | {k: v for k, v in driver.items() if v is not None},
        strict=args.strict, notebook_kernel=notebook_kernel)
    if conclusion:
        print(conclusion)
    print(f"  capacity.json: {run_dir / 'capacity.json'}")
    print(f"  report: {run_dir / 'report.html'}")
    return Outcome(code, {"run_dir": str(run_dir)} | _read_json(run_dir / "capacity.json"))


def cmd_seed(args) -> int:
    """Seed one scenario's fixture at ``--size`` rows (idempotent: a reseed leaves that many)."""
    from workbench import scenarios

    spec = scenarios.get(args.scenario)
    if spec.size_param is None:
        sized = ", ".join(n for n in scenarios.names() if scenarios.get(n).size_param)
        raise WorkbenchError(f"{spec.name} has no sized fixture; scenarios with one: {sized}")
    spec.params_for(args.profile, {spec.size_param: args.size})  # bad size: refused, no write
    from workbench import seed
    from workbench.target import preflight

    if args.allow_remote_db:
        os.environ[seed.ALLOW_REMOTE_ENV] = "1"
    target = preflight.resolve_target(args.target, None, False)
    if not target.dsn:
        raise WorkbenchError(f"no database to seed: export {preflight.DSN_ENV}=<DSN> for the "
                             "target's database")
    preflight.check_database(target, parents="fixture_parents" in spec.traps)
    seeded = spec.seed_size(target.dsn, args.size, args.profile)
    counts = ", ".join(f"{k} {v:,}" for k, v in seeded.items()
                       if k not in ("fixture", "seconds", spec.size_param) and isinstance(v, int))
    print(f"seeded {spec.name} ({seeded.get('fixture')}, {spec.size_param}={args.size:,}): "
          f"{counts} in {seeded.get('seconds', 0):.1f} s")
    return exitcodes.PASSED


# --- drive ----------------------------------------------------------------------------------


def check_drive(args):
    """Every rule of ``workbench drive`` that needs no target; returns the DriveSpec of its
    first (or only) run, validated, and the parsed thresholds."""
    from workbench.analyse import thresholds

    _check_capacity_flags(args)
    if args.find_capacity:
        if not args.threshold:
            raise WorkbenchError("--find-capacity needs at least one --threshold to judge each "
                                 "step by, e.g. --threshold 'p(99)<200'")
        if args.rate is not None or args.duration is not None:
            raise WorkbenchError("--find-capacity chooses each step's rate and duration; use "
                                 "--start/--ceiling/--step-duration instead of "
                                 "--rate/--duration")
    else:
        missing = [flag for flag, value in (("--rate", args.rate),
                                            ("--duration", args.duration)) if value is None]
        if missing:
            raise WorkbenchError(f"drive needs {' and '.join(missing)} (or --find-capacity to "
                                 "search for the highest rate that passes)")
    try:
        parsed = thresholds.threshold_options(args.threshold)
        thresholds.parse_thresholds(parsed)
    except WorkbenchError as exc:
        raise WorkbenchError(f"--threshold: {exc}") from None
    first_rate = args.rate if not args.find_capacity else (args.start or DRIVE_CAPACITY_START)
    spec = _drive_spec(args, first_rate, args.duration or args.step_duration or 1.0)
    spec.validate()
    return spec, parsed


def _drive_spec(args, rate: float, duration_s: float):
    """The DriveSpec of ``workbench drive``'s arguments at one rate and duration."""
    from urllib.parse import urlsplit

    from workbench import driver
    from workbench.driver.spec import is_secret_header
    from workbench.target import preflight

    parts = urlsplit(args.url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if args.cluster and any(is_secret_header(name) for name, _ in args.header):
        raise WorkbenchError("a secret header (Authorization, Cookie, ...) cannot go to Dask "
                             "workers yet: spec.json never holds it; drop --cluster")
    # The target `workbench target up` started, when the URL is on it: its CA and token
    target = preflight.target_at(base, args.ca_file, args.insecure)
    if args.send_token:  # an ad-hoc URL gets the token only when the user says so
        token = preflight.token_for(target)
        if target.started is not None:  # the driver processes read it from the environment
            os.environ[preflight.TOKEN_ENV] = token
    return driver.DriveSpec(
        base_url=base, templates=(driver.RequestTemplate(args.method, path, "adhoc",
                                                          args.body, tuple(args.header)),),
        rate=rate, duration_s=duration_s, max_vus=args.vus, timeout_s=args.timeout,
        ca_file=target.ca_file, insecure=args.insecure,
        token_env=preflight.TOKEN_ENV if args.send_token else None, scenario="adhoc",
        protocol=args.protocol, connection_per_client=args.connection_per_client)


def cmd_drive(args) -> Outcome:
    """Ad-hoc open-loop load on one URL; writes requests.parquet and result.json like a run,
    then record.json, the exports and report.html, judged by any --threshold."""
    spec, thresholds = check_drive(args)
    if args.find_capacity:
        return _drive_capacity(args, spec)
    from workbench import driver
    from workbench.driver.launch import LiveLine
    from workbench.report import calibration

    out = args.out or runs_dir() / f"adhoc_{secrets.token_hex(4)}"
    live = LiveLine()
    before: dict = {}  # the machine, read at the start line (the driver idle) and after the load

    try:
        driver.drive(spec, out, echo=live, shards=args.shards, cluster=args.cluster,
                     while_starting=_import_report_path,
                     when_ready=lambda: before.update(calibration.measure()))
    except KeyboardInterrupt:
        live.close()
        # the driver flushed what it recorded
        _record_drive(out, spec, thresholds, calibration.section(before or None, None))
        print_summary(out)
        raise
    live.close()
    passed = _record_drive(out, spec, thresholds,
                           calibration.section(before, calibration.measure()))
    summary = run_summary(out)
    print_summary(summary)
    code = exitcodes.FAILED if passed is None else exitcodes.verdict(passed)
    return Outcome(code, summary)


def _import_report_path() -> None:
    """What the record and report of a drive import (pandas, the analysis, Matplotlib: 0.5-1 s),
    imported while the driver's processes start, before the load: that time is spent anyway."""
    import workbench.report.plots  # noqa: F401
    import workbench.run.adhoc  # noqa: F401


def _record_drive(out: Path, spec, thresholds: dict[str, list[str]],
                  calibration: dict | None = None) -> bool | None:
    """record.json, the exports and report.html of a drive; whether its thresholds held.
    A drive that left no result records nothing (None; the error above says why)."""
    from workbench.driver.result import RESULT_FILE
    from workbench.run import adhoc

    if not (out / RESULT_FILE).exists():
        return None
    return bool(adhoc.finish(out, spec, thresholds, calibration)["passed"])


DRIVE_CAPACITY_START, DRIVE_CAPACITY_CEILING = 10.0, 10_000.0  # req/s, unless given


def _drive_capacity(args, spec) -> Outcome:
    """``drive URL --find-capacity``: steps of rising rate, bisected; capacity.json + figures."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from workbench.capacity import runner
    from workbench.capacity.search import RATE, SearchOptions

    thresholds = runner.parse_threshold_options(args.threshold)
    options = SearchOptions(**({"start": DRIVE_CAPACITY_START, "ceiling": DRIVE_CAPACITY_CEILING}
                               | _capacity_given(args)), unit=RATE)
    options.validate()
    spec = replace(spec, rate=options.start, duration_s=options.step_s)
    out = args.out or runs_dir() / f"capacity_{secrets.token_hex(4)}"
    context = {"kind": "adhoc", "target_url": args.url, "method": args.method,
               "thresholds": list(args.threshold), "max_error_rate": args.max_error_rate,
               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    result = runner.search_steps(
        spec, out, thresholds, options, max_error_rate=args.max_error_rate, context=context,
        echo=lambda line: print(line, file=sys.stderr, flush=True), shards=args.shards,
        auto_shard=args.auto_shard)
    print(result.sentence())
    if result.spread_line():
        print(result.spread_line())
    print(f"  capacity.json: {out / 'capacity.json'}; figures: "
          f"{', '.join(str(out / f) for f in runner.FIGURES)}")
    return Outcome(runner.exit_code(result.verdict),
                   {"run_dir": str(out)} | _read_json(out / "capacity.json"))


# --- baselines, compare, k6, notebooks ------------------------------------------------------


def cmd_baseline_commit(args) -> int:
    from workbench.compare import baseline

    root = project_root()
    dest = baseline.commit(Path(args.run_dir), root, force=args.force)
    print(f"committed {dest.relative_to(root)} (not pushed)")
    return exitcodes.PASSED


def cmd_baseline_render(args) -> int:
    from workbench.compare import baseline

    root = project_root()
    if args.check:
        if not baseline.render(root, check=True):
            print("baselines/README.md is stale; run `workbench baseline render`", file=sys.stderr)
            return exitcodes.FAILED
        print("baselines/README.md is up to date")
        return exitcodes.PASSED
    baseline.render(root)
    print("wrote baselines/README.md")
    return exitcodes.PASSED


def cmd_compare(args) -> Outcome:
    if args.vs:
        a, b = args.paths, args.vs
    elif len(args.paths) == 2:
        a, b = args.paths[:1], args.paths[1:]
    else:
        raise WorkbenchError("compare takes two records (workbench compare A B) or two sets "
                             "(workbench compare A1 A2 ... --vs B1 B2 ...)")
    from workbench.compare import runs

    result = runs.compare_paths(a, b, factor=args.factor, alpha=args.alpha, force=args.force,
                                   n_boot=args.resamples,
                                   calibration_tolerance=args.calibration_tolerance)
    if not result.comparable and not args.force:
        print("calibration " + result.calibration_text().replace("\n", "\n" + " " * 12))
        raise WorkbenchError("not comparable: " + "; ".join(result.reasons)
                             + "; pass --force to compare anyway")
    print(result.text())
    slower = args.fail_on_slower and result.verdict == "slower"
    return Outcome(exitcodes.verdict(not slower), result.as_dict())


# --- ab and history (kept together: their options and commands) -------------------------------


def _ab_load(args):
    """The load of ``ab``/``history``: a scenario, or a path at ``--rate`` (drive-style)."""
    from workbench.compare import ab

    drive_only = [flag for flag, given in (
        ("--rate", args.rate is not None), ("--method", args.method is not None),
        ("--body", args.body is not None), ("--header", bool(args.header)),
        ("--send-token", args.send_token), ("--vus", args.vus is not None))
        if given]
    if not args.what.startswith("/"):
        if drive_only:
            raise WorkbenchError(f"{drive_only[0]} goes with a path to drive (workbench "
                                 f"{args.command} /path --rate R ...), not with a scenario")
        overrides = {name: argtypes.param_value(name, value) for name, value in args.param}
        return ab.Load(scenario=args.what, profile=args.profile, overrides=overrides)
    if args.param:
        raise WorkbenchError("-p sets a scenario's parameter; a path takes --rate, --method, "
                             "--header, --body")
    return ab.Load(path=args.what, rate=args.rate, method=args.method or "GET", body=args.body,
                   headers=tuple(args.header), send_token=args.send_token,
                   protocol=args.protocol, max_vus=args.vus or 200)


def _ab_options(args, run_s: float):
    from workbench.compare import ab

    return ab.Options(
        round_s=args.duration if args.duration is not None else run_s,
        warmup_s=args.warmup, max_rounds=args.max_rounds, budget_s=args.budget,
        factor=args.factor, alpha=args.alpha, judged=args.judge, port=args.port,
        certctl_env=_certctl_env(args.certctl_env), ca_file=args.ca_file,
        insecure=args.insecure)


def cmd_ab(args) -> Outcome:
    """Two targets interleaved in ABBA rounds, judged on the pairs, until settled."""
    from workbench.compare import ab

    load, options = _ab_load(args), _ab_options(args, ab.ROUND_S)
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    doc = ab.run_ab(load, args.a, args.b, options, src=args.certctl_src, out=args.out,
                    echo=echo)
    print(ab.text(doc))
    out = args.out or runs_dir() / doc["ab_id"]
    print(f"  ab.json: {out / ab.AB_FILE}\n  report: {out / ab.REPORT_FILE}")
    slower = args.fail_on_slower and doc["verdict"] == "slower"
    return Outcome(exitcodes.verdict(not slower), doc)


def cmd_history(args) -> Outcome:
    """The load at each commit of a range, or ``--bisect GOOD BAD``."""
    from workbench.compare import ab, history

    if args.bisect and args.steps:
        raise WorkbenchError("--steps thins a REV_RANGE; --bisect chooses its own commits")
    if (args.rev_range is None) == (args.bisect is None):
        raise WorkbenchError("history takes a REV_RANGE (e.g. v2.0.60..v2.0.71) or --bisect "
                             "GOOD BAD, one of them")
    if args.certctl_src is None:
        raise WorkbenchError("history builds certctl at each commit: pass --certctl-src PATH "
                             "(a git clone of certctl)")
    load = _ab_load(args)
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.bisect:
        options = _ab_options(args, ab.ROUND_S)
        doc = history.run_bisect(load, args.certctl_src, *args.bisect, options, out=args.out,
                                 echo=echo)
        folder = args.out or runs_dir() / doc["bisect_id"]
        print(doc["sentence"])
        print(f"  bisect.json: {folder / history.BISECT_FILE}\n  report: "
              f"{folder / history.REPORT_FILE}")
        return Outcome(exitcodes.PASSED if doc["answer"] else exitcodes.FAILED, doc)
    doc = history.run_history(load, args.certctl_src, args.rev_range,
                              _ab_options(args, history.RUN_S), out=args.out, echo=echo,
                              steps=args.steps)
    folder = args.out or runs_dir() / doc["history_id"]
    print(history.history_text(doc, folder))
    failed = any(row.get("error") for row in doc["commits"])
    return Outcome(exitcodes.FAILED if failed else exitcodes.PASSED, doc)


def add_ab_parsers(sub) -> None:
    """``ab`` and ``history``: their options in one place."""
    def common(p: argparse.ArgumentParser, run_help: str) -> None:
        p.add_argument("what", metavar="SCENARIO|PATH",
                       help="a scenario (agent_storm), or a URL path to drive at --rate "
                            "(/api/v1/health), as workbench drive does")
        p.add_argument("--certctl-src", metavar="PATH",
                       help="the certctl checkout certctl:REV targets are built from")
        p.add_argument("--profile", default="canonical",
                       help="the scenario's profile (default canonical; --duration sets each "
                            "run's length)")
        p.add_argument("-p", "--param", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="a scenario parameter over the profile's")
        p.add_argument("--duration", type=argtypes.duration(), metavar="DURATION",
                       help=run_help)
        p.add_argument("--warmup", type=argtypes.duration(zero=True), default=5.0,
                       metavar="DURATION",
                       help="one run per target before the first measured one, not judged "
                            "(default 5s; 0: none)")
        p.add_argument("--max-rounds", type=argtypes.number(int, minimum=3, maximum=1000),
                       default=16, help="most ABBA rounds (pairs) of an ab (default 16; at "
                                        "least 3)")
        p.add_argument("--budget", type=argtypes.duration(), metavar="DURATION",
                       help="start no round that would end later than this after the "
                            "first warm-up, the targets up (e.g. 10m)")
        p.add_argument("--factor", type=argtypes.number(above=1, maximum=100), default=1.10,
                       help="minimum B/A to call a change (default 1.10)")
        p.add_argument("--alpha", type=argtypes.number(above=0, below=1), default=0.002,
                       help="false-alarm rate of each row over all its looks (default 0.002)")
        p.add_argument("--judge", type=argtypes.choices_list(("p50", "p95", "p99")),
                       default=("p50", "p95", "p99"), metavar="PERCENTILES",
                       help="the percentiles judged and stopped on (default p50,p95,p99; "
                            "p50 alone when the tail is the machine's stalls)")
        p.add_argument("--port", type=argtypes.port,
                       help="first port of the certctl instances it runs (default: free ports)")
        p.add_argument("--certctl-env", action="append", default=[], metavar="NAME=VALUE",
                       help="a certctl variable over the benchmark profile, repeatable")
        p.add_argument("--ca-file", type=argtypes.ca_file,
                       help="CA certificate of a URL target's TLS")
        p.add_argument("--insecure", action="store_true", help="skip a URL target's TLS check")
        p.add_argument("--out", type=argtypes.new_folder,
                       help="output folder, new or empty (default: runs/<stamp>_<command>_...)")
        g = p.add_argument_group("a path at a rate (drive-style load)")
        g.add_argument("--rate", type=argtypes.rate, help="requests/s")
        g.add_argument("-m", "--method", type=str.upper, help="HTTP method (default GET)")
        g.add_argument("-d", "--body", type=argtypes.body,
                       help="request body, or @FILE to read it from a file")
        g.add_argument("-H", "--header", type=argtypes.header, action="append", default=[],
                       metavar="'NAME: VALUE'", help="a request header, repeatable")
        g.add_argument("--send-token", action="store_true",
                       help="send the target's API token (CERTCTL_TOKEN, or the key of a "
                            "certctl the workbench runs) as a Bearer token")
        g.add_argument("--protocol", choices=("h1", "h2"), default="h1")
        g.add_argument("--vus", type=argtypes.vus, help="max in-flight requests (default 200)")
        _json_option(p)

    a = sub.add_parser("ab", help="interleaved A/B of two targets on this host (ABBA rounds, "
                                  "judged on the pairs, stops once settled)")
    common(a, "length of each run (default 20s)")
    a.add_argument("--a", required=True, metavar="TARGET",
                   help="target A: a URL, or certctl:REV (built from --certctl-src)")
    a.add_argument("--b", required=True, metavar="TARGET", help="target B, as --a")
    a.add_argument("--fail-on-slower", action="store_true", help="exit 99 when B is slower")
    a.set_defaults(func=cmd_ab)

    h = sub.add_parser("history", help="a scenario at each commit of a certctl range, or "
                                       "--bisect GOOD BAD: the first commit ab says is slower")
    common(h, "length of each run (default 60s a commit; 20s a round with --bisect)")
    h.add_argument("rev_range", nargs="?", metavar="REV_RANGE",
                   help="git range of the checkout: A..B (the commits after A up to B)")
    h.add_argument("--steps", type=argtypes.number(int, minimum=1, maximum=10000),
                   help="at most this many commits of the range, evenly spaced, the last "
                        "included (asv's --steps)")
    h.add_argument("--bisect", nargs=2, metavar=("GOOD", "BAD"),
                   help="find the first commit after GOOD up to BAD that ab calls slower than "
                        "GOOD, in log2 steps")
    h.set_defaults(func=cmd_history)


def cmd_import_k6(args) -> int:
    from workbench.compare import k6import

    run_dir = k6import.import_summary(args.summary, args.scenario, machine=args.machine,
                                      commit=args.commit, version=args.target_version,
                                      started_at=args.started_at, target_kind=args.target_kind)
    print(f"imported {args.summary} as {run_dir}")
    print(f"  record: {run_dir / 'record.json'}  (commit it: workbench baseline commit "
          f"{run_dir})")
    return exitcodes.PASSED


def cmd_notebooks_render(args) -> int:
    """Write the scenario and capacity notebooks and README's scenario table."""
    from workbench.run import launcher

    stale = launcher.render_all(project_root(), check=args.check)
    names = ", ".join(str(path.relative_to(project_root())) for path in stale)
    if args.check:
        if stale:
            print(f"stale: {names}; run `workbench notebooks render`", file=sys.stderr)
            return exitcodes.FAILED
        print("notebooks and README's scenario table are up to date")
    else:
        print(f"wrote {names}" if stale else "nothing to write: all up to date")
    return exitcodes.PASSED


# --- the parser -----------------------------------------------------------------------------


def _run_epilog() -> str:
    """``run --help``'s list of scenarios, profiles and parameters, from the registry."""
    from workbench import scenarios

    width = max(len(n) for n in scenarios.names())
    lines = ["scenarios:"]
    lines += [f"  {n:<{width}}  {scenarios.get(n).title}" for n in scenarios.names()]
    lines += [f"  {'all':<{width}}  every scenario in turn: seed once, one combined report", "",
              "profiles:",
              "  smoke      a few seconds on small fixtures (the default; CI)",
              "  canonical  the scale tier's full run (minutes, full fixtures; baselines)", "",
              "parameters (-p NAME VALUE; seconds also as 30s, 5m, 250ms):"]
    for n in scenarios.names():
        lines += textwrap.wrap(", ".join(scenarios.get(n).takes + ("thresholds",)), width=78,
                               initial_indent=f"  {n:<{width}}  ",
                               subsequent_indent=" " * (width + 4))
    return "\n".join(lines)


def add_capacity_options(p: argparse.ArgumentParser, unit_hint: str = "req/s",
                         shards: bool = False) -> None:
    """The --find-capacity flags, shared by ``drive`` and ``run`` (``shards``: the flag too,
    for ``run``; ``drive`` has its own)."""
    g = p.add_argument_group("capacity search (--find-capacity)")
    g.add_argument("--find-capacity", action="store_true",
                   help="search for the highest load that passes: steps of rising load, then "
                        "bisection between the last passing and the first failing step")
    g.add_argument("--start", type=argtypes.rate,
                   help=f"first step's load ({unit_hint}; drive: 10, run: the profile's)")
    g.add_argument("--growth", type=argtypes.number(above=1),
                   help="each ramp step's load over the last's (default 2)")
    g.add_argument("--step-duration", type=argtypes.duration(),
                   help="load per step: 20s, 1m, or seconds (default 20)")
    g.add_argument("--ceiling", type=argtypes.rate,
                   help=f"highest load to try ({unit_hint}; drive: 10000, run: 64 x start)")
    g.add_argument("--tolerance", type=argtypes.number(above=0, below=1),
                   help="bisect until the bracket's ratio is within 1 + this (default 0.05)")
    g.add_argument("--max-steps", type=argtypes.number(int, minimum=2, maximum=1000),
                   help="most steps per search (default 32)")
    g.add_argument("--repeats", type=argtypes.number(int, minimum=1, maximum=100),
                   help="runs at the answer and at the load above it, the first included: the "
                        "answer must pass every one (default 3)")
    g.add_argument("--longest-step", type=argtypes.duration(),
                   help="when the load above the answer passes in some repeats, the repeats "
                        "run again with doubled steps up to this long (default 4 x "
                        "--step-duration)")
    g.add_argument("--repeat-search", type=argtypes.number(int, minimum=1, maximum=100),
                   help="run the whole search this many times; report the median answer and "
                        "the range (default 1)")
    g.add_argument("--auto-shard", action="store_true",
                   help="when the driver is the limit, run the step again with twice the "
                        "driver processes (up to one per core, less one for a target on this "
                        "host) and go on")
    if shards:
        g.add_argument("--shards", type=argtypes.number(int, minimum=1,
                                                        maximum=argtypes.MAX_SHARDS),
                       help="driver processes per step (default: as many as the rate needs)")


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the text goes to stderr)")


def build_parser() -> Parser:
    p = Parser(prog="workbench", description="Load tests and measured baselines for certctl: "
                                              "run scenarios, drive any URL, compare and commit "
                                              "baselines.",
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="exit codes: 0 passed, 99 threshold breached, 2 bad input or unfit "
                      "target, 1 anything else, 130 interrupted (README: Exit codes)")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("target", help="the target the workbench runs: the stand-in, or a "
                                      "certctl build, over the embedded PostgreSQL")
    t.add_argument("action", choices=("up", "down", "status"))
    t.add_argument("--port", type=argtypes.port, default=8443)
    t.add_argument("--certctl", metavar="PATH",
                   help="build certctl from this git checkout (cached per commit) and run it "
                        "with the benchmark profile instead of the stand-in")
    t.add_argument("--certctl-bin", metavar="FILE", type=argtypes.existing_file,
                   help="run this built certctl server (its migrations/ beside it)")
    t.add_argument("--keygen-mode", choices=("agent", "server"),
                   help="certctl's CERTCTL_KEYGEN_MODE (default agent)")
    t.add_argument("--certctl-env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a certctl variable over the benchmark profile, repeatable (e.g. "
                        "CERTCTL_RATE_LIMIT_ENABLED=true to measure the limiter)")
    t.add_argument("--connectors", action="store_true",
                   help="also start the connector tier's targets on the next four ports: nginx, "
                        "Apache httpd, HAProxy (when installed) and the F5 iControl REST mock")
    t.set_defaults(func=cmd_target)

    r = sub.add_parser("run", help="run a scenario notebook through papermill (or all of them)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.lazy_epilog = _run_epilog
    r.add_argument("scenario", help="a scenario name (listed below), or all")
    r.add_argument("--profile", default="smoke", help="smoke (default) or canonical")
    r.add_argument("--target", type=argtypes.url,
                   help="certctl base URL (default: the embedded stand-in)")
    r.add_argument("--ca-file", type=argtypes.ca_file,
                   help="CA certificate (PEM) for the target's TLS")
    r.add_argument("--insecure", action="store_true", help="skip TLS verification")
    r.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"),
                   help="set a scenario parameter over the profile's, as papermill -p (JSON "
                        "values parsed; seconds also as 30s, 5m, 250ms), e.g. -p duration_s 30s,"
                        " -p alg EdDSA or -p thresholds '{\"http_req_failed\": [\"rate<0.01\"]}';"
                        " with all, it goes to the scenarios that take it")
    r.add_argument("--allow-remote-db", action="store_true",
                   help="consent to writing fixtures to a database not on this machine")
    r.add_argument("--strict", action="store_true",
                   help="refuse the target when preflight finds one of certctl's traps")
    r.add_argument("--fixture-sizes", metavar="N,N,...", type=argtypes.sizes(),
                   help="run the scenario once per fixture size (e.g. 10000,100000,1000000) "
                        "and draw latency against fixture size")
    r.add_argument("--target-pid", type=argtypes.pid, metavar="PID",
                   help="the target server's process id, for its CPU and memory in the "
                        "telemetry (default: the process listening on the target's port)")
    r.add_argument("--scrape", action="append", default=[], metavar="[NAME=]URL|certctl",
                   help="a Prometheus target for the telemetry, repeatable: certctl (the "
                        "target's own /api/v1/metrics/prometheus, with its token), or an "
                        "exporter's URL (node_exporter, postgres_exporter), named NAME or "
                        "host:port")
    add_capacity_options(r, "req/s, VUs for a closed-loop scenario, agents for agent_fleet",
                         shards=True)
    _json_option(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("drive", help="ad-hoc open-loop load on any URL (like vegeta attack)")
    d.add_argument("url", type=argtypes.url, help="http:// or https:// URL (no login in it)")
    d.add_argument("--rate", type=argtypes.rate, help="requests/s (required without "
                                                      "--find-capacity)")
    d.add_argument("--duration", type=argtypes.duration(),
                   help="30s, 5m, 1h or seconds (required without --find-capacity)")
    d.add_argument("--vus", type=argtypes.vus, default=200, help="max in-flight requests")
    d.add_argument("-m", "--method", type=str.upper, default="GET")
    d.add_argument("-d", "--body", type=argtypes.body,
                   help="request body (JSON unless a Content-Type header says otherwise), "
                        "or @FILE to read it from a file")
    d.add_argument("-H", "--header", type=argtypes.header, action="append", default=[],
                   metavar="'NAME: VALUE'", help="a request header, repeatable")
    d.add_argument("--timeout", type=argtypes.duration(argtypes.MAX_TIMEOUT_S), default=10.0,
                   help="per request: 10s, 500ms or seconds (default 10)")
    d.add_argument("--ca-file", type=argtypes.ca_file, help="CA certificate (PEM) for https://")
    d.add_argument("--insecure", action="store_true")
    d.add_argument("--protocol", choices=("h1", "h2"), default="h1",
                   help="HTTP/1.1 (h1) or HTTP/2 (h2: ALPN h2 over https://)")
    d.add_argument("--send-token", action="store_true",
                   help="send CERTCTL_TOKEN as a Bearer token to this URL (https://, or plain "
                        "http:// to this machine only)")
    d.add_argument("--connection-per-client", action="store_true",
                   help="each VU its own connection (default: a shared pool)")
    d.add_argument("--out", type=argtypes.new_folder,
                   help="output folder, new or empty (default: runs/adhoc_<id>)")
    d.add_argument("--threshold", action="append", default=[], metavar="'[METRIC] EXPR'",
                   help="a k6 threshold, repeatable: 'p(95)<500' (response time, ms) or a "
                        "metric first, 'http_req_failed rate<0.01' (or METRIC:EXPR); judges "
                        "the run (a breach exits 99) or, with --find-capacity, every step")
    d.add_argument("--shards", type=argtypes.number(int, minimum=1,
                                                     maximum=argtypes.MAX_SHARDS),
                   help="driver processes; arrival i goes to shard i mod N (default: automatic)")
    d.add_argument("--cluster", type=argtypes.scheduler, metavar="tcp://HOST:8786",
                   help="run the shards on this Dask scheduler's workers, one shard each")
    add_capacity_options(d)
    d.add_argument("--max-error-rate", type=argtypes.fraction, default=0.01,
                   help="with --find-capacity: a step with more errors than this share of its "
                        "requests fails (0 to 1; default 0.01)")
    _json_option(d)
    d.set_defaults(func=cmd_drive)

    b = sub.add_parser("baseline", help="record and render baselines")
    bsub = b.add_subparsers(dest="action", metavar="{commit,render}", required=True)
    bc = bsub.add_parser("commit", help="file a run's record under baselines/ and git commit it")
    bc.add_argument("run_dir", type=argtypes.folder, help="the run folder, runs/<id>")
    bc.add_argument("--force", action="store_true", help="commit an invalid or failed run")
    bc.set_defaults(func=cmd_baseline_commit)
    br = bsub.add_parser("render", help="regenerate baselines/README.md")
    br.add_argument("--check", action="store_true", help="fail if baselines/README.md is stale")
    br.set_defaults(func=cmd_baseline_render)

    c = sub.add_parser("compare", help="compare runs or baselines (asv's rule, per endpoint)")
    c.add_argument("paths", nargs="+", metavar="A", type=argtypes.existing_path,
                   help="run folder, baseline .json or folder of them; A B, or a set with --vs")
    c.add_argument("--vs", nargs="+", metavar="B", type=argtypes.existing_path,
                   help="the other set of runs or baselines")
    c.add_argument("--factor", type=argtypes.number(above=1, maximum=100), default=1.10,
                   help="minimum ratio to call a change (default 1.10)")
    c.add_argument("--alpha", type=argtypes.number(above=0, below=1), default=0.002,
                   help="significance level of each row's test (default 0.002)")
    c.add_argument("--resamples", type=argtypes.number(int, minimum=1,
                                                       maximum=argtypes.MAX_RESAMPLES),
                   default=1000, help="bootstrap resamples for the intervals (default 1000)")
    c.add_argument("--calibration-tolerance", type=argtypes.number(above=0, maximum=10),
                   default=0.10, metavar="FRACTION",
                   help="how far apart the two sides' machine calibrations may be before "
                        "they are not comparable (default 0.10: 10 %% either way)")
    c.add_argument("--force", action="store_true",
                   help="compare across machines, parameters, fixture sizes or calibrations")
    c.add_argument("--fail-on-slower", action="store_true", help="exit 99 when B is slower")
    _json_option(c)
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("import-k6", help="import a k6 summary JSON as a run (marked imported)")
    k.add_argument("summary", type=argtypes.existing_file,
                   help="k6 --summary-export or handleSummary JSON file")
    k.add_argument("--scenario", required=True, help="scenario name for the table (api_tier)")
    k.add_argument("--machine", help="name of the machine that ran k6 (unknown otherwise)")
    k.add_argument("--commit", help="the certctl commit k6 measured")
    k.add_argument("--target-version", type=argtypes.line,
                   help="the certctl version k6 measured")
    k.add_argument("--target-kind", default="certctl", choices=("certctl", "stand-in"))
    k.add_argument("--started-at", help="when the k6 run started (ISO 8601 with zone); "
                   "default: the file's modification time minus the test duration")
    k.set_defaults(func=cmd_import_k6)

    s = sub.add_parser("seed", help="seed a scenario's fixture at a given size (1 to 1,000,000 "
                                    "rows; a reseed resets it, a smaller size shrinks it)")
    s.add_argument("scenario")
    s.add_argument("--size", type=argtypes.number(int, minimum=1), required=True,
                   help="fixture rows")
    s.add_argument("--profile", default="smoke",
                   help="the profile whose other parameters the fixture takes (default smoke)")
    s.add_argument("--target", type=argtypes.url,
                   help="certctl base URL whose database CERTCTL_DSN names "
                        "(default: the embedded stand-in's)")
    s.add_argument("--allow-remote-db", action="store_true",
                   help="consent to writing fixtures to a database not on this machine")
    s.set_defaults(func=cmd_seed)

    add_ab_parsers(sub)

    n = sub.add_parser("notebooks", help="generate the scenario notebooks and README's scenario "
                                         "table from the scenario registry")
    nsub = n.add_subparsers(dest="action", metavar="{render}", required=True)
    nr = nsub.add_parser("render", help="write every scenario notebook and README's table")
    nr.add_argument("--check", action="store_true",
                    help="write nothing; fail if a committed notebook or the table is stale")
    nr.set_defaults(func=cmd_notebooks_render)
    return p


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``: everything written to stdout, by this process and by the processes it
    starts (drivers, the notebook kernel), goes to stderr, so stdout holds only the JSON."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def check_environment(args) -> None:
    """The environment variables the command reads that name things, checked before any load
    as options are (README, "Environment variables")."""
    command = args.command
    machine = os.environ.get("WORKBENCH_MACHINE")
    if machine is not None and command in ("run", "drive"):  # names the folder of its records
        try:
            argtypes.path_part(machine)
        except argtypes.BadValue as exc:
            raise WorkbenchError(f"WORKBENCH_MACHINE: {exc} (it names the folder of this "
                                 "machine's baselines)") from None
    ca = os.environ.get("CERTCTL_CA_FILE")
    if ca and command in ("run", "seed") and getattr(args, "ca_file", None) is None:
        try:
            argtypes.ca_file(ca)
        except argtypes.BadValue as exc:
            raise WorkbenchError(f"CERTCTL_CA_FILE: {exc}") from None


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments; ``history SCENARIO --certctl-src PATH REV_RANGE`` too, whose range after
    an option argparse would refuse (its positionals are matched once, before the options)."""
    args, extra = parser.parse_known_args(argv)
    if (getattr(args, "command", None) == "history" and args.rev_range is None
            and len(extra) == 1 and not extra[0].startswith("-")):
        args.rev_range = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # a refusal (2), or --help and --version (0): a code, as below
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return exitcodes.PASSED
    as_json = getattr(args, "json", False)
    try:
        check_environment(args)
        with _stdout_to_stderr(as_json):
            outcome = args.func(args)
    except WorkbenchError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    if isinstance(outcome, int):
        return outcome
    if as_json:
        from workbench.jsonio import dumps

        print(dumps({"exit_code": outcome.code} | (outcome.summary or {})), end="")
    return outcome.code


def console() -> None:
    """The ``workbench`` command: :func:`main`, then out without the interpreter's teardown."""
    # jsonschema (under papermill's nbformat) builds 38 grammars for its optional IRI format
    # check on import, 0.5-2 s of every command's start; no notebook here has an IRI to check
    sys.modules.setdefault("rfc3987_syntax", None)
    from workbench.fastexit import exit_now

    exit_now(main())


if __name__ == "__main__":
    console()
