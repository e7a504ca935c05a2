"""The HTTP/2 engine on the wire: against the ``h2`` package as an oracle, and Go's net/http.

The oracle is a server built on ``h2`` (its own HPACK, framing, flow control and stream state
checks), so anything our engine encodes wrongly is refused by it, and anything it sends that
our engine decodes wrongly shows in the outcomes. The real server is Go's net/http (the stack
certctl serves with), built from ``benchmarks/h2server`` with the local Go toolchain.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from tests.loopback import free_port
from workbench.driver.http2 import Http2Engine
from workbench.driver.http2_codec import decode_header_block, encode_header_block
from workbench.driver.outcomes import ERR
from workbench.driver.shard import loop_factory, run_shard
from workbench.driver.spec import DriveSpec, RequestTemplate
from workbench.target import embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[str, str, str]:
    ca, cert, key = embedded.ensure_tls(tmp_path_factory.mktemp("h2tls"))
    return str(ca), str(cert), str(key)


class Oracle:
    """An HTTP/2 server on the ``h2`` package, in a thread, recording what it saw.

    Paths: ``/tiny``, ``/big?n=N``, ``POST /echo``, ``/status/CODE``, ``/slow?ms=N``,
    ``/rst`` (RST_STREAM), ``/drop`` (connection aborted), ``/goaway`` (the first one gets a
    GOAWAY that leaves it unprocessed; later ones are answered), ``/interim`` (103 first),
    ``HEAD /head``.
    """

    def __init__(self, tls: tuple[str, str, str], *, max_streams: int = 100,
                 alpn: tuple[str, ...] = ("h2",), window: int = 65_535) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = tls[0]
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(tls[1], tls[2])
        self.ctx.set_alpn_protocols(list(alpn))
        self.max_streams, self.window = max_streams, window
        self.connections = 0
        self.requests: list[tuple[dict[bytes, bytes], bytes]] = []
        self.resets: list[int] = []
        self.window_updates = 0
        self.client_settings: dict[int, int] = {}
        self.peak_streams = 0
        self.protocol_errors: list[str] = []
        self.goaway_sent = False
        self.serial = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(self._loop.create_server(
            lambda: _OracleProtocol(self), "127.0.0.1", self.port, ssl=self.ctx))
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Oracle:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _OracleProtocol(asyncio.Protocol):
    def __init__(self, server: Oracle) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.sending: dict[int, memoryview] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.server.window})
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.server.protocol_errors.append(repr(exc))
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.headers[ev.stream_id] = dict(ev.headers)
                self.bodies[ev.stream_id] = bytearray()
                self.server.peak_streams = max(self.server.peak_streams,
                                               self.conn.open_inbound_streams)
            elif isinstance(ev, h2.events.DataReceived):
                self.bodies[ev.stream_id] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.handle(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.server.resets.append(ev.error_code)
                self.sending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                self.server.window_updates += 1
                self.pump()
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                self.server.client_settings.update(
                    {int(k): v.new_value for k, v in ev.changed_settings.items()})
        self.flush()

    def respond(self, sid: int, status: int, body: bytes, ctype: bytes = b"application/json",
                extra: tuple = ()) -> None:
        if sid not in self.conn.streams or self.transport.is_closing():
            return
        self.server.serial += 1
        self.conn.send_headers(sid, [(b":status", str(status).encode()),
                                     (b"content-type", ctype),
                                     (b"x-request-id", str(self.server.serial).encode()),
                                     *extra])
        self.sending[sid] = memoryview(body)
        self.pump()
        self.flush()

    def pump(self) -> None:
        for sid in list(self.sending):
            data = self.sending[sid]
            try:
                while True:
                    room = min(self.conn.local_flow_control_window(sid),
                               self.conn.max_outbound_frame_size)
                    if data and room <= 0:
                        break
                    chunk, data = data[:room], data[room:]
                    self.conn.send_data(sid, bytes(chunk), end_stream=not data)
                    if not data:
                        break
            except h2.exceptions.NoSuchStreamError:
                data = None
            if data:
                self.sending[sid] = data
            else:
                del self.sending[sid]

    def handle(self, sid: int) -> None:
        headers = self.headers[sid]
        body = bytes(self.bodies[sid])
        self.server.requests.append((headers, body))
        url = urlsplit(headers[b":path"].decode())
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/tiny":
            self.respond(sid, 200, b'{"ok":true}', b"Application/JSON; charset=utf-8")
        elif path == "/big":
            self.respond(sid, 200, bytes(range(256)) * (int(query["n"]) // 256),
                         b"application/octet-stream")
        elif path == "/echo":
            self.respond(sid, 200, body, b"application/octet-stream")
        elif path.startswith("/status/"):
            self.respond(sid, int(path.rsplit("/", 1)[1]), b"x", b"text/plain")
        elif path == "/slow":
            asyncio.get_running_loop().call_later(
                int(query["ms"]) / 1000, lambda: (self.respond(sid, 200, b"late"), self.flush()))
        elif path == "/rst":
            self.conn.reset_stream(sid, error_code=2)
        elif path == "/drop":
            self.transport.abort()
        elif path == "/goaway" and not self.server.goaway_sent:
            self.server.goaway_sent = True
            self.conn.close_connection(last_stream_id=max(sid - 2, 0))
        elif path == "/interim":
            self.conn.send_headers(sid, [(b":status", b"103"), (b"link", b"</x>")])
            self.respond(sid, 201, b"final", b"text/plain")
        elif headers[b":method"] == b"HEAD":
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"1000")],
                                   end_stream=True)
        else:
            self.respond(sid, 200, b"again", b"text/plain")


def exchange(url: str, requests: list[tuple], *, concurrent: bool = True, **engine_kw):
    """Send ``(method, path[, body, headers])`` requests on one engine; their outcomes."""
    async def main():
        engine = Http2Engine(url, **engine_kw)
        await engine.start(1)
        loop = asyncio.get_running_loop()
        sending = False

        def send(request):
            nonlocal sending
            method, path, body, headers = (*request, None, None)[:4]
            prepared = engine.prepare(method, path, headers or {"accept": "*/*"}, body,
                                      want_body=True, want_head=True)
            done = loop.create_future()

            def finished(*outcome):
                assert not sending, "done was called from inside send"
                done.set_result(outcome)
            sending = True
            engine.send(prepared, finished)
            sending = False
            return done

        if concurrent:
            outcomes = await asyncio.gather(*(send(r) for r in requests))
        else:
            outcomes = [await send(r) for r in requests]
        await engine.close()
        return outcomes

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


def test_hpack_blocks_round_trip_through_the_h2_packages_decoder():
    import hpack

    fields = [(b":method", b"POST"), (b":path", b"/api/v1/agents/a-1/heartbeat"),
              (b"content-type", b"application/json"), (b"authorization", b"Bearer s3cret"),
              (b"x-custom-name", b"v" * 300)]
    block = encode_header_block(fields)
    assert [(bytes(k), bytes(v)) for k, v in hpack.Decoder().decode(block, raw=True)] == fields
    encoder = hpack.Encoder()
    encoder.header_table_size = 0  # what we advertise: the server's encoder then stays stateless
    response = encoder.encode([(b":status", b"404"), (b"content-type", b"text/plain; x=1"),
                               (b"date", b"Thu, 03 Dec 2026 08:00:00 GMT")], huffman=True)
    status, ctype, got = decode_header_block(response, full=True)
    assert (status, ctype) == (404, b"text/plain; x=1")
    assert got[2] == (b"date", b"Thu, 03 Dec 2026 08:00:00 GMT")


def test_requests_are_what_the_oracle_expects_and_responses_come_back_whole(tls):
    with Oracle(tls) as srv:
        outcomes = exchange(srv.url, [
            ("GET", "/tiny", None, {"Authorization": "Bearer t0k", "Host": "x",
                                    "Connection": "keep-alive", "User-Agent": "ua"}),
            ("POST", "/echo", b'{"a":1}', {"Content-Type": "application/json"}),
            ("GET", "/tiny"), ("GET", "/status/503"), ("GET", "/interim"), ("HEAD", "/head"),
        ], concurrent=False, ca_file=srv.ca_file)
        assert srv.protocol_errors == []
        settings = srv.client_settings
        headers = [h for h, _ in srv.requests]
    assert settings[h2.settings.SettingCodes.HEADER_TABLE_SIZE] == 0
    assert settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0
    assert headers[0] == {b":method": b"GET", b":scheme": b"https",
                          b":authority": f"127.0.0.1:{urlsplit(srv.url).port}".encode(),
                          b":path": b"/tiny", b"authorization": b"Bearer t0k",
                          b"user-agent": b"ua"}
    assert headers[1][b"content-length"] == b"7" and srv.requests[1][1] == b'{"a":1}'
    tiny = (200, b"application/json", 11, b'{"ok":true}', 0)
    assert outcomes[0][:5] == tiny and outcomes[2][:5] == tiny
    assert outcomes[1][:5] == (200, b"application/octet-stream", 7, b'{"a":1}', 0)
    assert outcomes[3][:5] == (503, b"text/plain", 1, b"x", 0)
    assert outcomes[4][:5] == (201, b"text/plain", 5, b"final", 0)  # the 103 is skipped
    assert outcomes[5][:5] == (200, None, 0, None, 0)
    # each response's own fields are in its head, as the HTTP/1.1 engine gives them
    assert outcomes[0][5].startswith(b"HTTP/2 200\r\n")
    assert b"\r\nx-request-id: 1\r\n" in outcomes[0][5]
    assert b"\r\nx-request-id: 3\r\n" in outcomes[2][5]


def test_the_servers_stream_limit_is_honoured_and_the_rest_wait(tls):
    with Oracle(tls, max_streams=3) as srv:
        outcomes = exchange(srv.url, [("GET", "/slow?ms=20")] * 30, ca_file=srv.ca_file)
        peak, connections, errors = srv.peak_streams, srv.connections, srv.protocol_errors
    assert [o[:5] for o in outcomes] == [(200, b"application/json", 4, b"late", 0)] * 30
    assert (peak, connections, errors) == (3, 1, [])


def test_large_bodies_both_ways_follow_flow_control(tls):
    big = bytes(range(256)) * 4096  # 1 MiB
    upload = bytes(range(256))[::-1] * 1200  # 300 KiB against the oracle's 64 KiB windows
    with Oracle(tls) as srv:
        outcomes = exchange(srv.url, [("GET", f"/big?n={len(big)}"), ("POST", "/echo", upload),
                                      ("GET", f"/big?n={len(big)}")],
                            ca_file=srv.ca_file, stream_window=65_535, connection_window=65_535)
        updates, errors = srv.window_updates, srv.protocol_errors
    assert errors == []
    assert outcomes[0][:5] == (200, b"application/octet-stream", len(big), big, 0)
    assert outcomes[2][:5] == outcomes[0][:5]
    assert outcomes[1][:5] == (200, b"application/octet-stream", len(upload), upload, 0)
    assert updates > 0  # the server had to open its windows for the upload


def test_rst_stream_connection_loss_and_goaway_map_to_error_classes(tls):
    with Oracle(tls) as srv:
        rst, = exchange(srv.url, [("GET", "/rst")], ca_file=srv.ca_file)
        drop, = exchange(srv.url, [("GET", "/drop")], ca_file=srv.ca_file)
        before = srv.connections
        goaway, = exchange(srv.url, [("GET", "/goaway")], ca_file=srv.ca_file)
        opened = srv.connections - before
    assert rst[4] == ERR["reset"] and drop[4] == ERR["reset"]
    # the GOAWAY left the stream unprocessed: sent again, once, on a new connection
    assert goaway[:5] == (200, b"text/plain", 5, b"again", 0) and opened == 2


def test_a_request_past_its_timeout_is_cancelled_on_the_wire(tls):
    with Oracle(tls) as srv:
        slow, fast = exchange(srv.url, [("GET", "/slow?ms=5000"), ("GET", "/tiny")],
                              ca_file=srv.ca_file, timeout_s=0.3)
        resets = srv.resets
    assert slow[:2] == (0, None) and slow[4] == ERR["timeout"]
    assert fast[:5] == (200, b"application/json", 11, b'{"ok":true}', 0)
    assert resets == [8]  # CANCEL: the connection stays usable for the others


def test_a_server_without_h2_or_no_server_at_all_is_an_error_not_a_hang(tls):
    with Oracle(tls, alpn=("http/1.1",)) as srv:
        no_h2, = exchange(srv.url, [("GET", "/tiny")], ca_file=srv.ca_file)
    refused, = exchange(f"https://127.0.0.1:{free_port()}", [("GET", "/tiny")],
                        ca_file=tls[0])
    with Oracle(tls) as srv:  # no CA file: the system store does not know our CA
        untrusted, = exchange(srv.url, [("GET", "/tiny")], ca_file=None)
    assert no_h2[4] == ERR["tls"] and untrusted[4] == ERR["tls"]
    assert refused[4] == ERR["connect"]


def test_each_client_gets_its_own_connection_and_the_pool_stays_shared(tls):
    async def main(url: str, ca_file: str):
        engine = Http2Engine(url, ca_file=ca_file)
        await engine.start(1)
        clients = [engine.client() for _ in range(5)]
        await asyncio.gather(*(c.open() for c in clients))
        loop = asyncio.get_running_loop()
        request = engine.prepare("GET", "/tiny", {}, None)
        futures = []
        for sender in [*clients, engine] * 3:
            done = loop.create_future()
            sender.send(request, lambda *o, done=done: done.set_result(o))
            futures.append(done)
        outcomes = await asyncio.gather(*futures)
        slow = loop.create_future()
        clients[0].send(engine.prepare("GET", "/slow?ms=5000", {}, None),
                        lambda *o: slow.set_result(o))
        await asyncio.sleep(0.05)
        clients[0].close()
        cancelled = await slow
        await engine.close()
        return outcomes, cancelled

    with Oracle(tls) as srv:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            outcomes, cancelled = runner.run(main(srv.url, srv.ca_file))
        connections = srv.connections
    assert {o[:5] for o in outcomes} == {(200, b"application/json", 11, None, 0)}
    assert connections == 6  # five clients' own and the shared one
    assert cancelled[4] == ERR["cancelled"]


def test_run_shard_drives_the_h2_engine_with_the_usual_accounting(tls, tmp_path):
    with Oracle(tls) as srv:
        spec = DriveSpec(srv.url, (RequestTemplate("GET", "/tiny", "tiny"),),
                         executor="constant-vus", vus=20, max_vus=20, duration_s=1.0,
                         ca_file=srv.ca_file)
        report = run_shard(spec, tmp_path, engine=Http2Engine(spec.base_url,
                                                              ca_file=spec.ca_file))
        served = len(srv.requests)
    assert report["status"] == "completed" and report["engine"] == "workbench-h2"
    assert report["failed"] == 0 and report["completed"] > 20
    assert report["scheduled"] == report["completed"] + report["failed"] + report["dropped"]
    assert served == report["completed"]


# -- a real HTTP/2 server: Go's net/http --------------------------------------------------

def _go() -> str | None:
    return shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)


@pytest.fixture(scope="module")
def go_server_binary(tmp_path_factory) -> Path:
    go = _go()
    if go is None:
        pytest.skip("no Go toolchain to build benchmarks/h2server (Go's net/http)")
    work = tmp_path_factory.mktemp("go")
    out = work / "h2server"
    env = dict(os.environ)
    if not env.get("HOME") and not env.get("XDG_CACHE_HOME"):  # CI may have neither
        env["GOCACHE"] = str(work / "cache")
    subprocess.run([go, "build", "-o", str(out), "main.go"], cwd=ROOT / "benchmarks" / "h2server",
                   check=True, capture_output=True, timeout=300, env=env)
    return out


@pytest.mark.parametrize("max_streams", [250, 4])
def test_against_go_net_http(go_server_binary, tls, max_streams):
    port = free_port()
    proc = subprocess.Popen([str(go_server_binary), "-addr", f"127.0.0.1:{port}",
                             "-cert", tls[1], "-key", tls[2], "-max-streams", str(max_streams)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        requests = [("GET", "/"), ("POST", "/", b'{"version":"1"}')] * 200
        outcomes = exchange(f"https://127.0.0.1:{port}", requests, ca_file=tls[0])
    finally:
        proc.terminate()
        proc.wait(10)
    assert {o[:5] for o in outcomes} == {(200, b"application/json", 11, b'{"ok":true}', 0)}
    assert all(o[5].startswith(b"HTTP/2 200\r\n") for o in outcomes)


@pytest.mark.slow
def test_workbench_drive_protocol_h2_records_h2_and_sends_every_request(tls, tmp_path):
    import json
    import sys

    with Oracle(tls) as srv:
        out = subprocess.run(
            [sys.executable, "-m", "workbench.cli", "drive", f"{srv.url}/tiny", "--protocol", "h2",
             "--rate", "50", "--duration", "2", "--vus", "20", "--ca-file", srv.ca_file,
             "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
        served = len(srv.requests)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["protocol"] == "h2" and result["driver"]["engine"] == "workbench-h2"
    assert (result["scheduled"], result["completed"], served) == (100, 100, 100)
    assert result["response_kinds"]["adhoc"] == {"200 application/json": 100}
    # on a loaded machine only the driver's own timing may make a run invalid, never the h2 path
    assert all("lag" in r or "CPU" in r for r in result["invalid_reasons"])


def test_an_unknown_protocol_is_refused_before_any_load():
    from workbench.errors import WorkbenchError

    spec = DriveSpec("https://127.0.0.1:1", (RequestTemplate("GET", "/", "t"),), rate=1,
                     duration_s=1, protocol="h3")
    with pytest.raises(WorkbenchError, match="unknown protocol 'h3'; choose h1"):
        spec.validate()
