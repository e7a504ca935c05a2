"""The HTTP/1.1 engine's parser against h11 as an oracle, its caps, and stale keep-alive retries.

h11 (the parser under httpx) is the reference: for each canned response, h11 either reads a
status and body, or raises a protocol error; the engine must read the same, or end the request
with the ``protocol`` error class. The cases are framed responses followed by EOF; h11 also
checks header-line syntax, which the engine does not (it reads only the headers it needs).
"""

from __future__ import annotations

import asyncio
import threading

import h11
import pytest

from tests.test_driver_engine import err, fetch
from workbench.driver import http1
from workbench.driver.http1 import HttpEngine
from workbench.target.ports import free_port

OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CASES = {
    "plain": OK_HEAD + b"Content-Length: 5\r\n\r\nhello",
    "no reason phrase": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "http/1.0 with length": b"HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok",
    "interim then final": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK_HEAD
                          + b"Content-Length: 1\r\n\r\nx",
    "same length twice": OK_HEAD + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "length list agreeing": OK_HEAD + b"Content-Length: 3, 3\r\n\r\nabc",
    "chunked with extension and trailer": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                                          b"4;a=b\r\nWiki\r\nA \r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
    "chunk size in upper case": OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\nA\r\n0123456789"
                                b"\r\n0\r\n\r\n",
    "zero length": OK_HEAD + b"Content-Length: 0\r\n\r\n",
    "negative length": OK_HEAD + b"Content-Length: -5\r\n\r\nhello",
    "underscore in length": OK_HEAD + b"Content-Length: 1_0\r\n\r\n0123456789",
    "plus sign in length": OK_HEAD + b"Content-Length: +5\r\n\r\nhello",
    "hex length": OK_HEAD + b"Content-Length: 0x5\r\n\r\nhello",
    "conflicting lengths": OK_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "conflicting length list": OK_HEAD + b"Content-Length: 5, 6\r\n\r\nhello!",
    "one-digit status": b"HTTP/1.1 2\r\nContent-Length: 2\r\n\r\nok",
    "two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
    "four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "letters for status": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
    "no space after version": b"HTTP/1.1200 OK\r\nContent-Length: 2\r\n\r\nok",
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "0x chunk size": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "negative chunk size": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "underscore chunk size": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789"
                             b"\r\n0\r\n\r\n",
    "chunk data without crlf": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"
                               b"0\r\n\r\n",
    "gzip transfer coding": OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\nxx",
    "gzip then chunked": OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
}


def h11_reads(raw: bytes) -> tuple[int, bytes] | None:
    """(status, body) as h11 reads ``raw`` (then EOF) for a GET; None for a protocol error."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, body = None, b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"case is incomplete for h11: {raw!r}")
    except h11.RemoteProtocolError:
        return None


class CannedServer:
    """Answers every request with ``responses[path]`` and closes; ``stale`` paths instead close
    the connection unanswered when it is not the connection's first request (an idle
    keep-alive connection the server already closed)."""

    def __init__(self, responses: dict[str, bytes], keep_open: bool = False) -> None:
        self.responses, self.keep_open = responses, keep_open
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                path = head.split(b" ", 2)[1].decode()
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if path.startswith("/stale") and served:
                    break  # close unanswered: the request met a connection already closed
                writer.write(self.responses[path.split("?")[0]])
                await writer.drain()
                served += 1
                if not self.keep_open:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> CannedServer:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize("name", list(CASES))
def test_the_engine_reads_each_response_as_h11_does(name):
    raw = CASES[name]
    expected = h11_reads(raw)
    with CannedServer({"/": raw}) as srv:
        (outcome,), _ = fetch(srv.url, [("GET", "/")], timeout_s=10.0)
    status, _, nbytes, body, error, _ = outcome
    if expected is None:
        assert error == err("protocol"), (name, outcome)
    else:
        assert (error, status, body, nbytes) == (0, *expected, len(expected[1])), name


def test_the_oracle_cases_include_both_verdicts():
    verdicts = [h11_reads(raw) is None for raw in CASES.values()]
    assert any(verdicts) and not all(verdicts)


def test_connection_close_is_found_among_other_options():
    responses = {"/": OK_HEAD + b"Connection: TE, close\r\nContent-Length: 2\r\n\r\nok"}
    with CannedServer(responses, keep_open=True) as srv:
        outcomes, _ = fetch(srv.url, [("GET", "/")] * 3)
        assert [o[0] for o in outcomes] == [200] * 3
        assert srv.connections == 3  # never reused: the server said close


def test_http10_keep_alive_is_found_among_other_options():
    responses = {"/": b"HTTP/1.0 200 OK\r\nConnection: foo, Keep-Alive\r\n"
                      b"Content-Length: 2\r\n\r\nok"}
    with CannedServer(responses, keep_open=True) as srv:
        fetch(srv.url, [("GET", "/")] * 3)
        assert srv.connections == 1


OK_KEEP = OK_HEAD + b"Content-Length: 0\r\n\r\n"  # right for HEAD too


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_an_idempotent_request_on_a_stale_keep_alive_connection_is_retried_once(method):
    with CannedServer({"/stale": OK_KEEP}, keep_open=True) as srv:
        outcomes, _ = fetch(srv.url, [(method, "/stale")] * 2)
        assert [(o[0], o[4]) for o in outcomes] == [(200, 0)] * 2
        assert srv.connections == 2 and srv.requests == 3  # the retry went on a new one


def test_a_post_on_a_stale_connection_is_not_sent_twice():
    with CannedServer({"/stale": OK_KEEP}, keep_open=True) as srv:
        outcomes, _ = fetch(srv.url, [("POST", "/stale")] * 2)
        assert outcomes[0][0] == 200 and outcomes[1][4] == err("reset")
        assert srv.requests == 2


def test_a_fresh_connection_closed_unanswered_is_a_reset_not_retried():
    with CannedServer({"/stale": OK_KEEP}, keep_open=True) as srv:
        (outcome,), _ = fetch(srv.url, [("GET", "/stale?x")])
        assert outcome[4] == 0  # answered: its first request
    with CannedServer({}, keep_open=True) as srv:  # no such path: closes unanswered
        (outcome,), _ = fetch(srv.url, [("GET", "/nothing")])
        assert outcome[4] == err("reset") and srv.requests == 1


# --- caps: memory stays bounded whatever a server sends ---------------------------------------

class FakeTransport:
    """Only what a connection calls on its transport; the test feeds bytes by hand."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connection(want_body: bool = False):
    engine = HttpEngine("http://127.0.0.1:9")
    conn = http1._Connection(engine)
    conn.connection_made(FakeTransport())
    outcomes = []
    conn.send(engine.prepare("GET", "/", {}, None, want_body), lambda *o: outcomes.append(o), 0)
    return conn, outcomes


def test_an_unwanted_body_is_discarded_as_it_arrives():
    conn, outcomes = connection()
    conn.data_received(OK_HEAD + b"Content-Length: 67108864\r\n\r\n")
    chunk = b"x" * (1 << 20)
    for _ in range(64):
        conn.data_received(chunk)
        assert len(conn.buf) == 0  # nothing held: counted and dropped
    assert outcomes == [(200, None, 1 << 26, None, 0, None)]


def test_unwanted_chunked_data_is_discarded_as_it_arrives():
    conn, outcomes = connection()
    conn.data_received(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4000000\r\n")
    for _ in range(64):
        conn.data_received(b"x" * (1 << 20))
        assert len(conn.buf) == 0
    conn.data_received(b"\r\n0\r\n\r\n")
    assert outcomes == [(200, None, 1 << 26, None, 0, None)]


@pytest.mark.parametrize("start,filler", [
    (b"Transfer-Encoding: chunked\r\n\r\n5;", b"e" * 1024),  # a chunk-size line without end
    (b"Transfer-Encoding: chunked\r\n\r\n0\r\n", b"T: " + b"t" * 1024),  # an endless trailer
    (b"X: ", b"h" * 1024),  # an endless head
])
def test_a_line_without_end_is_a_protocol_error_before_memory_grows(start, filler):
    conn, outcomes = connection()
    conn.data_received(OK_HEAD + start)
    for _ in range(256):
        if outcomes:
            break
        conn.data_received(filler)
    assert outcomes and outcomes[0][4] == err("protocol")
    assert conn.closed


def test_a_kept_body_beyond_the_cap_is_a_protocol_error():
    conn, outcomes = connection(want_body=True)
    conn.data_received(OK_HEAD + b"Content-Length: %d\r\n\r\n" % (http1.MAX_KEPT_BODY * 2))
    for _ in range(2 * http1.MAX_KEPT_BODY // (1 << 20)):
        if outcomes:
            break
        conn.data_received(b"x" * (1 << 20))
    assert outcomes and outcomes[0][4] == err("protocol")


def test_the_content_type_cache_stays_bounded_whatever_the_server_sends():
    from workbench.driver.engine import CTYPE_CACHE_ENTRIES

    engine = HttpEngine("http://127.0.0.1:9")
    for i in range(3 * CTYPE_CACHE_ENTRIES):
        assert engine.content_type(f"text/x-{i}; charset=utf-8".encode()) == f"text/x-{i}".encode()
    assert len(engine.content_type) <= CTYPE_CACHE_ENTRIES
