"""Signed ACME orders: what one driver core sustains, and what signing costs per request.

    .venv/bin/python benchmarks/bench_acme_orders.py [--quick]
    .venv/bin/python benchmarks/run.py --only acme_orders

Three measurements per account-key algorithm (ES256, the scenario's default; RS256 and EdDSA
for comparison), side by side in one run:

1. **sign**: ``AccountKey.sign`` of a new-order JWS (protected header, payload, signature,
   flattened JSON) in a loop, in CPU time of this process: the signing cost per request.
2. **responder**: the acme_orders script (new-order loop, 32 VUs, no think time) in one driver
   process pinned to CPU 0 against a responder on CPU 1 that answers new-nonce, new-account
   and new-order instantly without verifying, over plain HTTP: the driver is the only real
   work, so new-orders per second divided by the driver's CPU fraction is *signed orders per
   second per driver core*. The run's own ``sign_ms`` shows the signing cost inside the loop.
3. **stand-in**: the same script against the embedded stand-in (HTTPS, JWS verified, rows in
   PostgreSQL; 8 VUs): end-to-end orders per second, where the stand-in is the bottleneck, with
   the driver's CPU per order beside it.

Absolute numbers move with the shared machine's load; compare the rows of one run. Bars (for
``run.py``): ES256 orders per driver core and ES256 signing cost, on the development machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_driver  # noqa: E402
from benchmarks.bars import Bar, print_bars  # noqa: E402
from workbench import driver, scenarios  # noqa: E402
from workbench.jws import ALLOWED_ALGS, AccountKey  # noqa: E402
from workbench.target import embedded  # noqa: E402
from workbench.target.ports import free_port  # noqa: E402

ALGS = ("ES256", "RS256", "EdDSA")
VUS_RESPONDER, VUS_STANDIN = 32, 8
ORDERS_PER_CORE_TARGET = 3000.0  # ES256 signed new-orders per driver core-second
SIGN_P50_TARGET_MS = 0.5  # ES256, one new-order JWS


# -- the responder: answers the three ACME calls at once, verifies nothing ---------------------

class _Responder(asyncio.Protocol):
    count = 0

    def connection_made(self, transport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].decode("latin-1")
            length = 0
            host = "127.0.0.1"
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "host":
                    host = value.strip()
            if len(buf) < end + 4 + length:
                break
            path = head.split(" ", 2)[1]
            buf = buf[end + 4 + length:]
            self.transport.write(_answer(host, path))
        self.buf = buf


def _answer(host: str, path: str) -> bytes:
    _Responder.count += 1
    base = path.rsplit("/", 1)[0]
    nonce = f"n{_Responder.count:042d}"
    if path.endswith("/new-nonce"):
        return (f"HTTP/1.1 200 OK\r\nReplay-Nonce: {nonce}\r\nContent-Length: 0\r\n\r\n"
                .encode())
    if path.endswith("/new-account"):
        location, body = f"http://{host}{base}/account/acme-acc-bench", b'{"status":"valid"}'
    else:
        order = f"http://{host}{base}/order/acme-ord-{_Responder.count}"
        location = order
        body = json.dumps({"status": "ready", "authorizations": [],
                           "finalize": order + "/finalize"}).encode()
    return (f"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nReplay-Nonce: {nonce}"
            f"\r\nLocation: {location}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def serve(port: int) -> None:
    os.sched_setaffinity(0, {bench_driver.SERVER_CPU})

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Responder, "127.0.0.1", port,
                                                                backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    import uvloop

    uvloop.run(main())


# -- the measurements ---------------------------------------------------------------------------

def bench_sign(alg: str, seconds: float) -> dict:
    """CPU microseconds per new-order JWS, and signs per CPU-second."""
    key = AccountKey.generate(alg)
    kid = "https://127.0.0.1:8443/acme/profile/prof-standard-tls/account/acme-acc-" + "x" * 43
    url = "https://127.0.0.1:8443/acme/profile/prof-standard-tls/new-order"
    nonce = "n" * 43
    times = []
    cpu0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for n in range(50):
            start = time.perf_counter_ns()
            key.sign(url, nonce, {"identifiers": [{"type": "dns", "value": f"o-0-{n}.x.test"}]},
                     kid=kid)
            times.append(time.perf_counter_ns() - start)
    cpu = time.process_time() - cpu0
    return {"alg": alg, "signs": len(times), "p50_us": statistics.median(times) / 1000,
            "mean_us": statistics.fmean(times) / 1000, "per_cpu_s": len(times) / cpu}


def _spec(url: str, alg: str, vus: int, seconds: float, **extra) -> driver.DriveSpec:
    scenario = scenarios.get("acme_orders")
    params = {"vus": vus, "duration_s": seconds, "sleep_s": 0.0, "alg": alg,
              "fetch_order": False, "fetch_authz": False, "finalize": False,
              "profile_id": "prof-standard-tls"}
    return driver.DriveSpec(base_url=url, templates=scenario.templates(params),
                            **scenario.executor_settings(params), scenario="acme_orders",
                            **extra)


def _row(result: driver.DriveResult) -> dict:
    orders = result["by_tag"]["new_order"]["count"]
    rate = orders / result["active_s"]
    cpu = result["driver"]["cpu_fraction"]
    return {"orders": orders, "orders_per_s": rate, "driver_cpu": cpu,
            "per_core": rate / cpu if cpu > 0 else float("nan"),
            "sign_p50_ms": result["sign_ms"]["p50"], "sign_p99_ms": result["sign_ms"]["p99"],
            "order_p50_ms": result["by_tag"]["new_order"]["latency_ms"]["p50"],
            "order_p99_ms": result["by_tag"]["new_order"]["latency_ms"]["p99"],
            "problems": result["problems"], "failed": result["failed"]}


def bench_responder(alg: str, seconds: float, tmp: Path) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the ACME responder did not start")
        result = bench_driver.run_driver(_spec(f"http://127.0.0.1:{port}", alg, VUS_RESPONDER,
                                               seconds), tmp / f"responder-{alg}")
    finally:
        proc.terminate()
        proc.wait(10)
    return {"alg": alg} | _row(result)


def bench_standin(algs: tuple[str, ...], seconds: float, tmp: Path) -> list[dict]:
    state = tmp / "target"
    info = embedded.up(state, port=free_port())
    rows = []
    try:
        env = {"WORKBENCH_BENCH_TOKEN": embedded.read_token(state)}
        for alg in algs:
            spec = _spec(info.url, alg, VUS_STANDIN, seconds, ca_file=info.ca_file,
                         token_env="WORKBENCH_BENCH_TOKEN")
            result = driver.drive(spec, tmp / f"standin-{alg}", env=env, echo=lambda line: None)
            rows.append({"alg": alg} | _row(result))
    finally:
        embedded.down(state)
    return rows


def bench(quick: bool = False) -> dict:
    seconds = 2.0 if quick else 8.0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        return {"sign": [bench_sign(alg, 0.5 if quick else 2.0) for alg in ALGS],
                "responder": [bench_responder(alg, seconds, tmp) for alg in ALGS],
                "standin": bench_standin(ALGS, seconds, tmp)}


def print_tables(out: dict) -> None:
    print("\nSigning one new-order JWS (AccountKey.sign: header, payload, signature, JSON)")
    print(f"{'alg':<6} {'signs':>7} {'p50 us':>8} {'mean us':>8} {'signs/CPU-s':>12}")
    for r in out["sign"]:
        print(f"{r['alg']:<6} {r['signs']:>7} {r['p50_us']:>8.1f} {r['mean_us']:>8.1f}"
              f" {r['per_cpu_s']:>12,.0f}")
    for title, key in ((f"Signed new-orders, {VUS_RESPONDER} VUs, driver on CPU "
                        f"{bench_driver.DRIVER_CPU} vs an instant responder on CPU "
                        f"{bench_driver.SERVER_CPU} (plain HTTP, no verification)", "responder"),
                       (f"Signed new-orders, {VUS_STANDIN} VUs, against the stand-in (HTTPS, "
                        "JWS verified, PostgreSQL): the stand-in is the bottleneck", "standin")):
        print(f"\n{title}")
        print(f"{'alg':<6} {'orders':>7} {'orders/s':>9} {'drv cpu':>8} {'/drv core':>10}"
              f" {'sign p50':>9} {'sign p99':>9} {'order p50':>10} {'order p99':>10}  problems")
        for r in out[key]:
            print(f"{r['alg']:<6} {r['orders']:>7} {r['orders_per_s']:>9,.0f}"
                  f" {r['driver_cpu']:>8.2f} {r['per_core']:>10,.0f} {r['sign_p50_ms']:>9.3f}"
                  f" {r['sign_p99_ms']:>9.3f} {r['order_p50_ms']:>10.2f}"
                  f" {r['order_p99_ms']:>10.2f}  {r['problems'] or '-'}")


def bars(out: dict) -> list[Bar]:
    es256 = next(r for r in out["responder"] if r["alg"] == "ES256")
    sign = next(r for r in out["sign"] if r["alg"] == "ES256")
    clean = sum(r["failed"] for r in out["responder"] + out["standin"])
    return [("acme_orders: ES256 signed orders/s per driver core", es256["per_core"],
             ORDERS_PER_CORE_TARGET, ">="),
            ("acme_orders: ES256 sign p50 (ms)", sign["p50_us"] / 1000, SIGN_P50_TARGET_MS, "<="),
            ("acme_orders: failed requests (all runs)", float(clean), 0.0, "<=")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short windows: a smoke test only")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the responder process
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    assert set(ALGS) == set(ALLOWED_ALGS)
    out = bench(args.quick)
    print_tables(out)
    return 1 if print_bars(bars(out)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
