"""The HTTP/2 engine's defences, frame by frame: malformed :status, header-block and body caps,
and the ``protocol`` error class for a response that breaks HTTP/2 (RFC 9113)."""

from __future__ import annotations

import asyncio

import pytest

from workbench.driver import http2
from workbench.driver.http2 import Http2Engine
from workbench.driver.http2_codec import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    MAX_FRAME,
    PUSH_PROMISE,
    SETTINGS,
    encode_header_block,
    frame,
)
from workbench.driver.outcomes import ERR


class FakeTransport:
    """Only what a connection calls on its transport; the test feeds frames by hand."""

    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str):
        return None

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.closed = True


@pytest.fixture()
def h2():
    """(connection, outcomes, send): a ready connection to feed frames to; ``send(want_body)``
    starts a GET on stream 1."""
    loop = asyncio.new_event_loop()
    engine = Http2Engine("http://127.0.0.1:9")
    engine.loop = loop  # writes are flushed by a callback the test never runs
    conn = http2._Connection(engine)
    conn.connection_made(FakeTransport())
    conn.data_received(frame(SETTINGS, 0, 0))
    outcomes: list[tuple] = []

    def send(want_body: bool = False) -> None:
        request = engine.prepare("GET", "/", {}, None, want_body)
        conn.submit(http2._Stream(request, lambda *o: outcomes.append(o), 0, engine))

    yield conn, outcomes, send
    loop.close()


@pytest.mark.parametrize("status", [b"2000", b"20", b"2", b"+20", b"2_0", b" 200", b"abc"])
def test_a_status_that_is_not_three_digits_is_a_protocol_error(h2, status):
    conn, outcomes, send = h2
    send()
    block = encode_header_block([(b":status", status)])
    conn.data_received(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert len(outcomes) == 1 and outcomes[0][4] == ERR["protocol"]


def test_a_three_digit_status_is_read(h2):
    conn, outcomes, send = h2
    send()
    conn.data_received(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                             encode_header_block([(b":status", b"204")])))
    assert outcomes == [(204, None, 0, None, 0, None)]


def test_a_flood_of_empty_continuation_frames_is_refused_before_memory_grows(h2):
    conn, outcomes, send = h2
    send()
    conn.data_received(frame(HEADERS, 0, 1, encode_header_block([(b":status", b"200")])))
    for _ in range(10_000):
        if outcomes:
            break
        conn.data_received(frame(CONTINUATION, 0, 1))
    assert outcomes and outcomes[0][4] == ERR["protocol"]
    assert len(conn.block_parts) <= http2.MAX_CONTINUATIONS + 1 and conn.closed


def test_a_kept_body_beyond_the_cap_is_refused(h2):
    conn, outcomes, send = h2
    send(want_body=True)
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encode_header_block([(b":status",
                                                                            b"200")])))
    chunk = frame(DATA, 0, 1, b"x" * MAX_FRAME)
    for _ in range(http2.MAX_KEPT_BODY // MAX_FRAME + 2):
        if outcomes:
            break
        conn.data_received(chunk)
    assert outcomes and outcomes[0][4] == ERR["protocol"]
    assert not conn.closed  # a stream error: the connection serves the others


def test_an_unwanted_body_is_counted_not_kept(h2):
    conn, outcomes, send = h2
    send(want_body=False)
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encode_header_block([(b":status",
                                                                            b"200")])))
    for _ in range(2 * http2.MAX_KEPT_BODY // MAX_FRAME):
        conn.data_received(frame(DATA, 0, 1, b"x" * MAX_FRAME))
    conn.data_received(frame(DATA, END_STREAM, 1))
    assert outcomes == [(200, None, 2 * http2.MAX_KEPT_BODY, None, 0, None)]


def test_a_connection_error_fails_its_streams_as_protocol(h2):
    conn, outcomes, send = h2
    send()
    conn.data_received(frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02"))
    assert outcomes and outcomes[0][4] == ERR["protocol"] and conn.closed
