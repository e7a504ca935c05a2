"""The connector tier beside two peers, on every target type `target up --connectors` starts here.

For each (nginx, Apache httpd, HAProxy when installed; the F5 mock): the workbench's driver
with a new connection per request at ``rate`` for ``seconds`` (as ``connector_handshake`` runs
it), vegeta at the same open-loop rate with keep-alive off (each request its own connection
and handshake, over HTTP/1.1), and ``openssl s_time -new`` for the same time: one closed-loop
client doing full handshakes and a GET back to back, the daemon's handshake ceiling as one
connection at a time sees it. The two open loops should agree on the percentiles (the
workbench's also split into connect / TLS / first byte); s_time is the sanity figure for what
``--find-capacity`` reports.

    .venv/bin/python benchmarks/run.py --only connectors [--quick]

A measurement for a quiet machine: on a loaded one the numbers say how loaded it is.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks import tools
from workbench import driver
from workbench.analyse import analysis
from workbench.target import connectors
from workbench.target.ports import free_ports

RATE, SECONDS = 50.0, 30.0  # per tool and target type
QUICK_RATE, QUICK_SECONDS = 20.0, 5.0
_S_TIME = re.compile(r"(\d+) connections in ([\d.]+) real seconds")


def ours(url: str, path: str, tag: str, ca_file: str, rate: float, seconds: float,
         out: Path) -> dict:
    spec = driver.DriveSpec(url, (driver.RequestTemplate("GET", path, tag),), rate=rate,
                            duration_s=seconds, max_vus=50, ca_file=ca_file,
                            connection_per_request=True, scenario="bench_connectors")
    result = driver.drive(spec, out)
    table = analysis.phases(analysis.load_requests(out)).loc[tag]
    row = {f"{k}": table.loc["total", k] for k in ("p50", "p95", "p99")}
    row |= {f"{phase}_p50": table.loc[phase, "p50"] for phase in ("connect", "tls", "ttfb")}
    return row | {"ok": result["completed"], "failed": result["failed"],
                  "valid": result["valid"]}


def vegeta(url: str, path: str, ca_file: str, rate: float, seconds: float, tmp: Path) -> dict:
    exe, version = tools.find_vegeta()
    targets = tmp / "targets.txt"
    targets.write_text(f"GET {url}{path}\n")
    attack = subprocess.run(
        [*exe, "attack", f"-rate={rate:g}/1s", f"-duration={seconds:g}s", "-keepalive=false",
         "-http2=false", f"-root-certs={ca_file}", f"-targets={targets}", "-max-workers=50"],
        capture_output=True, timeout=seconds + 60, check=True)
    report = json.loads(subprocess.run([*exe, "report", "-type=json"], input=attack.stdout,
                                       capture_output=True, timeout=60, check=True).stdout)
    latency = report["latencies"]
    return {"p50": latency["50th"] / 1e6, "p95": latency["95th"] / 1e6,
            "p99": latency["99th"] / 1e6, "ok": round(report["requests"] * report["success"]),
            "failed": report["requests"] - round(report["requests"] * report["success"]),
            "version": version}


def s_time(url: str, path: str, ca_file: str, seconds: float) -> dict:
    host_port = url.removeprefix("https://")
    out = subprocess.run(["openssl", "s_time", "-connect", host_port, "-new", "-CAfile",
                          ca_file, "-www", path, "-time", str(int(seconds))],
                         capture_output=True, text=True, timeout=seconds + 60)
    found = _S_TIME.search(out.stdout)
    if not found:
        raise tools.Unavailable(f"openssl s_time said: {out.stdout[-200:]} {out.stderr[-200:]}")
    return {"handshakes_per_s": int(found[1]) / float(found[2])}


def bench(quick: bool = False) -> list[dict]:
    rate, seconds = (QUICK_RATE, QUICK_SECONDS) if quick else (RATE, SECONDS)
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        info = connectors.up(tmp / "state", first_port=free_ports(len(connectors.TYPES)))
        try:
            for target_type, entry in info["targets"].items():
                url, path, ca = entry["url"], entry["path"], info["ca_file"]
                row = {"target": f"{target_type} ({entry['version']})", "rate": rate}
                row["workbench"] = ours(url, path, target_type, ca, rate, seconds,
                                        tmp / f"run-{target_type}")
                try:
                    row["vegeta"] = vegeta(url, path, ca, rate, seconds, tmp)
                except (tools.Unavailable, subprocess.SubprocessError) as exc:
                    row["vegeta"] = {"skipped": str(exc)[:120]}
                row["s_time"] = s_time(url, path, ca, seconds)
                rows.append(row)
            for target_type, package in info["missing"].items():
                rows.append({"target": target_type,
                             "skipped": f"not installed: apt-get install -y {package}"})
        finally:
            connectors.down(tmp / "state")
    return rows


def print_table(rows: list[dict]) -> None:
    print("\nconnector tier: new TLS connection + GET per request (ms; s_time: handshakes/s)")
    print(f"{'target':34} {'tool':9} {'p50':>8} {'p95':>8} {'p99':>8}  phases p50 "
          "(connect/tls/ttfb)   ok/failed")
    for row in rows:
        if "skipped" in row:
            print(f"{row['target']:34} skipped: {row['skipped']}")
            continue
        for tool in ("workbench", "vegeta"):
            r = row[tool]
            if "skipped" in r:
                print(f"{row['target']:34} {tool:9} skipped: {r['skipped']}")
                continue
            phases = (f"{r['connect_p50']:.2f}/{r['tls_p50']:.2f}/{r['ttfb_p50']:.2f}"
                      if "tls_p50" in r else "-")
            print(f"{row['target']:34} {tool:9} {r['p50']:8.2f} {r['p95']:8.2f} "
                  f"{r['p99']:8.2f}  {phases:28} {r['ok']}/{r['failed']}")
        print(f"{row['target']:34} {'s_time':9} {row['s_time']['handshakes_per_s']:8.0f} "
              "handshakes/s, one closed-loop client")
