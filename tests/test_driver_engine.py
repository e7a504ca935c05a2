"""The hot-loop HTTP engine against real sockets: HTTP/1.1 framing, keep-alive, errors, TLS."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.loopback import LoopbackServer, free_port
from tests.rawserver import RawServer
from workbench.driver import ERROR_CLASSES, HttpEngine
from workbench.driver.engine import find_header
from workbench.driver.shard import loop_factory

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
      b"Content-Length: 11\r\n\r\n{\"ok\":true}")
RESPONSES = {
    "/cl": OK,
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: Text/Plain\r\n"
                 b"\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n"),
    "/continue": (b"HTTP/1.1 100 Continue\r\n\r\n"
                  b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
    "/eof": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "/nocontent": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "/head": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    "/garbage": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "/reset": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
}


def fetch(url: str, requests: list[tuple[str, str]], want_body: bool = True,
          want_head: bool = False, **engine_kw):
    """Send ``requests`` one after another on one engine; the outcomes and the seconds taken."""
    async def main():
        engine = HttpEngine(url, **engine_kw)
        await engine.start()
        loop = asyncio.get_running_loop()
        outcomes = []
        for method, path in requests:
            done = loop.create_future()
            engine.send(engine.prepare(method, path, {"Accept": "*/*"}, None, want_body,
                                       want_head),
                        lambda *outcome, done=done: done.set_result(outcome))
            outcomes.append(await done)
        await engine.close()
        return outcomes

    started = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        outcomes = runner.run(main())
    return outcomes, time.perf_counter() - started


def err(name: str) -> int:
    return ERROR_CLASSES.index(name)


@pytest.mark.parametrize("drip", [False, True], ids=["whole", "byte-by-byte"])
def test_framing_content_length_chunked_interim_eof_head_and_204(drip):
    prefix = "/drip" if drip else ""
    with RawServer(RESPONSES) as srv:
        outcomes, _ = fetch(srv.url, [("GET", prefix + "/cl"), ("GET", prefix + "/chunked"),
                                      ("GET", prefix + "/continue"), ("HEAD", prefix + "/head"),
                                      ("GET", prefix + "/nocontent"), ("GET", prefix + "/eof")])
    assert outcomes == [
        (200, b"application/json", 11, b'{"ok":true}', 0, None),
        (200, b"text/plain", 9, b"Wikipedia", 0, None),
        (201, None, 2, b"ok", 0, None),
        (200, None, 0, None, 0, None),
        (204, None, 0, None, 0, None),
        (200, b"text/plain", 13, b"until the end", 0, None),
    ]


def test_body_is_counted_but_not_kept_unless_asked():
    with RawServer(RESPONSES) as srv:
        outcomes, _ = fetch(srv.url, [("GET", "/cl"), ("GET", "/chunked")], want_body=False)
    assert outcomes == [(200, b"application/json", 11, None, 0, None),
                        (200, b"text/plain", 9, None, 0, None)]


def test_the_head_comes_as_received_only_when_asked():
    with RawServer(RESPONSES) as srv:
        (plain,), _ = fetch(srv.url, [("GET", "/cl")])
        (asked, lost), _ = fetch(srv.url, [("GET", "/cl"), ("GET", "/garbage")], want_head=True)
    assert plain[5] is None and lost[5] is None  # not asked; no response
    head = asked[5]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n")
    assert find_header(head, head.lower(), b"\r\ncontent-type:") == (
        b"application/json; charset=utf-8")  # as received; the callback's type is normalized
    assert asked[1] == b"application/json"


def test_keep_alive_reuses_one_connection_and_connection_close_is_honoured():
    with RawServer(RESPONSES) as srv:
        fetch(srv.url, [("GET", "/cl")] * 5 + [("GET", "/nocontent"), ("HEAD", "/head")])
        assert srv.connections == 1
    with RawServer(RESPONSES) as srv:
        outcomes, _ = fetch(srv.url, [("GET", "/close")] * 3)
        assert [o[0] for o in outcomes] == [200] * 3 and srv.connections == 3


def test_transport_failures_are_classified():
    with RawServer(RESPONSES) as srv:
        (garbage, reset, after), _ = fetch(srv.url, [("GET", "/garbage"), ("GET", "/reset"),
                                                     ("GET", "/cl")])
    assert garbage[4] == err("protocol") and garbage[0] == 0  # not HTTP at all
    assert reset[4] == err("reset")
    assert after == (200, b"application/json", 11, b'{"ok":true}', 0, None)  # a new connection
    (refused,), _ = fetch(f"http://127.0.0.1:{free_port()}", [("GET", "/")])
    assert refused == (0, None, 0, None, err("connect"), None)


class OrderedServer(LoopbackServer):
    """The loopback server, noting when each /delay request arrives and when it is answered."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def _delay(self, request):
        ms = request.query.get("ms", "0")
        self.events.append(f"arrived {ms}")
        response = await super()._delay(request)
        self.events.append(f"answered {ms}")
        return response


def test_a_request_past_its_timeout_ends_as_timeout_and_promptly():
    with OrderedServer() as srv:
        (outcome, fine), _ = fetch(srv.url, [("GET", "/delay?ms=3000"), ("GET", "/delay")],
                                   timeout_s=0.3)
        events = list(srv.events)
    assert outcome[4] == err("timeout") and fine[0] == 200
    # promptly: the engine sends the second request only after the first ended, and it reached
    # the server before the server answered the first; an order, not a clock on a busy machine
    assert "answered 3000" not in events[:events.index("arrived 0")]


def test_tls_verifies_against_the_ca_file_or_refuses(embedded_target):
    info = embedded_target
    (ok,), _ = fetch(info.url, [("GET", "/health")], ca_file=info.ca_file)
    assert ok[0] == 200 and ok[4] == 0
    (unknown_ca,), _ = fetch(info.url, [("GET", "/health")])  # the system store lacks our CA
    assert unknown_ca == (0, None, 0, None, err("tls"), None)
    (insecure,), _ = fetch(info.url, [("GET", "/health")], insecure=True)
    assert insecure[0] == 200
