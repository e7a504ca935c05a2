"""The benchmark target: a small HTTP/1.1 server whose every delay is known and measured.

    python benchmarks/servers.py --port P [--cpu 1]
        [--delay none|fixed:MS|lognormal:MEDIAN_MS:SIGMA] [--stall-after S --stall-s S]
        [--counter FILE] [--holds FILE.npy] [--slots K] [--realtime]

One process, uvloop, an ``asyncio.Protocol`` answering every request with a tiny JSON body, so
on its own core it outpaces the clients under test. Why not aiohttp's server with
``asyncio.sleep``: that sleep lands up to ~1 ms late (selector rounding), so the "truth" of an
accuracy test would itself be off by the tolerance. Here a delayed response is released by a
timerfd at its deadline (``workbench.driver.timer``), and the server measures each request's
actual hold time (head parsed -> response written) with ``perf_counter_ns``; those measured
holds, dumped to ``--holds`` on exit, are the ground truth the driver is compared with.

``--counter``: an 8-byte file the server increments per response (read by the benchmark
through mmap, to count requests served inside a measuring window). ``--stall-after S``: S
seconds after the first request the server answers nothing for ``--stall-s`` seconds
(coordinated-omission test); the stall's UTC start and end are written next to the holds file.

``--slots K``: a server of known capacity. At most K requests are held at once; a request that
finds every slot busy waits in a FIFO queue for one, and its hold starts when it gets it. With
``--delay fixed:H`` it serves at most K / H requests per second (K=4, H=20 ms: 200 req/s): below
that nothing waits, above it the queue, and every response time, grows for as long as the load
lasts. The capacity search's accuracy is measured against it (benchmarks/bench_capacity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import mmap
import os
import signal
import sys
import time
from array import array
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.driver.timer import TimerfdTimer  # noqa: E402

BODY = b'{"ok":true}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.delay = args.delay
        self.holds = array("q")
        self.stall_after_ns = int(args.stall_after * 1e9) if args.stall_after else 0
        self.stall_ns = int(args.stall_s * 1e9)
        self.stall_from = self.stall_until = 0
        self.stall_epoch: tuple[int, int] | None = None
        self.requests = 0
        self.pending: list = []  # heap of (deadline, seq, protocol, received)
        self.seq = 0
        self.slots = args.slots  # 0: unlimited
        self.busy = 0
        self.waiting: deque = deque()  # (protocol, received) waiting for a slot, FIFO
        self.counter = None
        if args.counter:
            fd = os.open(args.counter, os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(fd, 8)
            self.counter = memoryview(mmap.mmap(fd, 8)).cast("q")
            os.close(fd)
        kind, *params = args.delay.split(":")
        self.fixed_ns = int(float(params[0]) * 1e6) if kind == "fixed" else 0
        self.draws = None
        if kind == "lognormal":
            median_ms, sigma = float(params[0]), float(params[1])
            rng = np.random.default_rng(20261126)
            self.draws = (rng.lognormal(math.log(median_ms), sigma, 4_000_000) * 1e6).astype(
                np.int64).tolist()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = TimerfdTimer(loop, self.release)

    def hold_for(self) -> int:
        if self.draws is not None:
            return self.draws[self.requests % len(self.draws)]
        return self.fixed_ns

    def request(self, proto: _Protocol, received: int) -> None:
        self.requests += 1
        if self.requests == 1 and self.stall_after_ns:
            self.stall_from = received + self.stall_after_ns
            self.stall_until = self.stall_from + self.stall_ns
            offset = time.time_ns() - time.perf_counter_ns()
            self.stall_epoch = (self.stall_from + offset, self.stall_until + offset)
        if self.slots:
            if self.busy >= self.slots:
                self.waiting.append((proto, received))
                return
            self.busy += 1
        self.hold(proto, received, received)

    def hold(self, proto: _Protocol, received: int, now: int) -> None:
        """Start a request's hold at ``now`` (its arrival, or when it got a slot)."""
        deadline = now + self.hold_for()
        if self.stall_from <= received < self.stall_until:
            deadline = max(deadline, self.stall_until)
        if deadline <= now:
            self.respond(proto, received)
            return
        self.seq += 1
        heapq.heappush(self.pending, (deadline, self.seq, proto, received))
        if self.pending[0][1] == self.seq:
            self.timer.arm(deadline)

    def release(self) -> None:
        now = time.perf_counter_ns()
        pending = self.pending
        while pending and pending[0][0] <= now:
            _, _, proto, received = heapq.heappop(pending)
            self.respond(proto, received)
        if pending:
            self.timer.arm(pending[0][0])

    def respond(self, proto: _Protocol, received: int) -> None:
        if not proto.transport.is_closing():
            proto.transport.write(RESPONSE)
            self.holds.append(time.perf_counter_ns() - received)
            if self.counter is not None:
                self.counter[0] += 1
        self.free_slot()

    def free_slot(self) -> None:
        """A held request is done: give its slot to the longest-waiting request."""
        if not self.slots:
            return
        self.busy -= 1
        while self.waiting and self.busy < self.slots:
            proto, received = self.waiting.popleft()
            if proto.transport.is_closing():
                continue
            self.busy += 1
            self.hold(proto, received, time.perf_counter_ns())


class _Protocol(asyncio.Protocol):
    server: Server

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self.buf + data if self.buf else data
        start = 0
        while True:  # GETs only: a request is its head
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            self.server.request(self, now)
            start = end + 4
        self.buf = buf[start:]


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = Server(args)
    server.start(loop)
    _Protocol.server = server
    listener = await loop.create_server(_Protocol, "127.0.0.1", args.port, backlog=4096,
                                        reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("ready", flush=True)
    await stop
    listener.close()
    if args.holds:
        np.save(args.holds, np.frombuffer(server.holds, dtype=np.int64))
        Path(args.holds).with_suffix(".json").write_text(json.dumps(
            {"requests": server.requests, "stall_epoch_ns": server.stall_epoch}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cpu", type=int)
    p.add_argument("--delay", default="none")
    p.add_argument("--stall-after", type=float, default=0.0)
    p.add_argument("--stall-s", type=float, default=2.0)
    p.add_argument("--counter")
    p.add_argument("--holds")
    p.add_argument("--realtime", action="store_true",
                   help="run under SCHED_FIFO (or nice -20) as the driver does, where allowed: "
                        "a known-capacity server must not stall behind other tenants")
    p.add_argument("--slots", type=int, default=0,
                   help="requests held at once; more wait in a queue (0: no limit)")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.realtime:
        from workbench.driver.priority import protect

        protect(watchdog=False)  # a server busy by design keeps its priority
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
