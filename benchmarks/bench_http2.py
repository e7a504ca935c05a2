"""HTTP/2 capacity per driver core, beside vegeta, and the codec choice behind our engine.

    .venv/bin/python benchmarks/run.py --only http2 [--quick]

1. Capacity (closed loop, 200 requests in flight, tiny responses) against one nginx (Debian's,
   ``http2`` over TLS 1.3, one worker process pinned to CPU 1; faster on one core than Go's
   net/http, so the server is not what is measured). Client on CPU 0, in one run: our engine
   over HTTP/2 (``DriveSpec(protocol="h2")``, one connection, 200 streams), vegeta over HTTP/2,
   our HTTP/1.1 engine (200 connections) and vegeta over HTTP/1.1. Served requests are counted
   by the server (nginx ``stub_status``) over a window after a warm-up, and divided by the
   client's own CPU seconds in that window (its whole process tree): req/s per client core.
   vegeta is made a closed loop of the same size: ``-rate=0 -workers=200 -max-workers=200``
   (each worker sends its next request when the last one ends), ``-cpus=1`` on the same pinned
   core; ``-http2`` (Go's transport: one connection, streams up to nginx's limit of 256) or
   ``-http2=false`` (a connection per worker), results discarded (``> /dev/null``).
2. Codec: CPU per request of the HTTP/2 client logic alone, no sockets: our engine's frame
   parser and prebuilt frames against the ``h2`` package end to end (``H2Connection``: send
   headers, parse the same response frames, acknowledge DATA), on identical response bytes.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver, tools  # noqa: E402
from workbench.driver import DriveSpec, RequestTemplate  # noqa: E402
from workbench.target import embedded  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402

CONNECTIONS = bench_driver.CONNECTIONS  # requests in flight: 200, as the HTTP/1.1 table
DRIVER_CPU, SERVER_CPU = bench_driver.DRIVER_CPU, bench_driver.SERVER_CPU
NGINX_CONF = """\
worker_processes 1;
master_process off;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  http2_max_concurrent_streams 256;
  client_body_temp_path {tmp}/body;
  server {{
    {listen}
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
  }}
  server {{
    listen 127.0.0.1:{status_port};
    location / {{ stub_status; }}
  }}
}}
"""


class NginxH2:
    """Debian's nginx serving HTTP/2 over TLS on SERVER_CPU; served requests via stub_status.
    ``tls=False``: plain HTTP/1.1; ``server_cpu=None``: not pinned, as a user starts it."""

    def __init__(self, tmp: Path, tls: bool = True,
                 server_cpu: int | None = SERVER_CPU) -> None:
        self.exe, self.version = tools.find_debian_tool("nginx")
        self.port, self.status_port = free_port(), free_port()
        self.server_cpu = server_cpu
        listen = f"listen 127.0.0.1:{self.port};"
        self.url = f"http://127.0.0.1:{self.port}"
        if tls:
            ca, cert, key = embedded.ensure_tls(tmp / "tls")
            self.ca_file = str(ca)
            listen = (f"listen 127.0.0.1:{self.port} ssl http2; ssl_certificate {cert}; "
                      f"ssl_certificate_key {key}; ssl_protocols TLSv1.3;")
            self.url = f"https://127.0.0.1:{self.port}"
        (tmp / "body").mkdir(exist_ok=True)
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(tmp=tmp, listen=listen,
                                               status_port=self.status_port))

    def __enter__(self) -> NginxH2:
        argv = [*self.exe, "-c", str(self.conf)]
        if self.server_cpu is not None:
            argv = tools.pinned(argv, self.server_cpu)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.count()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not start: {self.proc.stderr.read()[-300:]}") from None
                time.sleep(0.05)
        self.ps = psutil.Process(self.proc.pid)
        return self

    def count(self) -> int:
        """Requests nginx has served (the status requests themselves included: one each)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return int(lines[2].split()[2])

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _clients(server: NginxH2, tmp: Path, run_s: float):
    """(name, protocol, how to get argv and version) for each client in the table."""
    def ours(protocol: str):
        spec = DriveSpec(server.url, (RequestTemplate("GET", "/", "tiny"),),
                         executor="constant-vus", vus=CONNECTIONS, max_vus=CONNECTIONS,
                         duration_s=run_s, ca_file=server.ca_file, protocol=protocol)
        return lambda: (bench_driver._driver_argv(spec, tmp / f"ours-{protocol}"),
                        "this checkout")

    def vegeta(http2: bool):
        def argv():
            exe, version = tools.find_vegeta()
            targets = tmp / "targets.txt"
            targets.write_text(f"GET {server.url}/\n")
            return ["sh", "-c", " ".join(tools.pinned(
                [*exe, "-cpus=1", "attack", "-rate=0", f"-workers={CONNECTIONS}",
                 f"-max-workers={CONNECTIONS}", f"-duration={run_s}s",
                 f"-http2={'true' if http2 else 'false'}", f"-root-certs={server.ca_file}",
                 f"-targets={targets}"], DRIVER_CPU)) + " > /dev/null"], version
        return argv

    yield "workbench driver, h2", "h2", ours("h2")
    yield "vegeta -http2", "h2", vegeta(True)
    yield "workbench driver, h1", "h1", ours("h1")
    yield "vegeta -http2=false", "h1", vegeta(False)


def measure(argv: list[str], server: NginxH2, warmup_s: float, window_s: float) -> dict:
    """Run ``argv``; over a window after warm-up: served req/s, client cores, server cores."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    try:
        start = server.count()
        deadline = time.monotonic() + 60
        while server.count() <= start + 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sent nothing: {proc.stderr.read()[-300:]}")
            time.sleep(0.05)
        time.sleep(warmup_s)
        c0, u0, s0, t0 = (server.count(), bench_driver.tree_cpu(ps), server.cpu(),
                          time.perf_counter())
        time.sleep(window_s)
        c1, u1, s1, t1 = (server.count(), bench_driver.tree_cpu(ps), server.cpu(),
                          time.perf_counter())
        if proc.poll() is not None:
            raise RuntimeError("the client stopped before the window ended")
    finally:
        try:
            proc.wait(timeout=warmup_s + window_s + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = t1 - t0
    rps, cores = (c1 - c0 - 1) / wall, (u1 - u0) / wall
    return {"rps": rps, "cores": cores, "per_core": rps / cores if cores > 0 else math.nan,
            "server_cores": (s1 - s0) / wall}


def bench_capacity(warmup_s: float = 2.5, window_s: float = 5.0) -> list[dict]:
    """Rows: client, protocol, version, req/s, client cores, req/s per core, server cores;
    ``ours_over_vegeta``: our per-core figure over vegeta's on the same protocol."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_s = math.ceil(warmup_s + window_s + 3)
        try:
            server = NginxH2(tmp)
        except tools.Unavailable as exc:
            return [{"client": "nginx (the server)", "protocol": "-", "skipped": str(exc)}]
        with server:
            for name, protocol, prepare in _clients(server, tmp, run_s):
                row = {"client": name, "protocol": protocol}
                try:
                    argv, row["version"] = prepare()
                    row |= measure(argv, server, warmup_s, window_s)
                except (tools.Unavailable, RuntimeError, subprocess.SubprocessError) as exc:
                    row["skipped"] = str(exc)
                rows.append(row)
                time.sleep(1.0)  # let sockets drain between clients
        for row in rows:
            row["server"] = server.version
    for protocol in ("h2", "h1"):
        ours, theirs = (next((r for r in rows if r["protocol"] == protocol
                              and r["client"].startswith(who) and "per_core" in r), None)
                        for who in ("workbench", "vegeta"))
        if ours and theirs:
            ours["ours_over_vegeta"] = ours["per_core"] / theirs["per_core"]
    return rows


def capacity_bars(rows: list[dict]) -> list[tuple[str, float, float, str]]:
    """Our HTTP/2 engine does at least vegeta's HTTP/2 requests per core (the issue's bar)."""
    ours = next((r for r in rows if r["client"] == "workbench driver, h2"), {})
    return [("http2: ours / vegeta -http2, req/s per core",
             ours.get("ours_over_vegeta", math.nan), 1.0, ">=")]


def print_capacity(rows: list[dict]) -> None:
    server = next((r["server"] for r in rows if "server" in r), "nginx")
    print(f"\nHTTP/2 capacity: closed loop, {CONNECTIONS} requests in flight, tiny responses, "
          f"TLS 1.3; client on CPU {DRIVER_CPU}, {server} (1 worker) on CPU {SERVER_CPU}")
    print(f"{'client':<24} {'proto':>5} {'req/s':>10} {'cores':>6} {'req/s/core':>11}"
          f" {'ours/vegeta':>11} {'server':>7}  version")
    for r in rows:
        if "skipped" in r:
            print(f"{r['client']:<24} {r['protocol']:>5} {'skipped':>10}  {r['skipped']}")
            continue
        ratio = f"{r['ours_over_vegeta']:.2f}" if "ours_over_vegeta" in r else "-"
        print(f"{r['client']:<24} {r['protocol']:>5} {r['rps']:>10,.0f} {r['cores']:>6.2f}"
              f" {r['per_core']:>11,.0f} {ratio:>11} {r['server_cores']:>7.2f}"
              f"  {r['version'][:40]}")


# -- 2. codec -------------------------------------------------------------------------------

def bench_codec(requests: int = 50_000) -> list[dict]:
    """Microseconds of client CPU per request: our frame code vs the h2 package, no sockets."""
    from benchmarks.bench_hotpath import REQUEST_HEADERS as headers
    from benchmarks.bench_hotpath import h2_cpu_s
    from workbench.driver.http2_codec import (
        DATA,
        END_HEADERS,
        END_STREAM,
        HEADERS,
        SETTINGS,
        encode_header_block,
        frame,
    )

    block = encode_header_block([(b":status", b"200"), (b"content-type", b"application/json"),
                                 (b"content-length", b"11"),
                                 (b"date", b"Thu, 03 Dec 2026 08:00:00 GMT")])
    body = b'{"ok":true}'
    responses = [frame(HEADERS, END_HEADERS, 2 * i + 1, block)
                 + frame(DATA, END_STREAM, 2 * i + 1, body) for i in range(requests)]
    got = []
    ours_s = h2_cpu_s(responses, lambda *o: got.append(o[0]))
    assert len(got) == requests and got[-1] == 200

    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    client.initiate_connection()
    client.receive_data(frame(SETTINGS, 0, 0))
    client.data_to_send()
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"127.0.0.1:8443"),
              (b":path", b"/"), *[(k.lower().encode(), v.encode()) for k, v in headers.items()]]
    statuses = 0
    t0 = time.process_time()
    for data in responses:
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, fields, end_stream=True)
        client.data_to_send()
        for event in client.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses += 1
            elif isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        client.data_to_send()
    h2_s = time.process_time() - t0
    assert statuses == requests
    import h2 as h2_package

    return [{"codec": "workbench engine (prebuilt frames, stateless HPACK)",
             "us_per_request": ours_s / requests * 1e6},
            {"codec": f"h2 {h2_package.__version__} H2Connection end to end",
             "us_per_request": h2_s / requests * 1e6}]


def print_codec(rows: list[dict]) -> None:
    print("\nHTTP/2 client codec, CPU per request without sockets (GET, HEADERS + DATA answer)")
    base = rows[0]["us_per_request"]
    for r in rows:
        print(f"  {r['codec']:<52} {r['us_per_request']:>7.1f} us  "
              f"({r['us_per_request'] / base:.1f}x)")


def codec_bars(rows: list[dict]) -> list[tuple[str, float, float, str]]:
    return [("http2 codec: h2 package / ours, CPU per request",
             rows[1]["us_per_request"] / rows[0]["us_per_request"], 1.0, ">=")]
