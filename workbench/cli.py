"""``workbench`` command line: target, run, drive, baseline, compare, import-k6, notebooks."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import project_root, runs_dir


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def cmd_target(args) -> int:
    from workbench import connectors, target

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
            info = target.up(port=args.port)
            print(f"stand-in certctl at {info.url} (CA file {info.ca_file}); database {info.dsn}")
        if args.connectors:
            connectors.print_up(connectors.up(first_port=args.port + 1))
    elif args.action == "down":
        connectors.down()
        target.down()
        print("stopped every server the workbench started and PostgreSQL (data and builds kept)")
    else:
        state = target.status()
        for server in ([state] if state["kind"] else []) + state["instances"]:
            print(_server_line(server))
        if not state["kind"]:
            print("no current target (start one: workbench target up [--certctl PATH])")
        print(json.dumps(state | {"connectors": connectors.status()}, indent=1, default=str))
    return 0


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

    from workbench import certctl

    if args.certctl and args.certctl_bin:
        raise WorkbenchError("--certctl PATH builds from a checkout, --certctl-bin FILE runs a "
                             "built server: give one")
    env = {}
    for item in args.certctl_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise WorkbenchError(f"--certctl-env {item!r}: write NAME=VALUE, e.g. "
                                 "CERTCTL_RATE_LIMIT_ENABLED=true")
        env[name] = value
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


def print_summary(run_dir: Path) -> None:
    """The run's outcome in a few lines: counts, load, latency, lag, validity, thresholds."""
    from workbench.baseline import load_record
    from workbench.driver.result import RESULT_FILE, load_result
    from workbench.record import RECORD_FILE

    if not (run_dir / RESULT_FILE).exists():
        print(f"no result in {run_dir}")
        return
    r = load_result(run_dir)
    record_path = run_dir / RECORD_FILE
    lat = r["latency_ms"]
    print(f"\n{r['scenario']}: {r['status']}, {r['scheduled']} scheduled = {r['completed']} "
          f"completed + {r['failed']} failed + {r['dropped']} dropped")
    offered = (f"offered {r['offered_rate']:.1f} req/s" if r["offered_rate"] is not None
               else f"closed loop, {r['driver']['vus']} VUs")
    print(f"  {offered}, achieved {r['achieved_rate']:.1f} req/s,"
          f" error rate {r['error_rate'] or 0:.4f}")
    if lat["p50"] is not None:
        print(f"  latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p95 {lat['p95']:.2f}"
              f"  p99 {lat['p99']:.2f}  max {lat['max']:.2f}")
    lag = r["schedule_lag_ms"]
    if lag["p50"] is not None:
        print(f"  schedule lag ms: p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f};"
              f" driver CPU {r['driver']['cpu_fraction']:.0%}")
    from workbench.run import noop_warnings

    for warning in noop_warnings(r):
        print(f"  warning: {warning}")
    print(f"  valid: {r['valid']}" + (f" ({'; '.join(r['invalid_reasons'])})"
                                       if r["invalid_reasons"] else ""))
    if record_path.exists():
        record = load_record(record_path)
        for t in record["thresholds"]:
            print(f"  {'PASS' if t['ok'] else 'FAIL'} {t['metric']} {t['threshold']}"
                  f" (measured {t['value']:.4g})" if t["value"] is not None else
                  f"  FAIL {t['metric']} {t['threshold']} (no samples)")
        print(f"  target: {record['target']['kind']} {record['target']['version']} "
              f"commit {record['target']['commit']}")
    _print_telemetry(run_dir)
    if (run_dir / "report.html").exists():
        print(f"  report: {run_dir / 'report.html'}")
    if record_path.exists():
        print(f"  record: {record_path}  (commit it: workbench baseline commit {run_dir})")


def _target_pid_to_env(pid: int | None) -> None:
    """``--target-pid``: the telemetry's target process, passed to the notebook kernel through
    the environment (a notebook parameter would change every scenario's notebook)."""
    if pid is None:
        return
    import psutil

    from workbench.run import TARGET_PID_ENV

    if not psutil.pid_exists(pid):
        raise WorkbenchError(f"--target-pid {pid}: no such process on this machine; pass the "
                             "pid of the target's server process (e.g. pgrep certctl-server)")
    os.environ[TARGET_PID_ENV] = str(pid)


def _run_sweep(args: argparse.Namespace, overrides: dict, notebook_kernel=None) -> int:
    """``--fixture-sizes``: the scenario once per size, then latency against size."""
    from workbench import sweep

    if args.scenario == "all":
        raise WorkbenchError("--fixture-sizes sweeps one scenario; name it instead of all")
    sweep_dir, code = sweep.run_sweep(args.scenario, args.profile,
                                      sweep.parse_sizes(args.fixture_sizes), args.target,
                                      args.ca_file, args.insecure, overrides, strict=args.strict,
                                      notebook_kernel=notebook_kernel)
    sweep.print_summary(sweep_dir)
    return code


def _print_telemetry(run_dir: Path) -> None:
    """One line: the telemetry's status and samples per source (or why a source was off)."""
    from workbench.telemetry import read_sidecar

    sidecar = read_sidecar(run_dir)
    if sidecar is None:
        print("  telemetry: none sampled")
        return
    sources = ", ".join(f"{name} {s['samples']}" if s.get("enabled") else f"{name} off"
                        for name, s in (sidecar.get("sources") or {}).items())
    print(f"  telemetry ({sidecar.get('status')}): samples {sources}")


def cmd_run(args: argparse.Namespace) -> int:
    """One scenario's notebook through papermill, or every scenario with one combined report,
    in one kernel started first: its imports overlap this process's and its preflight."""
    from workbench import kernel

    if args.allow_remote_db:  # the environment reaches the notebook kernel; a parameter would not
        from workbench.seed import ALLOW_REMOTE_ENV

        os.environ[ALLOW_REMOTE_ENV] = "1"
    _target_pid_to_env(args.target_pid)
    if args.scrape and args.find_capacity:
        raise WorkbenchError("--scrape adds to a run's telemetry and a capacity search samples "
                             "none: drop --scrape, or run the scenario at one load")
    if args.scrape:
        from workbench.telemetry import prometheus

        prometheus.to_env(args.scrape)
    with kernel.for_terminal() as notebook_kernel:
        return _run(args, notebook_kernel)


def _run(args: argparse.Namespace, notebook_kernel) -> int:
    from workbench import run

    overrides = {}
    for name, value in args.param:
        try:  # JSON where it parses (numbers, true, objects), else the plain string
            overrides[name] = json.loads(value)
        except ValueError:
            overrides[name] = value
    if args.fixture_sizes and args.find_capacity:
        raise WorkbenchError("--fixture-sizes and --find-capacity are separate runs; choose one")
    if args.fixture_sizes:
        return _run_sweep(args, overrides, notebook_kernel)
    if args.find_capacity:
        return cmd_run_capacity(args, overrides, notebook_kernel)
    _refuse_capacity_flags(args, args.shards is not None)
    if args.scenario == "all":
        from workbench import suite

        suite_dir, code = suite.run_all(args.profile, args.target, args.ca_file, args.insecure,
                                        overrides, strict=args.strict,
                                        notebook_kernel=notebook_kernel)
        suite.print_summary(suite_dir)
        return code
    run_dir, code = run.execute(args.scenario, args.profile, args.target, args.ca_file,
                                args.insecure, overrides, strict=args.strict,
                                kernel=notebook_kernel)
    print_summary(run_dir)
    return code


def cmd_seed(args: argparse.Namespace) -> int:
    """Seed one scenario's fixture at ``--size`` rows (idempotent: a reseed leaves that many)."""
    from workbench import preflight, scenarios, seed

    if args.allow_remote_db:
        os.environ[seed.ALLOW_REMOTE_ENV] = "1"
    spec = scenarios.get(args.scenario)
    if spec.size_param is None:
        sized = ", ".join(n for n in scenarios.names() if scenarios.get(n).size_param)
        raise WorkbenchError(f"{spec.name} has no sized fixture; scenarios with one: {sized}")
    spec.params_for(args.profile, {spec.size_param: args.size})  # bad size: refused, no write
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
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    """Write the scenario notebooks and README's scenario table from the registry."""
    from workbench import notebook

    stale = notebook.render_all(project_root(), check=args.check)
    names = ", ".join(str(path.relative_to(project_root())) for path in stale)
    if args.check:
        if stale:
            print(f"stale: {names}; run `workbench notebooks render`", file=sys.stderr)
            return 1
        print("notebooks and README's scenario table are up to date")
    else:
        print(f"wrote {names}" if stale else "nothing to write: all up to date")
    return 0


def _drive_spec(args, rate: float, duration_s: float):
    """The DriveSpec of ``workbench drive``'s arguments at one rate and duration."""
    from urllib.parse import urlsplit

    from workbench import driver, preflight
    from workbench.driver.spec import is_secret_header

    preflight.validate_url(args.url)
    parts = urlsplit(args.url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    bad = [h for h in args.header if ":" not in h]
    if bad:
        raise WorkbenchError(f"--header {bad[0]!r} must be NAME:VALUE")
    headers = tuple((k.strip(), v.strip()) for k, v in (h.split(":", 1) for h in args.header))
    if args.cluster and any(is_secret_header(name) for name, _ in headers):
        raise WorkbenchError("a secret header (Authorization, Cookie, ...) cannot go to Dask "
                             "workers yet: spec.json never holds it; drop --cluster")
    # The target `workbench target up` started, when the URL is on it: its CA and token
    target = preflight.target_at(base, args.ca_file, args.insecure)
    if args.send_token:  # an ad-hoc URL gets the token only when the user says so
        token = preflight.token_for(target)
        if target.started is not None:  # the driver processes read it from the environment
            os.environ[preflight.TOKEN_ENV] = token
    return driver.DriveSpec(
        base_url=base, templates=(driver.RequestTemplate(args.method.upper(), path, "adhoc",
                                                          args.body, headers),),
        rate=rate, duration_s=duration_s, max_vus=args.vus, timeout_s=args.timeout,
        ca_file=target.ca_file, insecure=args.insecure,
        token_env=preflight.TOKEN_ENV if args.send_token else None, scenario="adhoc",
        protocol=args.protocol, connection_per_client=args.connection_per_client)


def cmd_drive(args) -> int:
    """Ad-hoc open-loop load on one URL; writes requests.parquet and result.json like a run,
    then record.json, the exports and report.html, judged by any --threshold."""
    from workbench import calibration, driver
    from workbench.driver.launch import LiveLine

    if args.find_capacity:
        return cmd_drive_capacity(args)
    _refuse_capacity_flags(args)
    missing = [flag for flag, value in (("--rate", args.rate), ("--duration", args.duration))
               if value is None]
    if missing:
        raise WorkbenchError(f"drive needs {' and '.join(missing)} (or --find-capacity to "
                             "search for the highest rate that passes)")
    spec = _drive_spec(args, args.rate, args.duration)
    out = Path(args.out) if args.out else runs_dir() / f"adhoc_{secrets.token_hex(4)}"
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"--out {out} is a file; name a new folder for the run")
    if out.is_dir() and any(out.iterdir()):
        raise WorkbenchError(f"--out {out} already holds files; name a new folder (a run's "
                             "files are never overwritten)")
    thresholds = drive_thresholds(args.threshold)
    live = LiveLine()
    before = calibration.measure()  # the machine, before and after the timed phase
    try:
        driver.drive(spec, out, echo=live, shards=args.shards, cluster=args.cluster)
    except KeyboardInterrupt:
        live.close()
        # the driver flushed what it recorded
        _record_drive(out, spec, thresholds, calibration.section(before, None))
        print_summary(out)
        raise
    live.close()
    passed = _record_drive(out, spec, thresholds,
                           calibration.section(before, calibration.measure()))
    print_summary(out)
    return 0 if passed else 1


def drive_thresholds(options: list[str]) -> dict[str, list[str]]:
    """``--threshold`` options as a k6 threshold mapping, checked before any load
    (:func:`workbench.analysis.threshold_options`)."""
    from workbench import analysis

    thresholds = analysis.threshold_options(options)
    analysis.parse_thresholds(thresholds)
    return thresholds


def _record_drive(out: Path, spec, thresholds: dict[str, list[str]],
                  calibration: dict | None = None) -> bool:
    """record.json, the exports and report.html of a drive; whether its thresholds held.
    A drive that left no result records nothing (the error above says why)."""
    from workbench import adhoc
    from workbench.driver.result import RESULT_FILE

    if not (out / RESULT_FILE).exists():
        return False
    return bool(adhoc.finish(out, spec, thresholds, calibration)["passed"])


DRIVE_CAPACITY_DEFAULTS = {"start": 10.0, "ceiling": 10_000.0}


# SearchOptions field -> the --find-capacity flag (its argparse dest) that sets it
SEARCH_FLAGS = {"start": "start", "ceiling": "ceiling", "growth": "growth",
                "step_s": "step_duration", "tolerance": "tolerance", "max_steps": "max_steps",
                "repeats": "repeats", "max_step_s": "longest_step",
                "searches": "repeat_search"}


def _given_search_options(args) -> dict:
    """The --find-capacity flags given on the command line, as SearchOptions fields."""
    given = {field: getattr(args, dest) for field, dest in SEARCH_FLAGS.items()}
    return {k: v for k, v in given.items() if v is not None}


def _refuse_capacity_flags(args, shards: bool = False) -> None:
    """A capacity flag without --find-capacity would be ignored: refuse it instead."""
    given = [f"--{SEARCH_FLAGS[k].replace('_', '-')}" for k in _given_search_options(args)]
    given += ["--auto-shard"] * args.auto_shard + ["--shards"] * shards
    if given:
        raise WorkbenchError(f"{', '.join(given)} only shape a capacity search; add "
                             "--find-capacity or drop them")


def _search_options(args, unit: str):
    """SearchOptions for ``drive --find-capacity`` (validated by the search)."""
    from workbench.capacity import SearchOptions

    return SearchOptions(**(DRIVE_CAPACITY_DEFAULTS | _given_search_options(args)), unit=unit)


def cmd_run_capacity(args, overrides: dict, notebook_kernel=None) -> int:
    """``run SCENARIO --find-capacity``: the capacity notebook through papermill."""
    from workbench import capacity_run

    if args.scenario == "all":
        raise WorkbenchError("--find-capacity searches one scenario at a time; name it")
    driver = {"shards": args.shards, "auto_shard": args.auto_shard or None}
    run_dir, code, conclusion = capacity_run.execute(
        args.scenario, args.profile, args.target, args.ca_file, args.insecure, overrides,
        _given_search_options(args) | {k: v for k, v in driver.items() if v is not None},
        strict=args.strict, notebook_kernel=notebook_kernel)
    if conclusion:
        print(conclusion)
    print(f"  capacity.json: {run_dir / 'capacity.json'}")
    print(f"  report: {run_dir / 'report.html'}")
    return code


def cmd_drive_capacity(args) -> int:
    """``drive URL --find-capacity``: steps of rising rate, bisected; capacity.json + figures."""
    from datetime import UTC, datetime

    from workbench import capacity_run
    from workbench.capacity import RATE

    if not args.threshold:
        raise WorkbenchError("--find-capacity needs at least one --threshold to judge each "
                             "step by, e.g. --threshold 'p(99)<200'")
    if args.rate is not None or args.duration is not None:
        raise WorkbenchError("--find-capacity chooses each step's rate and duration; use "
                             "--start/--ceiling/--step-duration instead of --rate/--duration")
    thresholds = capacity_run.parse_threshold_options(args.threshold)
    options = _search_options(args, RATE)
    options.validate()
    spec = _drive_spec(args, options.start, options.step_s)
    out = Path(args.out) if args.out else runs_dir() / f"capacity_{secrets.token_hex(4)}"
    context = {"kind": "adhoc", "target_url": args.url, "method": args.method.upper(),
               "thresholds": list(args.threshold), "max_error_rate": args.max_error_rate,
               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    result = capacity_run.search_steps(
        spec, out, thresholds, options, max_error_rate=args.max_error_rate, context=context,
        echo=lambda line: print(line, file=sys.stderr, flush=True), shards=args.shards,
        auto_shard=args.auto_shard)
    print(result.sentence())
    if result.spread_line():
        print(result.spread_line())
    print(f"  capacity.json: {out / 'capacity.json'}; figures: "
          f"{', '.join(str(out / f) for f in capacity_run.FIGURES)}")
    return capacity_run.exit_code(result.verdict)


def add_capacity_options(p: argparse.ArgumentParser, unit_hint: str = "req/s",
                         shards: bool = False) -> None:
    """The --find-capacity flags, shared by ``drive`` and ``run`` (``shards``: the flag too,
    for ``run``; ``drive`` has its own)."""
    g = p.add_argument_group("capacity search (--find-capacity)")
    g.add_argument("--find-capacity", action="store_true",
                   help="search for the highest load that passes: steps of rising load, then "
                        "bisection between the last passing and the first failing step")
    g.add_argument("--start", type=float,
                   help=f"first step's load ({unit_hint}; drive: 10, run: the profile's)")
    g.add_argument("--growth", type=float, help="each ramp step's load over the last's "
                                                "(default 2)")
    g.add_argument("--step-duration", type=float,
                   help="seconds of load per step (default 20)")
    g.add_argument("--ceiling", type=float,
                   help=f"highest load to try ({unit_hint}; drive: 10000, run: 64 x start)")
    g.add_argument("--tolerance", type=float,
                   help="bisect until the bracket's ratio is within 1 + this (default 0.05)")
    g.add_argument("--max-steps", type=int, help="most steps per search (default 32)")
    g.add_argument("--repeats", type=int,
                   help="runs at the answer and at the load above it, the first included: the "
                        "answer must pass every one (default 3)")
    g.add_argument("--longest-step", type=float,
                   help="when the load above the answer passes in some repeats, the repeats "
                        "run again with doubled steps up to this many seconds (default 4 x "
                        "--step-duration)")
    g.add_argument("--repeat-search", type=int,
                   help="run the whole search this many times; report the median answer and "
                        "the range (default 1)")
    g.add_argument("--auto-shard", action="store_true",
                   help="when the driver is the limit, run the step again with twice the "
                        "driver processes (up to one per core, less one for a target on this "
                        "host) and go on")
    if shards:
        g.add_argument("--shards", type=_positive(int),
                       help="driver processes per step (default: as many as the rate needs)")


def cmd_baseline(args) -> int:
    from workbench import baseline

    root = project_root()
    if args.action == "commit":
        dest = baseline.commit(Path(args.run_dir), root, force=args.force)
        print(f"committed {dest.relative_to(root)} (not pushed)")
        return 0
    if args.check:
        if not baseline.render(root, check=True):
            print("baselines/README.md is stale; run `workbench baseline render`", file=sys.stderr)
            return 1
        print("baselines/README.md is up to date")
        return 0
    baseline.render(root)
    print("wrote baselines/README.md")
    return 0


def cmd_compare(args) -> int:
    from workbench import compare

    if args.vs:
        a, b = args.paths, args.vs
    elif len(args.paths) == 2:
        a, b = args.paths[:1], args.paths[1:]
    else:
        raise WorkbenchError("compare takes two records (workbench compare A B) or two sets "
                             "(workbench compare A1 A2 ... --vs B1 B2 ...)")
    result = compare.compare_paths(a, b, factor=args.factor, alpha=args.alpha, force=args.force,
                                   n_boot=args.resamples,
                                   calibration_tolerance=args.calibration_tolerance)
    if not result.comparable and not args.force:
        print("calibration " + result.calibration_text().replace("\n", "\n" + " " * 12))
        raise WorkbenchError("not comparable: " + "; ".join(result.reasons)
                             + "; pass --force to compare anyway")
    print(result.text())
    return 1 if args.fail_on_slower and result.verdict == "slower" else 0


def cmd_import_k6(args) -> int:
    from workbench import k6import

    run_dir = k6import.import_summary(args.summary, args.scenario, machine=args.machine,
                                      commit=args.commit, version=args.target_version,
                                      started_at=args.started_at, target_kind=args.target_kind)
    print(f"imported {args.summary} as {run_dir}")
    print(f"  record: {run_dir / 'record.json'}  (commit it: workbench baseline commit "
          f"{run_dir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("target", help="the target the workbench runs: the stand-in, or a "
                                      "certctl build, over the embedded PostgreSQL")
    t.add_argument("action", choices=("up", "down", "status"))
    t.add_argument("--port", type=int, default=8443)
    t.add_argument("--certctl", metavar="PATH",
                   help="build certctl from this git checkout (cached per commit) and run it "
                        "with the benchmark profile instead of the stand-in")
    t.add_argument("--certctl-bin", metavar="FILE",
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

    r = sub.add_parser("run", help="run a scenario notebook through papermill (or all of them)")
    r.add_argument("scenario", help="a scenario name, or all (seed once, one combined report)")
    r.add_argument("--profile", default="smoke")
    r.add_argument("--target", help="certctl base URL (default: the embedded stand-in)")
    r.add_argument("--ca-file", help="CA certificate for the target's TLS")
    r.add_argument("--insecure", action="store_true", help="skip TLS verification")
    r.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"),
                   help="set a scenario parameter over the profile's, as papermill -p (JSON "
                        "values parsed), e.g. -p duration_s 30, -p alg EdDSA or -p thresholds "
                        "'{\"http_req_failed\": [\"rate<0.01\"]}'; with all, it goes to the "
                        "scenarios that take it")
    r.add_argument("--allow-remote-db", action="store_true",
                   help="consent to writing fixtures to a database not on this machine")
    r.add_argument("--strict", action="store_true",
                   help="refuse the target when preflight finds one of certctl's traps")
    r.add_argument("--fixture-sizes", metavar="N,N,...",
                   help="run the scenario once per fixture size (e.g. 10000,100000,1000000) "
                        "and draw latency against fixture size")
    r.add_argument("--target-pid", type=_positive(int), metavar="PID",
                   help="the target server's process id, for its CPU and memory in the "
                        "telemetry (default: the process listening on the target's port)")
    r.add_argument("--scrape", action="append", default=[], metavar="[NAME=]URL|certctl",
                   help="a Prometheus target for the telemetry, repeatable: certctl (the "
                        "target's own /api/v1/metrics/prometheus, with its token), or an "
                        "exporter's URL (node_exporter, postgres_exporter), named NAME or "
                        "host:port")
    add_capacity_options(r, "req/s, VUs for a closed-loop scenario, agents for agent_fleet",
                         shards=True)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("drive", help="ad-hoc open-loop load on any URL (like vegeta attack)")
    d.add_argument("url")
    d.add_argument("--rate", type=_positive(float), help="requests/s (required without "
                                                         "--find-capacity)")
    d.add_argument("--duration", type=_positive(float), help="seconds (required without "
                                                             "--find-capacity)")
    d.add_argument("--vus", type=_positive(int), default=200, help="max in-flight requests")
    d.add_argument("--method", default="GET")
    d.add_argument("--body", help="JSON request body")
    d.add_argument("--header", action="append", default=[])
    d.add_argument("--timeout", type=_positive(float), default=10.0)
    d.add_argument("--ca-file")
    d.add_argument("--insecure", action="store_true")
    d.add_argument("--protocol", choices=("h1", "h2"), default="h1",
                   help="HTTP/1.1 (h1) or HTTP/2 (h2: ALPN h2 over https://)")
    d.add_argument("--send-token", action="store_true",
                   help="send CERTCTL_TOKEN as a Bearer token to this URL (https://, or plain "
                        "http:// to this machine only)")
    d.add_argument("--connection-per-client", action="store_true",
                   help="each VU its own connection (default: a shared pool)")
    d.add_argument("--out", help="output folder (default: runs/adhoc_<id>)")
    d.add_argument("--threshold", action="append", default=[], metavar="'[METRIC] EXPR'",
                   help="a k6 threshold, repeatable: 'p(95)<500' (response time, ms) or a "
                        "metric first, 'http_req_failed rate<0.01' (or METRIC:EXPR); judges "
                        "the run (a breach exits 1) or, with --find-capacity, every step")
    d.add_argument("--shards", type=_positive(int),
                   help="driver processes; arrival i goes to shard i mod N (default: automatic)")
    d.add_argument("--cluster", metavar="tcp://HOST:8786",
                   help="run the shards on this Dask scheduler's workers, one shard each")
    add_capacity_options(d)
    d.add_argument("--max-error-rate", type=float, default=0.01,
                   help="with --find-capacity: a step with more errors than this share of its "
                        "requests fails (default 0.01)")
    d.set_defaults(func=cmd_drive)

    b = sub.add_parser("baseline", help="record and render baselines")
    b.add_argument("action", choices=("commit", "render"))
    b.add_argument("run_dir", nargs="?")
    b.add_argument("--force", action="store_true", help="commit an invalid or failed run")
    b.add_argument("--check", action="store_true", help="fail if baselines/README.md is stale")
    b.set_defaults(func=cmd_baseline)

    c = sub.add_parser("compare", help="compare runs or baselines (asv's rule, per endpoint)")
    c.add_argument("paths", nargs="+", metavar="A",
                   help="run folder, baseline .json or folder of them; A B, or a set with --vs")
    c.add_argument("--vs", nargs="+", metavar="B", help="the other set of runs or baselines")
    c.add_argument("--factor", type=_positive(float), default=1.10,
                   help="minimum ratio to call a change (default 1.10)")
    c.add_argument("--alpha", type=_positive(float), default=0.002,
                   help="significance level of each row's test (default 0.002)")
    c.add_argument("--resamples", type=_positive(int), default=1000,
                   help="bootstrap resamples for the intervals (default 1000)")
    c.add_argument("--calibration-tolerance", type=_positive(float), default=0.10,
                   metavar="FRACTION",
                   help="how far apart the two sides' machine calibrations may be before "
                        "they are not comparable (default 0.10: 10 %% either way)")
    c.add_argument("--force", action="store_true",
                   help="compare across machines, parameters, fixture sizes or calibrations")
    c.add_argument("--fail-on-slower", action="store_true", help="exit 1 when B is slower")
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("import-k6", help="import a k6 summary JSON as a run (marked imported)")
    k.add_argument("summary", help="k6 --summary-export or handleSummary JSON file")
    k.add_argument("--scenario", required=True, help="scenario name for the table (api_tier)")
    k.add_argument("--machine", help="name of the machine that ran k6 (unknown otherwise)")
    k.add_argument("--commit", help="the certctl commit k6 measured")
    k.add_argument("--target-version", help="the certctl version k6 measured")
    k.add_argument("--target-kind", default="certctl", choices=("certctl", "stand-in"))
    k.add_argument("--started-at", help="when the k6 run started (ISO 8601 with zone); "
                   "default: the file's modification time minus the test duration")
    k.set_defaults(func=cmd_import_k6)

    s = sub.add_parser("seed", help="seed a scenario's fixture at a given size (1 to 1,000,000 "
                                    "rows; a reseed resets it, a smaller size shrinks it)")
    s.add_argument("scenario")
    s.add_argument("--size", type=_positive(int), required=True, help="fixture rows")
    s.add_argument("--profile", default="smoke",
                   help="the profile whose other parameters the fixture takes (default smoke)")
    s.add_argument("--target", help="certctl base URL whose database CERTCTL_DSN names "
                                     "(default: the embedded stand-in's)")
    s.add_argument("--allow-remote-db", action="store_true",
                   help="consent to writing fixtures to a database not on this machine")
    s.set_defaults(func=cmd_seed)

    n = sub.add_parser("notebooks", help="generate the scenario notebooks and README's scenario "
                                         "table from the scenario registry")
    n.add_argument("action", choices=("render",))
    n.add_argument("--check", action="store_true",
                   help="write nothing; fail if a committed notebook or the table is stale")
    n.set_defaults(func=cmd_notebooks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) == "commit" and not args.run_dir:
        print("error: baseline commit needs a run folder: workbench baseline commit runs/<id>",
              file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The ``workbench`` command: :func:`main`, then out without the interpreter's teardown."""
    # jsonschema (under papermill's nbformat) builds 38 grammars for its optional IRI format
    # check on import, 0.5-2 s of every command's start; no notebook here has an IRI to check
    sys.modules.setdefault("rfc3987_syntax", None)
    from workbench.fastexit import exit_now

    exit_now(main())


if __name__ == "__main__":
    console()
