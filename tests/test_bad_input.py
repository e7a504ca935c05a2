"""Bad input, in one table: every refusal is one ``error:`` line naming the problem, exit 2,
no traceback, nothing written and nothing sent, before any heavy import.

Each row is a command line as a new user (or a script with a typo) would type it. The target
of every command is a listening loopback socket (also the database's address) that must see no
connection, and the runs and state folders are private. Every row runs in this process (fast);
a sample also runs in a fresh interpreter, as the console script does, where the ``-c`` probe
reports whether the notebook or plotting stack was imported before the refusal.

Below the table: malformed notebook parameters, refused in the notebook's first cell.
"""

import json
import re
import select
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import papermill
import psutil
import pytest

from workbench.cli import main
from workbench.paths import baselines_dir, notebooks_dir

K6_SUMMARY = Path(__file__).parent / "data" / "k6-handle-summary.json"
HEAVY = ("matplotlib", "papermill", "nbconvert", "nbformat", "jupyter_client", "distributed")
# Runs the command line as the console script does, then says which heavy modules it imported.
PROBE = """\
import atexit, os, sys
atexit.register(lambda: open(os.environ["BAD_INPUT_PROBE"], "w").write(
    " ".join(m for m in os.environ["BAD_INPUT_HEAVY"].split() if m in sys.modules)))
from workbench.cli import main
sys.exit(main(sys.argv[1:]))
"""

RUN = "--target {url}"
DRV = "drive {url}/x --rate 10 --duration 1"
CAP = "drive {url}/x --find-capacity --threshold p(99)<200"
RCAP = "run agent_storm --target {url} --find-capacity"


def case(line: str, needle: str, fresh: bool = False, env: dict | None = None):
    """A row: the command line (shell syntax), what its error line must say, whether it also
    runs in a fresh interpreter (one row or more of each command), and environment variables
    that differ from the sandbox's."""
    return shlex.split(line), needle, fresh, env or {}


CASES = [
    # the command itself
    case("nosuchcommand", "nosuchcommand", fresh=True),
    case("--nonsense", "--nonsense"),
    # target
    case("target sideways", "sideways"),
    case("target up --port 0", "--port"),
    case("target up --port 70000", "--port", fresh=True),
    case("target up --port -1", "--port"),
    case("target up --port http", "--port"),
    case("target up --port 8443 extra", "unrecognized arguments: extra"),
    # run: scenario, profile, parameters
    case("run", "scenario"),
    case(f"run no_such_scenario {RUN}", "unknown scenario 'no_such_scenario'"),
    case(f"run 'agent_storm\n' {RUN}", "unknown scenario"),
    case(f"run agent_storm --profile huge {RUN}", "unknown profile 'huge'"),
    case(f"run agent_storm --profile 'smoke\n' {RUN}", "unknown profile"),
    case(f"run agent_storm --profile smöke {RUN}", "unknown profile"),
    case(f"run agent_storm -p rate 0 {RUN}", "rate must be positive"),
    case(f"run agent_storm -p rate -3 {RUN}", "rate must be positive"),
    case(f"run agent_storm -p rate Infinity {RUN}", "rate must be a finite number"),
    case(f"run acme_burst -p rate 5 {RUN}", "acme_burst takes no parameter rate"),
    case(f"run agent_storm -p rate 1e308 {RUN}", "rate"),
    case(f"run agent_storm -p rate NaN {RUN}", "rate must be a finite number"),
    case(f"run agent_storm -p duration_s 1e300 {RUN}", "duration_s", fresh=True),
    case(f"run agent_storm -p duration_s 0 {RUN}", "duration_s must be positive"),
    case(f"run agent_storm -p duration_s -1 {RUN}", "duration_s must be positive"),
    case(f"run agent_storm -p duration_s 8d {RUN}", "duration_s must be a number of seconds"),
    case(f"run agent_storm -p duration_s NaN {RUN}", "duration_s"),
    case(f"run agent_storm -p duration_s Infinity {RUN}", "duration_s"),
    case(f"run agent_storm -p duration_s -Infinity {RUN}", "-p/--param"),
    case(f"run agent_storm -p duration_s 30x {RUN}", "duration_s"),
    case(f"run agent_storm -p duration_s '' {RUN}", "duration_s"),
    case(f"run agent_storm -p duration_s -5s {RUN}", "-p/--param"),
    case(f"run agent_storm -p duration_s true {RUN}", "duration_s"),
    case(f"run agent_storm -p fleet_size 1.5 {RUN}", "fleet_size must be an integer"),
    case(f"run agent_storm -p fleet_size ten {RUN}", "fleet_size must be an integer"),
    case(f"run agent_storm -p fleet_size 2000000 {RUN}", "fleet_size"),
    case(f"run agent_storm -p max_vus 100000000000 {RUN}", "max_vus"),
    case(f"run agent_storm -p max_vus 0 {RUN}", "max_vus"),
    case(f"run agent_storm -p nonsense 1 {RUN}", "takes no parameter nonsense"),
    case(f"run agent_storm -p dürätion_s 5 {RUN}", "takes no parameter"),
    case(f"run agent_storm -p run_dir /tmp/x {RUN}", "takes no parameter run_dir"),
    case(f"run agent_storm -p protocol h3 {RUN}", "protocol"),
    case(f"run agent_storm -p protocol 'h2\n' {RUN}", "protocol"),
    case(f"run agent_storm -p connection_per_client maybe {RUN}", "connection_per_client"),
    case(f"run acme_burst -p profile_id 'default\n' {RUN}", "profile_id"),
    case(f"run acme_burst -p profile_id '' {RUN}", "profile_id"),
    case(f"run acme_orders -p alg 'ES256\n' {RUN}", "alg"),
    case(f"run agent_fleet -p start 'spread\n' {RUN}", "start"),
    case(f"run agent_storm -p thresholds '{{\"http_req_duration\": [\"p(101)<5\"]}}' {RUN}",
         "p(101)"),
    case(f"run agent_storm -p thresholds '{{\"http_req_duration\": [\"p95<5\"]}}' {RUN}",
         "malformed threshold 'p95<5'"),
    case(f"run agent_storm -p thresholds '{{\"http_req_duration\\n\": [\"p(95)<5\"]}}' {RUN}",
         "threshold metric"),
    case(f"run agent_storm -p thresholds '[1, 2]' {RUN}", "thresholds must be a mapping"),
    case(f"run agent_storm -p thresholds '{{\"http_req_duration\": 5}}' {RUN}",
         "must be a list of expressions"),
    case(f"run agent_storm -p thresholds 'p(95)<5' {RUN}", "thresholds must be a mapping"),
    case(f"run all -p nonsense 1 {RUN}", "no scenario takes parameter nonsense"),
    case(f"run all -p vus 0 {RUN}", "parameter vus must be an integer in 1..1000000", fresh=True),
    case(f"run agent_storm --rate 5 {RUN}", "unrecognized arguments: --rate 5"),
    case(f"run agent_storm --duration 5 {RUN}", "unrecognized arguments: --duration 5"),
    case(f"run agent_storm --fleet-size 5 {RUN}", "unrecognized arguments: --fleet-size 5"),
    case(f"run agent_storm --profile '' {RUN}", "unknown profile"),
    # run: the target
    case("run agent_storm --target http://admin:SECRETPASS@127.0.0.1:{port}/", "holds a login",
         fresh=True),
    case("run agent_storm --target ftp://127.0.0.1:{port}", "--target"),
    case(f"run agent_storm {RUN} --scrape ftp://x/metrics", "--scrape 'ftp://x/metrics'",
         fresh=True),
    case(f"run agent_storm {RUN} --scrape a=http://x:9100/ --scrape a=http://y:9100/",
         "--scrape names a twice"),
    case(f"run agent_storm {RUN} --scrape certctl --find-capacity",
         "--scrape adds to a run's telemetry"),
    case("run agent_storm --target https://127.0.0.1:99999", "port"),
    case("run agent_storm --target ''", "--target"),
    case("run agent_storm --target not-a-url", "--target"),
    case("run agent_storm --target 'http://127.0.0.1:{port}/\n'", "--target"),
    case(f"run agent_storm --ca-file {{missing}} {RUN}", "--ca-file"),
    case(f"run agent_storm --ca-file {{full}} {RUN}", "--ca-file"),
    case("run agent_storm --target https://127.0.0.1:{port} --ca-file {file}",
         "holds no PEM CA certificate"),
    case("run agent_storm --target https://127.0.0.1:{port}", "CERTCTL_CA_FILE",
         env={"CERTCTL_CA_FILE": "{file}"}),
    case(f"run agent_storm --target-pid 0 {RUN}", "--target-pid"),
    case(f"run agent_storm --target-pid -5 {RUN}", "--target-pid"),
    case(f"run agent_storm --target-pid 1e20 {RUN}", "--target-pid"),
    case(f"run agent_storm --target-pid 100000000000000000000 {RUN}", "--target-pid"),
    case(f"run agent_storm --target-pid abc {RUN}", "--target-pid"),
    case(f"run agent_storm --target-pid {{nopid}} {RUN}", "no such process"),
    # run: sweeps and capacity
    case(f"run agent_storm --fixture-sizes 0 {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes abc {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes '' {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes 10,,20 {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes 10,x {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes 10,-1 {RUN}", "--fixture-sizes"),
    case(f"run agent_storm --fixture-sizes 10 -p fleet_size 5 {RUN}",
         "--fixture-sizes sets fleet_size; do not also pass -p fleet_size"),
    case(f"run agent_storm --fixture-sizes 2000000 {RUN}", "fleet_size must be an integer"),
    case(f"run all --fixture-sizes 10 {RUN}", "--fixture-sizes"),
    case(f"run acme_flow --fixture-sizes 10 {RUN}", "no sized fixture"),
    case(f"{RCAP} --fixture-sizes 10", "choose one"),
    case(f"run all {RUN} --find-capacity", "one scenario at a time"),
    case(f"{RCAP} --growth 1", "--growth"),
    case(f"{RCAP} --growth nan", "--growth"),
    case(f"{RCAP} --ceiling 5 --start 20", "ceiling 5 is below the start 20"),
    case(f"{RCAP} --tolerance 2", "--tolerance"),
    case(f"{RCAP} --step-duration 0", "--step-duration"),
    case(f"{RCAP} --step-duration 1e300", "--step-duration"),
    case(f"{RCAP} --step-duration 5x", "--step-duration"),
    case(f"{RCAP} --start -1", "--start"),
    case(f"{RCAP} --ceiling inf", "--ceiling"),
    case(f"{RCAP} --max-steps 1", "--max-steps"),
    case(f"{RCAP} --max-steps 100000000", "--max-steps"),
    case(f"{RCAP} --repeats 0", "--repeats"),
    case(f"{RCAP} --repeat-search 0", "--repeat-search"),
    case(f"{RCAP} --longest-step 5", "longest step (5.0 s) must be at least"),
    case(f"{RCAP} --shards 0", "--shards"),
    # a ceiling whose fleet (rate x 60 s) is more than the fixture can hold
    case(f"{RCAP} --ceiling 20000", "lower --ceiling"),
    case(f"run agent_storm --auto-shard --shards 2 {RUN}",
         "--auto-shard, --shards: only with --find-capacity"),
    case(f"run agent_storm --repeats 2 {RUN}", "--repeats: only with --find-capacity"),
    case(f"{DRV} --repeat-search 2", "--repeat-search: only with --find-capacity"),
    case(f"run agent_storm --start 5 {RUN}", "--find-capacity", fresh=True),
    # seed
    case("seed agent_storm --target {url}", "--size"),
    case("seed agent_storm --size 0 --target {url}", "--size"),
    case("seed agent_storm --size -3 --target {url}", "--size"),
    case("seed agent_storm --size 1e3 --target {url}", "--size"),
    case("seed agent_storm --size 2000000 --target {url}", "fleet_size must be an integer",
         fresh=True),
    case("seed bulk_renewal --size 1000001 --target {url}",
         "parameter bulk_size must be an integer in 1..1000000, got 1000001"),
    case("seed api_tier --size 10 --target {url}", "api_tier has no sized fixture; scenarios "
         "with one: acme_burst, agent_fleet, agent_storm, bulk_renewal"),
    case("seed acme_flow --size 5 --target {url}", "no sized fixture"),
    case("seed nosuch --size 5 --target {url}", "unknown scenario"),
    case("seed agent_storm --size 5 --profile huge --target {url}", "unknown profile"),
    case("seed agent_storm --size 5 --target {url}", "DSN is malformed",
         env={"CERTCTL_DSN": "not a dsn"}),
    case("seed agent_storm --size 5 --target http://u:SECRETPASS@127.0.0.1:{port}",
         "holds a login"),
    # drive: load shape
    case("drive", "url"),
    case("drive {url}/x", "--rate"),
    case("drive {url}/x --rate 0 --duration 1", "--rate"),
    case("drive {url}/x --rate -1 --duration 1", "--rate"),
    case("drive {url}/x --rate nan --duration 1", "--rate"),
    case("drive {url}/x --rate inf --duration 1", "--rate"),
    case("drive {url}/x --rate 1e308 --duration 1", "--rate", fresh=True),
    case("drive {url}/x --rate abc --duration 1", "--rate"),
    case("drive {url}/x --rate '' --duration 1", "--rate"),
    case("drive {url}/x --rate 10 --duration 1e300", "--duration"),
    case("drive {url}/x --rate 10 --duration 0", "--duration"),
    case("drive {url}/x --rate 10 --duration 30x", "--duration"),
    case("drive {url}/x --rate 10 --duration ''", "--duration"),
    case("drive {url}/x --rate 10 --duration -5s", "--duration"),
    case("drive {url}/x --rate 10 --duration nan", "--duration"),
    case("drive {url}/x --rate 10 --duration 1e-12", "schedules no request"),
    case("drive {url}/x --rate 10 --duration 8d", "--duration"),
    case(f"{DRV} --vus 0", "--vus"),
    case(f"{DRV} --vus 10000000000", "--vus"),
    case(f"{DRV} --vus 2.5", "--vus"),
    case(f"{DRV} --timeout 0", "--timeout"),
    case(f"{DRV} --timeout 1e300", "--timeout"),
    case(f"{DRV} --timeout nan", "--timeout"),
    case(f"{DRV} --timeout 5parsecs", "--timeout"),
    case(f"{DRV} --shards 0", "--shards"),
    case(f"{DRV} --shards -1", "--shards"),
    case(f"{DRV} --shards 100000", "--shards"),
    case(f"{DRV} --protocol h3", "--protocol"),
    case(f"{DRV} --start 5", "--find-capacity"),
    # drive: the request
    case(f"{DRV} --method 'GE T'", "must be an HTTP method"),
    case(f"{DRV} --method ''", "must be an HTTP method"),
    case(f"{DRV} --method 'GET\r\n'", "must be an HTTP method"),
    case(f"{DRV} --method GÉT", "must be an HTTP method"),
    case(f"{DRV} --header NoColon", "--header"),
    case(f"{DRV} --header ':value'", "--header"),
    case(f"{DRV} --header 'X-A: €uro'", "only Latin-1", fresh=True),
    case(f"{DRV} --header 'X-A: a\r\nInjected: 1'", "without line breaks"),
    case(f"{DRV} --header 'Bad Name: v'", "header name 'Bad Name'"),
    case(f"{DRV} --header 'X-Ü: v'", "header name 'X-Ü'"),
    case(f"{DRV} -H 'Content-Length: 5' -m post -d '{{{{}}}}'", "written by the driver itself"),
    case(f"{DRV} -H 'Transfer-Encoding: chunked'", "written by the driver itself"),
    case(f"{DRV} -H 'Host: other.example'", "written by the driver itself"),
    case(f"{DRV} --protocol h2 -H 'Connection: close'", "written by the driver itself"),
    case(f"{DRV} --body 'not json'", "body is not JSON"),
    case(f"{DRV} --body @{{missing}}", "--body"),
    case(f"{DRV} --body @{{full}}", "--body"),
    case(f"{DRV} --ca-file {{missing}}", "--ca-file"),
    case(f"{DRV} --ca-file {{full}}", "--ca-file"),
    case(f"{DRV} --ca-file {{file}}", "holds no PEM CA certificate"),
    case(DRV, "WORKBENCH_MACHINE", env={"WORKBENCH_MACHINE": "../x"}),
    case(f"{DRV} --send-token", "Bearer token", env={"CERTCTL_TOKEN": "tok\r\nX-Injected: 1"}),
    case(f"{DRV} --send-token", "no API token", env={"CERTCTL_TOKEN": ""}),
    case(f"{DRV} --threshold 'p(101)<5'", "p(101)"),
    case(f"{DRV} --threshold 'p95<5'", "threshold"),
    case(f"{DRV} --threshold ''", "threshold"),
    case(f"{DRV} --threshold 'bogus_metric rate<0.1'", "bogus_metric"),
    case(f"{DRV} --cluster notaurl", "--cluster"),
    case(f"{DRV} --cluster localhost:8786", "tcp://HOST:PORT"),
    case(f"{DRV} --out {{file}}", "--out"),
    case(f"{DRV} --out {{full}}", "--out"),
    # drive: the URL
    case("drive http://admin:SECRETPASS@127.0.0.1:{port}/ --rate 10 --duration 1",
         "holds a login", fresh=True),
    case("drive {url}/€ --rate 10 --duration 1", "percent-encode"),
    case("drive '{url}/a b' --rate 10 --duration 1", "percent-encode"),
    case("drive '{url}/a\nb' --rate 10 --duration 1", "percent-encode"),
    case("drive ftp://127.0.0.1:{port}/ --rate 10 --duration 1", "URL"),
    case("drive not-a-url --rate 10 --duration 1", "URL"),
    case("drive '' --rate 10 --duration 1", "URL"),
    case("drive http://:80/ --rate 10 --duration 1", "URL"),
    case("drive http://127.0.0.1:99999/ --rate 10 --duration 1", "port"),
    # drive: capacity
    case("drive {url}/x --find-capacity", "--threshold"),
    case(f"{CAP} --rate 5", "--rate"),
    case(f"{CAP} --out {{file}}", "--out"),
    case(f"{CAP} --out {{full}}", "--out"),
    case(f"{CAP} --max-error-rate nan", "--max-error-rate"),
    case(f"{CAP} --max-error-rate -0.1", "--max-error-rate"),
    case(f"{CAP} --max-error-rate 2", "--max-error-rate"),
    case(f"{CAP} --start 0", "--start"),
    case(f"{CAP} --ceiling 1e308", "--ceiling"),
    case(f"{CAP} --step-duration 1e300", "--step-duration"),
    case(f"{CAP} --tolerance nan", "--tolerance"),
    # baseline
    case("baseline", "baseline"),
    case("baseline sideways", "sideways"),
    case("baseline commit", "run"),
    case("baseline commit {missing}", "{missing}"),
    case("baseline commit {file}", "{file}"),
    case("baseline commit {empty}", "{empty}"),
    case("baseline commit {junk}", "{junk}"),
    case("baseline commit {badrecord}", "{badrecord}", fresh=True),
    case("baseline commit {empty} --check", "--check"),
    case("baseline render extra", "extra"),
    case("baseline render --force", "--force"),
    # compare
    case("compare", "compare"),
    case("compare {record}", "compare"),
    case("compare {missing} {record}", "{missing}"),
    case("compare {junk} {record}", "{junk}", fresh=True),
    case("compare {junkfile} {record}", "{junkfile}"),
    case("compare {capacity} {record}", "is a capacity record"),
    case("compare {notjson} {record}", "{notjson}"),
    case("compare {empty} {record}", "{empty}"),
    case("compare {record} {record} --factor 0.5", "--factor"),
    case("compare {record} {record} --factor nan", "--factor"),
    case("compare {record} {record} --factor inf", "--factor"),
    case("compare {record} {record} --alpha 2", "--alpha"),
    case("compare {record} {record} --alpha nan", "--alpha"),
    case("compare {record} {record} --resamples 1e12", "--resamples"),
    case("compare {record} {record} --resamples 1000000000000", "--resamples"),
    case("compare {record} {record} --resamples 0", "--resamples"),
    case("compare {record} --vs", "--vs"),
    case("compare {record} --vs {missing}", "does not exist"),
    # ab and history (a URL target is the silent listener; certctl:REV needs --certctl-src)
    case("ab agent_storm --a certctl:HEAD --b {url}",
         "a certctl:REV target is built from a checkout: pass --certctl-src PATH", fresh=True),
    case("ab agent_storm --a nonsense --b {url}",
         "--a 'nonsense': a target is a URL (https://HOST:PORT) or certctl:REV"),
    case("ab agent_storm --a {url} --b certctl:", "--b 'certctl:': name the revision"),
    case("ab agent_storm --a {url} --b {url} --max-rounds 2", "argument --max-rounds"),
    case("ab agent_storm --a {url} --b {url} --judge p90", "argument --judge"),
    case("history agent_storm --certctl-src /x A..B --judge p50,p1", "argument --judge"),
    case("ab agent_storm --a {url} --b {url} -p fleet_size 0", "fleet_size"),
    case("ab no_such --a {url} --b {url}", "unknown scenario 'no_such'"),
    case("ab /health --a {url} --b {url}", "a path needs --rate R"),
    case("ab agent_storm --rate 5 --a {url} --b {url}", "--rate goes with a path to drive"),
    case("ab connector_handshake --a {url} --b {url}", "loads a target of its own"),
    case("ab agent_storm --a {url} --b {url} -p duration_s 9",
         "-p duration_s: each run's length is --duration here"),
    case("ab agent_storm --a {url} --b {url} --warmup -1", "argument --warmup"),
    case("ab agent_storm --a {url} --b {url} --duration 0", "argument --duration"),
    case("ab /x --rate 5 -H nocolon --a {url} --b {url}", "argument -H/--header"),
    case("ab agent_storm --a {url}", "--b"),
    case("history agent_storm --certctl-src /x",
         "a REV_RANGE (e.g. v2.0.60..v2.0.71) or --bisect GOOD BAD, one of them", fresh=True),
    case("history agent_storm HEAD~3..HEAD", "pass --certctl-src PATH"),
    case("history agent_storm --certctl-src /x --bisect a b --steps 3", "--steps thins"),
    case("history agent_storm --certctl-src /x a..b extra", "unrecognized arguments"),
    # import-k6
    case("import-k6 {missing} --scenario api_tier", "{missing}"),
    case("import-k6 {full} --scenario api_tier", "{full}"),
    case("import-k6 {k6} --scenario 'Bad Name'", "scenario"),
    case("import-k6 {k6} --scenario 'api_tier\n'", "scenario"),
    case("import-k6 {k6}", "--scenario"),
    case("import-k6 {k6} --scenario api_tier --machine ../x", "--machine"),
    case("import-k6 {k6} --scenario api_tier --machine 'm\n'", "--machine"),
    case("import-k6 {k6} --scenario api_tier --commit zz", "--commit"),
    case("import-k6 {k6} --scenario api_tier --started-at yesterday", "--started-at"),
    case("import-k6 {k6} --scenario api_tier --started-at 2026-01-01T00:00:00", "--started-at"),
    case("import-k6 {k6} --scenario api_tier --started-at 9999-12-31T23:59:59Z", "k6 summary"),
    case("import-k6 {k6} --scenario api_tier --target-kind martian", "--target-kind"),
    case("import-k6 {k6} --scenario api_tier --target-version 'v1\n| x |'", "--target-version"),
    case("import-k6 {k6neg} --scenario api_tier", "negative"),
    case("import-k6 {k6str} --scenario api_tier", "number"),
    case("import-k6 {k6deep} --scenario api_tier", "{k6deep}", fresh=True),
    case("import-k6 {notjson} --scenario api_tier", "not JSON"),
    case("import-k6 {k6list} --scenario api_tier", "not a k6 summary"),
    case("import-k6 {emptyfile} --scenario api_tier", "{emptyfile}"),
    # notebooks
    case("notebooks", "notebooks"),
    case("notebooks sideways", "sideways"),
    case("notebooks render extra", "extra"),
    case("notebooks render --force", "--force", fresh=True),
]


def _fixtures(tmp: Path, port: int) -> dict[str, object]:
    """The files and folders the table's {placeholders} name."""
    tmp.mkdir()
    (tmp / "file").write_text("hello\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "kept.txt").write_text("kept\n")
    (tmp / "empty").mkdir()
    (tmp / "junk").mkdir()
    (tmp / "junk" / "notes.json").write_text('{"a": 1}')
    (tmp / "junkfile.json").write_text('{"a": 1}')
    (tmp / "badrecord").mkdir()
    (tmp / "badrecord" / "record.json").write_text('{"a": 1}')
    (tmp / "notjson.json").write_text("this is not json")
    (tmp / "emptyfile.json").write_text("")
    summary = json.loads(K6_SUMMARY.read_text())
    (tmp / "k6.json").write_text(json.dumps(summary))
    summary["metrics"]["http_reqs"]["values"]["count"] = -5
    (tmp / "k6neg.json").write_text(json.dumps(summary))
    summary = json.loads(K6_SUMMARY.read_text())
    summary["metrics"]["http_req_duration"]["values"]["p(95)"] = "fast"
    (tmp / "k6str.json").write_text(json.dumps(summary))
    (tmp / "k6deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "k6list.json").write_text("[1, 2]")
    records = sorted(baselines_dir().rglob("*.json"))
    record = next(p for p in records if "capacity" not in p.parts)
    capacity = next(p for p in records if "capacity" in p.parts)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nopid = next(pid for pid in range(pid_max - 1, 1, -1) if not psutil.pid_exists(pid))
    names = ("file", "full", "empty", "junk", "badrecord")
    return {"url": f"http://127.0.0.1:{port}", "port": port, "missing": tmp / "missing",
            "record": record, "capacity": capacity, "nopid": nopid, **{n: tmp / n for n in names},
            **{n: tmp / f"{n}.json" for n in ("junkfile", "notjson", "emptyfile", "k6",
                                              "k6neg", "k6str", "k6deep", "k6list")}}


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_size) for p in root.rglob("*"))


class Sandbox:
    """A private runs/state folder, the table's files, and a listening loopback socket that
    stands for the target and its database: a command that connects to it sent something."""

    def __init__(self, tmp: Path, listener: socket.socket) -> None:
        self.tmp, self.listener = tmp, listener
        self.values = _fixtures(tmp / "files", listener.getsockname()[1])
        self.env = {"WORKBENCH_RUNS_DIR": str(tmp / "runs"),
                    "WORKBENCH_STATE_DIR": str(tmp / "state"), "CERTCTL_TOKEN": "test-token",
                    "CERTCTL_DSN": f"postgresql+psycopg://u@127.0.0.1:{self.values['port']}/x"}
        self.before, self.baselines = _tree(tmp), _tree(baselines_dir())

    def fill(self, text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(self.values.get(m[1], m[0])), text)

    def check(self, code: object, out: str, err: str, needle: str, ignore: Path | None = None):
        """The table's promise: exit 2, one error line naming the problem, nothing on stdout,
        no secret echoed, no connection, nothing written."""
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert self.fill(needle) in lines[0]
        assert "SECRETPASS" not in err and out == ""
        assert not select.select([self.listener], [], [], 0)[0], "the target saw a connection"
        assert [entry for entry in _tree(self.tmp) if entry[0] != str(ignore)] == self.before
        assert _tree(baselines_dir()) == self.baselines


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        box = Sandbox(tmp_path, listener)
        for name, value in box.env.items():
            monkeypatch.setenv(name, value)
        for name in ("WORKBENCH_ALLOW_REMOTE_DB", "WORKBENCH_TARGET_PID"):  # restored after
            monkeypatch.delenv(name, raising=False)
        monkeypatch.chdir(tmp_path / "files")
        yield box


@pytest.mark.parametrize(("argv", "needle", "env"), [(a, n, e) for a, n, _, e in CASES],
                         ids=[" ".join([*(f"{k}={v!r}" for k, v in c[3].items()),
                                        shlex.join(c[0])])[:90] for c in CASES])
def test_bad_command_line_input_is_one_error_line_and_exit_2(sandbox, capsys, monkeypatch, argv,
                                                             needle, env):
    for name, value in env.items():
        monkeypatch.setenv(name, sandbox.fill(value))
    code = main([sandbox.fill(a) for a in argv])
    out, err = capsys.readouterr()
    sandbox.check(code, out, err, needle)


FRESH = [(argv, needle) for argv, needle, fresh, _ in CASES if fresh]


@pytest.mark.parametrize(("argv", "needle"), FRESH, ids=[shlex.join(a)[:80] for a, _ in FRESH])
def test_a_fresh_interpreter_refuses_in_one_line_before_any_heavy_import(sandbox, argv,
                                                                         needle):
    probe = sandbox.tmp / "imported"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(sandbox.tmp), **sandbox.env,
           "BAD_INPUT_PROBE": str(probe), "BAD_INPUT_HEAVY": " ".join(HEAVY)}
    out = subprocess.run([sys.executable, "-c", PROBE, *(sandbox.fill(a) for a in argv)],
                         capture_output=True, text=True, timeout=120, env=env)
    sandbox.check(out.returncode, out.stdout, out.stderr, needle, ignore=probe)
    assert probe.read_text() == "", f"imported {probe.read_text()} before refusing"


@pytest.mark.parametrize("params,needle", [
    ({"rate": "fast"}, "parameter rate must be a number, got 'fast'"),
    ({"fleet_size": 10.5}, "parameter fleet_size must be an integer in 1..1000000, got 10.5"),
    ({"duration_s": -2}, "parameter duration_s must be positive, got -2"),
    ({"thresholds": {"http_req_duration": ["p95 < 500"]}}, "malformed threshold 'p95 < 500'"),
])
def test_wrong_parameters_fail_the_first_cell_with_a_clear_message(embedded_env, tmp_path,
                                                                     params, needle):
    run_dir = tmp_path / "run"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(notebooks_dir() / "agent_storm.ipynb"),
                                   str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   progress_bar=False,
                                   parameters={"run_dir": str(run_dir), **params})
    assert err.value.ename == "WorkbenchError"
    assert needle in err.value.evalue
    assert not (run_dir / "requests.parquet").exists()  # nothing was sent
