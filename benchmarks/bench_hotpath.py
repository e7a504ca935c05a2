"""The hot path's CPU per request, without sockets: an engine's send and parse of one small
response and the recorder's per-response table, for HTTP/1.1 and HTTP/2; two trees interleaved.

    .venv/bin/python benchmarks/bench_hotpath.py [--before DIR] [--rounds 7] [--requests N]

Cases: ``h1`` (a 200 with four headers and an 11-byte JSON body), ``h2`` (the same as HEADERS
+ DATA, one header block every time), ``h2-request-id`` (each block unique, as certctl's
``X-Request-ID`` makes them: the block cache never hits). Each request also counts its
response kind, as the executors do.

Without ``--before`` it measures this tree. With ``--before DIR`` (another checkout, e.g.
``git worktree add /tmp/before <commit>``), every round runs both trees' code in fresh
processes in ABBA order and the table gives each one's median microseconds of CPU per request
and their ratio: a change to the engines is judged on one host, interleaved, never against a
figure from another day. Run it on a quiet machine; a loaded one only says it works.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("h1", "h2", "h2-request-id")
REQUEST_HEADERS = {"User-Agent": "certctl-workbench-driver", "Accept": "application/json"}
BODY = b'{"ok":true}'


class Sink:
    """The transport calls an engine makes; writes go nowhere."""

    def write(self, data) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def _h1(requests: int, done) -> float:
    from workbench.driver.http1 import HttpEngine, _Connection

    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Content-Length: 11\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\n\r\n" + BODY)
    engine = HttpEngine("http://127.0.0.1:9")
    conn = _Connection(engine)
    conn.connection_made(Sink())
    engine.release(conn)
    request = engine.prepare("GET", "/", REQUEST_HEADERS, None)
    send, receive = engine.send, conn.data_received
    t0 = time.process_time()
    for _ in range(requests):
        send(request, done)
        receive(response)
    return time.process_time() - t0


def h2_codec():
    """The tree's HTTP/2 codec module (in ``http2.py`` itself before it had its own), so
    ``--before`` takes a checkout from either side of the split."""
    try:
        from workbench.driver import http2_codec as codec
    except ImportError:
        from workbench.driver import http2 as codec
    return codec


def h2_responses(requests: int, unique: bool) -> list[bytes]:
    """The server's answers on streams 1, 3, 5, ...: HEADERS + DATA; ``unique``: every header
    block different (a request id in each)."""
    c = h2_codec()
    frame, block = c.frame, c.encode_header_block

    fields = [(b":status", b"200"), (b"content-type", b"application/json; charset=utf-8"),
              (b"content-length", b"11"), (b"date", b"Thu, 03 Dec 2026 08:00:00 GMT")]
    same = block(fields)
    return [frame(c.HEADERS, c.END_HEADERS, 2 * i + 1,
                  block(fields + [(b"x-request-id", b"%036d" % i)]) if unique else same)
            + frame(c.DATA, c.END_STREAM, 2 * i + 1, BODY) for i in range(requests)]


def h2_cpu_s(responses: list[bytes], done) -> float:
    """CPU seconds of our HTTP/2 engine sending a GET for each of ``responses`` (frames for
    streams 1, 3, 5, ...) and parsing it, no sockets; ``done`` gets each outcome."""
    import asyncio

    from workbench.driver.http2 import Http2Engine, _Connection

    codec = h2_codec()
    loop = asyncio.new_event_loop()
    try:
        engine = Http2Engine("http://127.0.0.1:9")
        engine.loop = loop
        conn = _Connection(engine)
        engine.pool.append(conn)
        conn.connection_made(Sink())
        conn.data_received(codec.frame(codec.SETTINGS, 0, 0))
        request = engine.prepare("GET", "/", REQUEST_HEADERS, None)
        send, receive, flush = engine.send, conn.data_received, conn.flush
        t0 = time.process_time()
        for data in responses:
            send(request, done)
            flush()
            receive(data)
        return time.process_time() - t0
    finally:
        loop.close()


def measure(case: str, requests: int, repeats: int = 3) -> float:
    """Best of ``repeats``: microseconds of CPU per request of ``case`` in this process."""
    from workbench.driver.recorder import Recorder

    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            kind = Recorder(["t"], Path(tmp) / "r.parquet").kind
            done = lambda status, ctype, *rest, kind=kind: kind(0, status, ctype)  # noqa: E731
            seconds = (_h1(requests, done) if case == "h1" else h2_cpu_s(
                h2_responses(requests, unique=case == "h2-request-id"), done))
            best = min(best, seconds / requests * 1e6)
    return best


def _child(tree: Path, case: str, requests: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(tree), "--case", case,
                          "--requests", str(requests)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)["us"]


def compare(before: Path | None, rounds: int, requests: int) -> list[dict]:
    """Median us/request per case and tree, the trees alternating ABBA over ``rounds``."""
    trees = {"this tree": ROOT} | ({"before": before} if before else {})
    rows = []
    for case in CASES:
        samples: dict[str, list[float]] = {name: [] for name in trees}
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                samples[name].append(_child(trees[name], case, requests))
        rows.append({"case": case} | {name: statistics.median(v) for name, v in samples.items()})
    return rows


def print_table(rows: list[dict]) -> None:
    print("\nHot path, CPU per request without sockets (send + parse + response kind), us,"
          " median of rounds")
    names = [k for k in rows[0] if k != "case"]
    print(f"  {'case':<16}" + "".join(f"{n:>12}" for n in names)
          + (f"{'this/before':>13}" if "before" in names else ""))
    for r in rows:
        line = f"  {r['case']:<16}" + "".join(f"{r[n]:>12.3f}" for n in names)
        if "before" in r:
            line += f"{r['this tree'] / r['before']:>13.3f}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, help="another checkout to compare with, interleaved")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one measurement of one tree's code, in a fresh process
        sys.path.insert(0, str(args.child.resolve()))
        print(json.dumps({"us": measure(args.case, args.requests)}))
        return 0
    print_table(compare(args.before, args.rounds, args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
