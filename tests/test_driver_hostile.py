"""A target that tries to grow the driver: every table the driver keeps per response (kinds,
problems, the engines' content-type and header-block caches) and the bodies it keeps for its
callers stay bounded in entries and in bytes, whatever the server sends."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import Callable

import pytest

from tests.loopback import LoopbackServer
from workbench.driver import DriveSpec, RequestTemplate, drive, http2
from workbench.driver.engine import MAX_MEDIA_TYPE_BYTES
from workbench.driver.http1 import HttpEngine
from workbench.driver.http1 import _Connection as Http1Connection
from workbench.driver.http2 import Http2Engine
from workbench.driver.http2_codec import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    MAX_FRAME,
    SETTINGS,
    encode_header_block,
    frame,
)
from workbench.driver.outcomes import ERR
from workbench.driver.recorder import MAX_KINDS_PER_TAG, Recorder
from workbench.driver.scripted import MAX_PROBLEM_TYPE, problem_type
from workbench.driver.shard import loop_factory

MiB = 1 << 20


def held_bytes(work: Callable[[], object]) -> int:
    """Bytes still allocated (by Python) after ``work()`` returned, its result dropped."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class FakeTransport:
    """What a connection calls on its transport; the test feeds the server's bytes by hand."""

    closed = False

    def get_extra_info(self, name: str, default=None):
        return default

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


# -- the per-response tables -------------------------------------------------------------------

def test_a_content_type_that_changes_per_response_cannot_grow_the_result(tmp_path):
    with LoopbackServer() as srv:
        result = drive(DriveSpec(base_url=srv.url, templates=(
            RequestTemplate("GET", "/vary?len=2000", "vary"),), rate=200, duration_s=1.0),
            tmp_path, echo=lambda _: None)
    kinds = result["response_kinds"]["vary"]
    assert result["completed"] == 200 and sum(kinds.values()) == 200
    assert len(kinds) == MAX_KINDS_PER_TAG + 1 and kinds["other"] == 200 - MAX_KINDS_PER_TAG
    assert all(len(kind) <= len("200 ") + MAX_MEDIA_TYPE_BYTES for kind in kinds)
    assert (tmp_path / "result.json").stat().st_size < 64 * 1024


def test_kinds_and_problems_fold_their_tail_into_other_per_endpoint_and_keep_every_count(
        tmp_path):
    rec = Recorder(["a", "b"], tmp_path / "requests.parquet")
    for i in range(3 * MAX_KINDS_PER_TAG):
        rec.kind(0, 200, b"text/x-%d" % i)
        rec.problem(0, f"type{i}")
    rec.kind(1, 429, b"text/plain")
    rec.problem(1, "rateLimited")
    for table in (rec.response_kinds(), rec.problem_counts()):
        assert len(table["a"]) == MAX_KINDS_PER_TAG + 1
        assert table["a"]["other"] == 2 * MAX_KINDS_PER_TAG
        assert sum(table["a"].values()) == 3 * MAX_KINDS_PER_TAG
    # one endpoint's flood leaves another's table alone
    assert rec.response_kinds()["b"] == {"429 text/plain": 1}
    assert rec.problem_counts()["b"] == {"rateLimited": 1}


def test_a_problem_type_is_cut_to_a_bounded_length():
    body = json.dumps({"type": "urn:ietf:params:acme:error:" + "x" * 100_000}).encode()
    assert problem_type(body) == "x" * MAX_PROBLEM_TYPE


@pytest.mark.parametrize("engine_type", [HttpEngine, Http2Engine])
def test_content_types_of_any_length_and_number_hold_bounded_memory(engine_type):
    engine = engine_type("http://127.0.0.1:9")

    def flood() -> None:
        for i in range(2000):
            clean = engine.content_type(b"application/x-%d;" % i + b"v" * 20_000)
            assert clean == b"application/x-%d" % i
        long = engine.content_type(b"Application/" + b"X" * 20_000)
        assert long == (b"application/" + b"x" * 20_000)[:MAX_MEDIA_TYPE_BYTES]

    assert held_bytes(flood) < MiB


# -- HTTP/2: header blocks, kept bodies --------------------------------------------------------

@pytest.fixture()
def h2():
    """(engine, connection, outcomes): a ready HTTP/2 connection in the engine's pool, fed
    frames by hand; ``engine.send`` puts its streams on it (ids 1, 3, 5, ...)."""
    loop = asyncio.new_event_loop()
    engine = Http2Engine("http://127.0.0.1:9", kept_budget=3 * MiB // 2)
    engine.loop = loop  # writes are flushed by a callback the test never runs
    conn = http2._Connection(engine)
    engine.pool.append(conn)
    conn.connection_made(FakeTransport())
    conn.data_received(frame(SETTINGS, 0, 0))
    yield engine, conn
    loop.close()


def header_frames(sid: int, block: bytes, end_stream: bool) -> bytes:
    """``block`` as HEADERS and as many CONTINUATION frames as it needs."""
    parts = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    flags = END_STREAM if end_stream else 0
    frames = [frame(HEADERS, flags | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0])]
    frames += [frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, sid, part)
               for i, part in enumerate(parts[1:], 1)]
    return b"".join(frames)


def test_large_distinct_header_blocks_are_not_kept(h2):
    engine, conn = h2
    request = engine.prepare("GET", "/", {}, None)
    statuses = []

    def flood() -> None:
        for i in range(300):
            engine.send(request, lambda *o: statuses.append(o[0]))
            block = encode_header_block([(b":status", b"200"), (b"x-pad", b"%06d" % i
                                                                 + b"p" * 100_000)])
            conn.data_received(header_frames(2 * i + 1, block, end_stream=True))

    assert held_bytes(flood) < 4 * MiB
    assert statuses == [200] * 300


def data_frames(sid: int, size: int, end_stream: bool) -> list[bytes]:
    frames = [frame(DATA, 0, sid, b"d" * MAX_FRAME) for _ in range(size // MAX_FRAME)]
    if end_stream:
        frames.append(frame(DATA, END_STREAM, sid, b""))
    return frames


def test_bodies_kept_across_streams_in_flight_stay_within_the_budget(h2):
    engine, conn = h2
    outcomes: dict[int, tuple] = {}
    for sid in (1, 3, 5):
        engine.send(engine.prepare("GET", "/", {}, None, want_body=True),
                    lambda *o, sid=sid: outcomes.__setitem__(sid, o))
        conn.data_received(header_frames(sid, encode_header_block([(b":status", b"200")]),
                                         end_stream=False))
    streams = [data_frames(sid, MiB, end_stream=True) for sid in (1, 3, 5)]
    for frames in zip(*streams, strict=True):  # interleaved: all three grow together
        for f in frames:
            conn.data_received(f)
        assert engine.kept <= engine.kept_budget
    errors = sorted(o[4] for o in outcomes.values())
    assert ERR["protocol"] in errors and 0 in errors
    assert all(o[3] == b"d" * MiB for o in outcomes.values() if o[4] == 0)
    assert engine.kept == 0


def test_a_finished_stream_holds_no_body_while_an_older_one_is_still_in_flight(h2):
    engine, conn = h2
    engine.send(engine.prepare("GET", "/slow", {}, None), lambda *o: None)  # never answered
    request = engine.prepare("GET", "/", {}, None, want_body=True, want_head=True)
    sizes = []

    def answer_forty() -> None:
        for k in range(1, 41):
            sid = 2 * k + 1
            engine.send(request, lambda *o: sizes.append(o[2]))  # the body is dropped
            conn.data_received(header_frames(sid, encode_header_block([(b":status", b"200")]),
                                             end_stream=False))
            for f in data_frames(sid, 256 * 1024, end_stream=True):
                conn.data_received(f)

    assert held_bytes(answer_forty) < 2 * MiB  # 40 bodies of 256 KiB were delivered
    assert sizes == [256 * 1024] * 40


# -- HTTP/1.1: kept bodies ---------------------------------------------------------------------

def test_bodies_kept_across_connections_stay_within_the_budget():
    half = 512 * 1024
    with LoopbackServer() as srv:
        async def main():
            engine = HttpEngine(srv.url, kept_budget=3 * half)
            await engine.start()
            loop = asyncio.get_running_loop()
            answers = [loop.create_future() for _ in range(3)]
            for answer in answers:
                engine.send(engine.prepare("GET", "/big?kb=1024", {}, None, want_body=True),
                            lambda *o, answer=answer: answer.set_result(o))
            for _ in range(3000):  # until the three first halves are kept: the budget, full
                if engine.kept == 3 * half or any(a.done() for a in answers):
                    break
                await asyncio.sleep(0.01)
            full = engine.kept
            srv.release_bodies()
            outcomes = await asyncio.gather(*answers)
            kept = engine.kept
            await engine.close()
            return full, outcomes, kept

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            full, outcomes, kept = runner.run(main())
    assert full == 3 * half
    errors = sorted(o[4] for o in outcomes)
    assert ERR["protocol"] in errors and 0 in errors
    assert all(o[3] == b"b" * 2 * half for o in outcomes if o[4] == 0)
    assert kept == 0


def test_a_connection_holds_no_body_after_its_response_was_delivered():
    engine = HttpEngine("http://127.0.0.1:9")
    conn = Http1Connection(engine)
    conn.connection_made(FakeTransport())
    sizes = []

    def one_response() -> None:
        conn.send(engine.prepare("GET", "/", {}, None, want_body=True),
                  lambda *o: sizes.append(o[2]), 0)  # the body is dropped
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MiB)
        for _ in range(16):
            conn.data_received(b"x" * (MiB // 16))

    assert held_bytes(one_response) < MiB // 4
    assert sizes == [MiB] and engine.kept == 0


def test_kinds_and_problems_are_reported_printable(tmp_path):
    rec = Recorder(["a"], tmp_path / "requests.parquet")
    rec.kind(0, 200, b"text/\x1b[2j")
    rec.problem(0, "bad\x07\nnonce")
    assert rec.response_kinds() == {"a": {"200 text/\\x1b[2j": 1}}
    assert rec.problem_counts() == {"a": {"bad\\x07\\nnonce": 1}}


def test_a_server_closing_every_connection_does_not_grow_the_engine():
    """Each request then opens a connection: what the engine keeps of each (its handshake
    time) must not pile up."""
    close = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    async def main() -> tuple[int, int]:
        async def answer_and_close(reader, writer) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(close)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer_and_close, "127.0.0.1", 0)
        engine = HttpEngine(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await engine.start()
        loop = asyncio.get_running_loop()
        request = engine.prepare("GET", "/", {}, None)

        async def one() -> int:
            answer = loop.create_future()
            engine.send(request, lambda *o: answer.set_result(o[0]))
            return await answer

        for _ in range(100):  # the loop's and the engine's own first allocations
            await one()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            statuses = [await one() for _ in range(3000)]
            gc.collect()  # closed transports' cycles
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        await engine.close()
        server.close()
        assert statuses == [200] * 3000 and engine.opened == 3100
        return held

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        held = runner.run(main())
    assert held < 3000 * 16  # a list of handshake times held 38 bytes per connection
