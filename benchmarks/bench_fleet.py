"""Agents one driver core sustains at certctl's real intervals, and memory per connection.

    .venv/bin/python benchmarks/run.py --only fleet [--quick]
    .venv/bin/python benchmarks/bench_fleet.py [--agents 2000,5000,10000,15000] [--quick]

One driver process pinned to DRIVER_CPU runs the ``agent-fleet`` executor (each agent its own
HTTP/2 connection over TLS 1.3, heartbeat every 60 s, work poll every 30 s, starts spread over
one heartbeat interval, connections opened before the start) against Debian's nginx on
SERVER_CPU (``bench_http2.NginxH2``: fast and cheap per connection, so the server is not what
is measured), for one heartbeat interval per fleet size. For each size the table shows what the
driver's own result says: validity (schedule-lag p99 <= 2 ms, nothing dropped, achieved >= 95 %
of offered, CPU < 90 % of a core), CPU share of its core over the run, agents per core
(agents / CPU share, what one core would hold at that cost), and peak RSS. Memory per
connection is the slope of peak RSS over agents between the smallest and the largest size.

What bounds it here: one process holds at most its open-files limit of connections (hard
RLIMIT_NOFILE, 20,000 in this container), and nginx inherits the same limit, so the largest
size is a little under it; 50,000 agents take three driver processes (``workbench run
agent_fleet --profile fleet_50k`` shards them, agent i to shard i mod N).

Control, side by side in the same run: the plain ``constant-arrival-rate`` executor at the same
request rate on one shared connection, so a lag that the machine (not the fleet) causes shows
in both columns.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver, bench_http2  # noqa: E402
from workbench.driver import DriveSpec, RequestTemplate, limits  # noqa: E402

HEARTBEAT_S, POLL_S = 60.0, 30.0  # certctl's agent (cmd/agent/main.go)
SIZES = (2_000, 5_000, 10_000)
QUICK_SIZES = (500, 2_000)
SPARE_FDS = 600  # nginx's own files and the driver's reserve under the shared limit


def fleet_spec(url: str, ca_file: str, agents: int, duration_s: float) -> DriveSpec:
    """``agents`` agents on their own h2 connections, certctl's heartbeat and poll shapes."""
    templates = []
    for i in range(agents):
        templates += [RequestTemplate("POST", f"/api/v1/agents/ag-{i}/heartbeat", "heartbeat",
                                      '{"version":"1.0.0"}'),
                      RequestTemplate("GET", f"/api/v1/agents/ag-{i}/work", "work_poll")]
    return DriveSpec(url, tuple(templates), executor="agent-fleet", agents=agents,
                     max_vus=2 * agents, duration_s=duration_s, heartbeat_s=HEARTBEAT_S,
                     poll_s=POLL_S, ca_file=ca_file, protocol="h2", connection_per_client=True,
                     scenario="bench_fleet")


def bench_fleet(sizes: tuple[int, ...] = SIZES, duration_s: float = HEARTBEAT_S) -> list[dict]:
    """One row per fleet size: validity, CPU share, agents per core, RSS, connections."""
    _, hard = limits.open_files_limit()
    limits.raise_open_files(hard)  # nginx inherits it: one descriptor per agent there too
    sizes = tuple(n for n in sizes if n + limits.RESERVE_FDS + SPARE_FDS <= hard)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        conf = Path(tmp)
        server = bench_http2.NginxH2(conf)
        # nginx closes a connection idle for 60-75 s; opening 15,000 takes about that long,
        # so the first ones would be closed before their agent's first request
        server.conf.write_text(server.conf.read_text().replace(
            "worker_connections 4096;", f"worker_connections {hard};").replace(
            "access_log off;", "access_log off;\n  keepalive_timeout 600s;\n"
                               "  client_header_timeout 600s;"))
        with server:
            for agents in sizes:
                out = conf / f"fleet-{agents}"
                out.mkdir()
                # as it ships: the driver at real-time priority on its own core
                result = bench_driver.run_driver(
                    fleet_spec(server.url, server.ca_file, agents, duration_s), out,
                    realtime=True)
                control_dir = conf / f"control-{agents}"
                control_dir.mkdir()
                control = bench_driver.run_driver(DriveSpec(
                    server.url, (RequestTemplate("GET", "/", "control"),),
                    rate=result["offered_rate"], duration_s=duration_s, ca_file=server.ca_file,
                    protocol="h2", scenario="bench_fleet_control"), control_dir, realtime=True)
                cpu = result["driver"]["cpu_fraction"]
                conns = result.get("connections", {})
                rows.append({
                    "agents": agents, "req_s": result["offered_rate"],
                    "valid": result["valid"], "why": "; ".join(result["invalid_reasons"]),
                    "lag_p99_ms": result["schedule_lag_ms"]["p99"],
                    "control_lag_p99_ms": control["schedule_lag_ms"]["p99"],
                    "control_valid": control["valid"],
                    "failed": result["failed"], "dropped": result["dropped"],
                    "cpu": cpu, "agents_per_core": agents / cpu if cpu > 0 else float("nan"),
                    "rss_mib": result["driver"]["rss_peak_bytes"] / 2**20,
                    "opened": conns.get("opened"), "open_failed": conns.get("open_failed"),
                    "handshake_p99_ms": (conns.get("handshake_ms") or {}).get("p99")})
    return rows


def memory_per_connection(rows: list[dict]) -> float | None:
    """KiB of driver RSS per open connection: the slope between the smallest and largest."""
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return (b["rss_mib"] - a["rss_mib"]) * 1024 / (b["agents"] - a["agents"])


def print_fleet(rows: list[dict]) -> None:
    load = os.getloadavg()
    print(f"\n## Agent fleet: one driver core, real intervals (heartbeat {HEARTBEAT_S:g} s, poll "
          f"{POLL_S:g} s), h2, a connection per agent; load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print("| agents | req/s | valid | lag p99 ms | control lag p99 ms | failed | dropped | "
          "driver CPU | agents per core | peak RSS MiB | connections | handshake p99 ms |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        valid = "yes" if r["valid"] else f"no ({r['why']})"
        control = f"{r['control_lag_p99_ms']:.2f}" + ("" if r["control_valid"] else " (invalid)")
        print(f"| {r['agents']:,} | {r['req_s']:.0f} | {valid} | {r['lag_p99_ms']:.2f} | "
              f"{control} | "
              f"{r['failed']} | {r['dropped']} | {r['cpu']:.1%} | {r['agents_per_core']:,.0f} | "
              f"{r['rss_mib']:.0f} | {r['opened']:,} ({r['open_failed']} failed) | "
              f"{r['handshake_p99_ms']} |")
    per_conn = memory_per_connection(rows)
    if per_conn is not None:
        print(f"\nmemory per open connection (RSS slope): {per_conn:.1f} KiB")
    valid = [r["agents"] for r in rows if r["valid"]]
    print(f"largest fleet run with valid timing on one core: "
          f"{max(valid):,} agents" if valid else "no fleet size ran with valid timing")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", help="fleet sizes, comma-separated")
    p.add_argument("--quick", action="store_true", help="small fleets, 20 s: a smoke test")
    args = p.parse_args(argv)
    sizes = tuple(int(n) for n in args.agents.split(",")) if args.agents else (
        QUICK_SIZES if args.quick else SIZES)
    print_fleet(bench_fleet(sizes, 20.0 if args.quick else HEARTBEAT_S))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
