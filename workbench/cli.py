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
    from workbench import target

    if args.action == "up":
        info = target.up(port=args.port)
        print(f"stand-in certctl at {info.url} (CA file {info.ca_file}); database {info.dsn}")
    elif args.action == "down":
        target.down()
        print("embedded target stopped (data kept)")
    else:
        print(json.dumps(target.status(), indent=1, default=str))
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
    print(f"  report: {run_dir / 'report.html'}")
    print(f"  record: {record_path}  (commit it: workbench baseline commit {run_dir})")


def cmd_run(args: argparse.Namespace) -> int:
    """One scenario's notebook through papermill, or every scenario with one combined report."""
    from workbench import run, seed

    if args.allow_remote_db:  # the environment reaches the notebook kernel; a parameter would not
        os.environ[seed.ALLOW_REMOTE_ENV] = "1"

    overrides = {}
    for name, value in args.param:
        try:  # JSON where it parses (numbers, true, objects), else the plain string
            overrides[name] = json.loads(value)
        except ValueError:
            overrides[name] = value
    if args.scenario == "all":
        from workbench import suite

        suite_dir, code = suite.run_all(args.profile, args.target, args.ca_file, args.insecure,
                                        overrides, strict=args.strict)
        suite.print_summary(suite_dir)
        return code
    run_dir, code = run.execute(args.scenario, args.profile, args.target, args.ca_file,
                                args.insecure, overrides, strict=args.strict)
    print_summary(run_dir)
    return code


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


def cmd_drive(args) -> int:
    """Ad-hoc open-loop load on one URL; writes requests.parquet and result.json like a run."""
    from urllib.parse import urlsplit

    from workbench import driver, preflight

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
    spec = driver.DriveSpec(
        base_url=base, templates=(driver.RequestTemplate(args.method.upper(), path, "adhoc",
                                                          args.body, headers),),
        rate=args.rate, duration_s=args.duration, max_vus=args.vus, timeout_s=args.timeout,
        ca_file=args.ca_file, insecure=args.insecure,
        token_env=preflight.TOKEN_ENV, scenario="adhoc", protocol=args.protocol,
        connection_per_client=args.connection_per_client)
    out = Path(args.out) if args.out else runs_dir() / f"adhoc_{secrets.token_hex(4)}"
    try:
        driver.drive(spec, out, echo=lambda line: print(line, file=sys.stderr, flush=True),
                     shards=args.shards, cluster=args.cluster)
    except KeyboardInterrupt:
        print_summary(out)  # the driver flushed what it recorded before stopping
        raise
    print_summary(out)
    return 0


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
                                   n_boot=args.resamples)
    if not result.comparable and not args.force:
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

    t = sub.add_parser("target", help="the embedded default target (stand-in + PostgreSQL)")
    t.add_argument("action", choices=("up", "down", "status"))
    t.add_argument("--port", type=int, default=8443)
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
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("drive", help="ad-hoc open-loop load on any URL (like vegeta attack)")
    d.add_argument("url")
    d.add_argument("--rate", type=_positive(float), required=True)
    d.add_argument("--duration", type=_positive(float), required=True)
    d.add_argument("--vus", type=_positive(int), default=200, help="max in-flight requests")
    d.add_argument("--method", default="GET")
    d.add_argument("--body", help="JSON request body")
    d.add_argument("--header", action="append", default=[])
    d.add_argument("--timeout", type=_positive(float), default=10.0)
    d.add_argument("--ca-file")
    d.add_argument("--insecure", action="store_true")
    d.add_argument("--protocol", choices=("h1", "h2"), default="h1",
                   help="HTTP/1.1 (h1) or HTTP/2 (h2: ALPN h2 over https://)")
    d.add_argument("--connection-per-client", action="store_true",
                   help="each VU its own connection (default: a shared pool)")
    d.add_argument("--out", help="output folder (default: runs/adhoc_<id>)")
    d.add_argument("--shards", type=_positive(int),
                   help="driver processes; arrival i goes to shard i mod N (default: automatic)")
    d.add_argument("--cluster", metavar="tcp://HOST:8786",
                   help="run the shards on this Dask scheduler's workers, one shard each")
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
                   help="Mann-Whitney significance level (default 0.002)")
    c.add_argument("--resamples", type=_positive(int), default=1000,
                   help="bootstrap resamples for the intervals (default 1000)")
    c.add_argument("--force", action="store_true",
                   help="compare across machines, parameters or fixture sizes")
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


if __name__ == "__main__":
    raise SystemExit(main())
