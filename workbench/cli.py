"""``workbench`` command line: target, run, drive, baseline."""

from __future__ import annotations

import argparse
import json
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
    result_path, record_path = run_dir / "result.json", run_dir / "record.json"
    if not result_path.exists():
        print(f"no result in {run_dir}")
        return
    r = json.loads(result_path.read_text())
    lat = r["latency_ms"]
    print(f"\n{r['scenario']}: {r['status']}, {r['scheduled']} scheduled = {r['completed']} "
          f"completed + {r['failed']} failed + {r['dropped']} dropped")
    print(f"  offered {r['offered_rate']:.1f} req/s, achieved {r['achieved_rate']:.1f} req/s,"
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
        record = json.loads(record_path.read_text())
        for t in record["thresholds"]:
            print(f"  {'PASS' if t['ok'] else 'FAIL'} {t['metric']} {t['threshold']}"
                  f" (measured {t['value']:.4g})" if t["value"] is not None else
                  f"  FAIL {t['metric']} {t['threshold']} (no samples)")
        print(f"  target: {record['target']['kind']} {record['target']['version']} "
              f"commit {record['target']['commit']}")
    print(f"  report: {run_dir / 'report.html'}")
    print(f"  record: {record_path}  (commit it: workbench baseline commit {run_dir})")


def cmd_run(args) -> int:
    from workbench import run

    overrides = {k: v for k, v in (("rate", args.rate), ("duration_s", args.duration),
                                   ("fleet_size", args.fleet_size)) if v is not None}
    run_dir, code = run.execute(args.scenario, args.profile, args.target, args.ca_file,
                                args.insecure, overrides)
    print_summary(run_dir)
    return code


def cmd_drive(args) -> int:
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
        token_env=preflight.TOKEN_ENV, scenario="adhoc")
    out = Path(args.out) if args.out else runs_dir() / f"adhoc_{secrets.token_hex(4)}"
    driver.drive(spec, out, echo=lambda line: print(line, file=sys.stderr))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("target", help="the embedded default target (stand-in + PostgreSQL)")
    t.add_argument("action", choices=("up", "down", "status"))
    t.add_argument("--port", type=int, default=8443)
    t.set_defaults(func=cmd_target)

    r = sub.add_parser("run", help="run a scenario notebook through papermill")
    r.add_argument("scenario")
    r.add_argument("--profile", default="smoke")
    r.add_argument("--target", help="certctl base URL (default: the embedded stand-in)")
    r.add_argument("--ca-file", help="CA certificate for the target's TLS")
    r.add_argument("--insecure", action="store_true", help="skip TLS verification")
    r.add_argument("--rate", type=float, help="override the profile's arrival rate")
    r.add_argument("--duration", type=float, help="override the profile's duration (s)")
    r.add_argument("--fleet-size", type=int, help="override the profile's fixture size")
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
    d.add_argument("--out", help="output folder (default: runs/adhoc_<id>)")
    d.set_defaults(func=cmd_drive)

    b = sub.add_parser("baseline", help="record and render baselines")
    b.add_argument("action", choices=("commit", "render"))
    b.add_argument("run_dir", nargs="?")
    b.add_argument("--force", action="store_true", help="commit an invalid or failed run")
    b.add_argument("--check", action="store_true", help="fail if baselines/README.md is stale")
    b.set_defaults(func=cmd_baseline)
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
