"""The hot-loop HTTP/2 engine: streams multiplexed over TLS (ALPN h2), callbacks, no tasks.

Same contract as the HTTP/1.1 engine (``prepare``, ``start(warm)``, ``send(request, done)``,
``close()``, attributes ``name`` and ``authority``); ``done(status, content_type, nbytes,
body, error, head)`` is called exactly once per request, never from inside ``send``.

The wire format (frames, stateless HPACK, a request's frames built once in ``prepare``) is
:mod:`workbench.driver.http2_codec`; this module is what holds state: connections, streams,
flow control and the caches. Frames are parsed straight from the socket buffer; the server's
header blocks (stateless: we advertise a header table of size 0) are cached by their bytes
(small blocks only, the cache bounded in entries and bytes: a server may make every block
unique), and content types go through the engines' shared bounded cache
(:class:`workbench.driver.engine.ContentTypes`).

What the wire asks of a client, and where it is handled:

- the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` is honoured; requests beyond it wait in a
  per-connection queue (no stream starts before the server's first SETTINGS);
- flow control both ways: request bodies larger than the peer's windows are sent as
  WINDOW_UPDATEs allow; received DATA is acknowledged per connection and per stream once half
  of our (large) windows is used;
- GOAWAY: streams above the last processed id, and queued ones, are sent again once on a new
  connection (the server promises it did not process them); the rest finish or fail;
- RST_STREAM and connection loss fail their streams as ``reset`` (``tls`` for TLS errors),
  an undecodable frame or header block as ``protocol``;
- timeouts are swept a few times per timeout from one queue in send order (sends happen in
  time order), so the sweep costs O(1) per request whatever the number of connections.

``engine.client()`` gives a sender with its own connection (one connection per virtual agent),
with the same ``send``; the shared-pool ``send`` does not pay for it.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections import deque
from urllib.parse import urlsplit

from workbench.analyse import hdr
from workbench.driver.engine import MAX_KEPT_TOTAL, ContentTypes, Done
from workbench.driver.http1 import ssl_context
from workbench.driver.http2_codec import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_STREAM_ID,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    U32,
    WINDOW_UPDATE,
    H2Error,
    Http2Request,
    decode_header_block,
    encode_request,
    frame,
    response_head,
    settings_payload,
    unpad,
)
from workbench.driver.outcomes import ERR, classify_exception

MAX_HEADER_BLOCK = 256 * 1024  # a response head beyond this is refused
MAX_CONTINUATIONS = 64  # CONTINUATION frames per header block (empty ones cost memory too)
MAX_KEPT_BODY = 16 * 1024 * 1024  # a body kept for the caller (want_body) beyond: protocol
BLOCK_CACHE_ENTRIES = 4096
BLOCK_CACHE_BYTES = 1 << 20  # the cached blocks' bytes together
MAX_CACHED_BLOCK = 1024  # a larger header block is decoded every time, never cached
STREAM_WINDOW = 1 << 24  # per stream: a response up to 8 MiB needs no WINDOW_UPDATE at all
CONNECTION_WINDOW = 1 << 30
_NO_BODY_STATUS = frozenset((204, 304))


# -- streams -------------------------------------------------------------------------------

class _Stream:
    """One request on its way: where it is, what came back."""

    __slots__ = ("request", "done", "sent_ns", "owner", "conn", "sid", "status", "ctype",
                 "nbytes", "parts", "head", "recv", "window", "offset", "retried")

    def __init__(self, request: Http2Request, done: Done, sent_ns: int, owner) -> None:
        self.request = request
        self.done = done
        self.sent_ns = sent_ns
        self.owner = owner  # the engine's shared pool, or one client: who re-sends it
        self.conn: _Connection | None = None
        self.sid = 0
        self.status = 0
        self.ctype: bytes | None = None
        self.nbytes = 0
        self.parts: list[bytes] | None = [] if request.want_body else None
        self.head: bytes | None = None
        self.recv = 0  # DATA bytes received since our last WINDOW_UPDATE for this stream
        self.window = 0  # our send window for the body (only while the body waits)
        self.offset = -1  # body bytes sent; -1: no body waiting for window
        self.retried = False


# -- the engine ----------------------------------------------------------------------------

class Http2Engine:
    """HTTP/2 to one origin: ``connections`` shared connections (default 1), streams on top.

    ``client()`` makes a sender with its own connection. ``stream_window`` and
    ``connection_window``: what we let the server send before our WINDOW_UPDATE.
    ``kept_budget``: bytes of bodies kept for callers (``want_body``) across every stream in
    flight; a stream that would go beyond it is reset and ends as ``protocol``.
    """

    name = "workbench-h2"
    protocol = "h2"

    def __init__(self, base_url: str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout_s: float = 10.0, connections: int = 1,
                 stream_window: int = STREAM_WINDOW,
                 connection_window: int = CONNECTION_WINDOW, local_host: str | None = None,
                 kept_budget: int = MAX_KEPT_TOTAL) -> None:
        parts = urlsplit(base_url)
        # the source address of every connection: more than one address lifts the ~28,000
        # local ports one (source, destination) pair allows (the fleet's loopback aliases)
        self.local_addr = (local_host, 0) if local_host else None
        self.opened = self.open_failed = 0
        self.handshakes = hdr.new()  # TCP connect + TLS handshake (us), as HttpEngine's
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl_context(base_url, ca_file, insecure)  # None: h2c with prior knowledge
        if self.ssl is not None:
            self.ssl.set_alpn_protocols(["h2"])
        if not 1 <= connections:
            raise ValueError(f"connections must be at least 1, got {connections}")
        if not DEFAULT_WINDOW <= stream_window <= MAX_WINDOW or not (
                DEFAULT_WINDOW <= connection_window <= MAX_WINDOW):
            raise ValueError("windows must be between 65,535 and 2^31-1 bytes")
        self.n_shared = connections
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.timeout_ns = int(timeout_s * 1e9)
        self.pool: list[_Connection] = []
        self._next = 0
        self.connections: set[_Connection] = set()
        self.connecting: set[asyncio.Task] = set()
        self.inflight: deque[_Stream] = deque()  # every request, in send order, for the sweep
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_s = min(max(timeout_s / 5, 0.02), 0.25)
        self.blocks: dict[bytes, tuple[int, bytes | None]] = {}
        self.block_bytes = 0  # of the cached blocks
        self.content_type = ContentTypes()  # raw Content-Type -> media type, bounded
        self.kept = 0  # body bytes kept for callers by the streams in flight
        self.kept_budget = kept_budget
        self.preamble = PREFACE + frame(SETTINGS, 0, 0, settings_payload({
            0x1: 0,  # HEADER_TABLE_SIZE: stateless response blocks, decodable and cacheable
            0x2: 0,  # ENABLE_PUSH
            0x4: stream_window,  # INITIAL_WINDOW_SIZE
        }))
        if connection_window > DEFAULT_WINDOW:
            self.preamble += frame(WINDOW_UPDATE, 0, 0,
                                   (connection_window - DEFAULT_WINDOW).to_bytes(4, "big"))

    def prepare(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                want_body: bool = False, want_head: bool = False) -> Http2Request:
        """Encode a request once; ``headers`` may carry the token (kept in memory only)."""
        return encode_request(method, "https" if self.tls else "http", self.authority,
                              f"{self.prefix}{path}", headers, body, want_body, want_head)

    async def start(self, warm: int = 0) -> None:
        """Start the timeout sweep; with ``warm`` > 0 open the shared connections and wait."""
        self.loop = asyncio.get_running_loop()
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)
        if warm > 0:
            conns = [self._shared(i) for i in range(self.n_shared)]
            await asyncio.gather(*(c.wait_ready() for c in conns))

    def send(self, request: Http2Request, done: Done) -> None:
        """Start ``request`` on the next shared connection (or queue it there)."""
        stream = _Stream(request, done, time.perf_counter_ns(), self)
        self.inflight.append(stream)
        self.submit(stream)

    def submit(self, stream: _Stream) -> None:
        i = self._next = (self._next + 1) % self.n_shared
        pool = self.pool
        conn = pool[i] if i < len(pool) else None
        if conn is None or not conn.accepting:
            conn = self._shared(i)
        conn.submit(stream)

    def client(self) -> Http2Client:
        """A sender with its own connection (a virtual agent's), opened on first use."""
        return Http2Client(self)

    def _shared(self, i: int) -> _Connection:
        """Shared connection ``i``, opened anew if it is missing or no longer takes streams."""
        pool = self.pool
        while len(pool) <= i:
            pool.append(None)
        conn = pool[i]
        if conn is None or not conn.accepting:
            conn = pool[i] = self.open()
        return conn

    def open(self) -> _Connection:
        """A new connection; streams submitted to it wait until the server's SETTINGS."""
        conn = _Connection(self)
        self.connections.add(conn)
        task = self.loop.create_task(self._connect(conn))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)
        return conn

    async def _connect(self, conn: _Connection) -> None:
        started = time.perf_counter_ns()
        try:
            await asyncio.wait_for(self.loop.create_connection(
                lambda: conn, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None, local_addr=self.local_addr),
                self.timeout_ns / 1e9)
        except asyncio.CancelledError:
            self.open_failed += 1
            conn.lose(ERR["cancelled"])
            raise
        except BaseException as exc:  # every failure is an outcome, never a crash
            self.open_failed += 1
            conn.lose(classify_exception(exc))
        else:
            self.opened += 1
            self.handshakes.record_value(max(1, (time.perf_counter_ns() - started) // 1000))

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)

    def cache_block(self, block: bytes, decoded: tuple[int, bytes | None]) -> None:
        """Remember a small header block's status and content type (see the module doc)."""
        size = len(block)
        if size > MAX_CACHED_BLOCK:
            return
        if len(self.blocks) >= BLOCK_CACHE_ENTRIES or self.block_bytes + size > BLOCK_CACHE_BYTES:
            self.blocks.clear()  # responses with a per-request field never repeat
            self.block_bytes = 0
        self.blocks[block] = decoded
        self.block_bytes += size

    def _sweep(self) -> None:
        limit = time.perf_counter_ns() - self.timeout_ns
        inflight = self.inflight
        while inflight:
            stream = inflight[0]
            if stream.done is not None and stream.sent_ns >= limit:
                break
            inflight.popleft()
            if stream.done is not None:
                stream.conn.expire(stream)
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    async def close(self) -> None:
        """Abort everything in flight (``cancelled``) and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        connecting = list(self.connecting)
        for task in connecting:
            task.cancel()
        for conn in list(self.connections):
            conn.lose(ERR["cancelled"])
        self.pool.clear()
        self.inflight.clear()
        if connecting:
            await asyncio.gather(*connecting, return_exceptions=True)
        await asyncio.sleep(0)  # let transports finish closing


class Http2Client:
    """One virtual user's (or agent's) own connection, with the engine's ``send`` contract.

    The connection opens on the first send (or ``await open()``), is reopened after a loss or
    GOAWAY, and carries only this client's streams; ``close()`` ends it.
    """

    __slots__ = ("engine", "conn")

    def __init__(self, engine: Http2Engine) -> None:
        self.engine = engine
        self.conn: _Connection | None = None

    async def open(self) -> None:
        """Connect now and wait for the server's SETTINGS (a failure is left to ``send``)."""
        if self.conn is None or not self.conn.accepting:
            self.conn = self.engine.open()
        await self.conn.wait_ready()

    def send(self, request: Http2Request, done: Done) -> None:
        stream = _Stream(request, done, time.perf_counter_ns(), self)
        self.engine.inflight.append(stream)
        self.submit(stream)

    def submit(self, stream: _Stream) -> None:
        conn = self.conn
        if conn is None or not conn.accepting:
            conn = self.conn = self.engine.open()
        conn.submit(stream)

    def close(self) -> None:
        """End the connection; requests still on it get ``cancelled``."""
        if self.conn is not None:
            self.conn.lose(ERR["cancelled"])
            self.conn = None


# -- one connection ------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: many streams, one frame parser, writes batched per loop turn."""

    def __init__(self, engine: Http2Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.ready = False  # the server's first SETTINGS arrived: streams may start
        self.accepting = True  # takes new streams (False after GOAWAY, loss or close)
        self.closed = False
        self.streams: dict[int, _Stream] = {}
        self.queue: deque[_Stream] = deque()  # waiting for readiness or a stream slot
        self.next_sid = 1
        self.max_streams = MAX_STREAM_ID  # unlimited until the server says otherwise
        self.peer_window = DEFAULT_WINDOW  # the server's initial stream window
        self.peer_max_frame = MAX_FRAME
        self.send_window = DEFAULT_WINDOW  # connection-level, for request bodies
        self.blocked: deque[_Stream] = deque()  # streams whose body waits for window
        self.recv_unacked = 0
        self.buf = bytearray()
        self.out = bytearray()
        self.flush_scheduled = False
        self.receiving = False
        self.block_sid = 0  # a header block continues in CONTINUATION frames
        self.block_parts: list[bytes] = []
        self.block_end_stream = False
        self.waiters: list[asyncio.Future] = []

    # -- life ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.closed:  # closed while connecting
            transport.abort()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.lose(ERR["tls"])  # the server did not agree to HTTP/2
            return
        transport.write(self.engine.preamble)

    async def wait_ready(self) -> None:
        if self.ready or self.closed:
            return
        waiter = self.engine.loop.create_future()
        self.waiters.append(waiter)
        await waiter

    def _wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lose(ERR["tls"] if isinstance(exc, ssl.SSLError) else ERR["reset"])

    def lose(self, error: int) -> None:
        """The connection is gone (or given up): every stream on it fails with ``error``."""
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        self.engine.forget(self)
        if self.transport is not None:
            self.transport.abort()
        streams = list(self.streams.values()) + list(self.queue)
        self.streams.clear()
        self.queue.clear()
        self.blocked.clear()
        for stream in streams:
            self._fail(stream, error)
        self._wake()

    def _connection_error(self, exc: H2Error) -> None:
        last = self.next_sid - 2 if self.next_sid > 1 else 0
        if self.transport is not None and not self.closed:
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">LL", last, exc.code)))
        self.lose(ERR["protocol"])

    # -- streams out --------------------------------------------------------------------
    def submit(self, stream: _Stream) -> None:
        stream.conn = self
        if self.ready and not self.queue and len(self.streams) < self.max_streams:
            self._start(stream)
        else:
            self.queue.append(stream)

    def _pump(self) -> None:
        queue = self.queue
        while queue and len(self.streams) < self.max_streams and self.accepting:
            self._start(queue.popleft())

    def _start(self, stream: _Stream) -> None:
        sid = self.next_sid
        if sid > MAX_STREAM_ID:  # stream ids used up: this connection takes no more
            self.accepting = False
            stream.owner.submit(stream)
            return
        self.next_sid = sid + 2
        stream.sid = sid
        self.streams[sid] = stream
        request = stream.request
        sid_bytes = sid.to_bytes(4, "big")
        out = self.out
        if not self.flush_scheduled and not self.receiving:
            self.flush_scheduled = True
            self.engine.loop.call_soon(self.flush)
        body = request.body
        if body is None:
            out += request.headers_head
            out += sid_bytes
            out += request.block
            return
        size = len(body)
        if size <= self.send_window and size <= self.peer_window and size <= self.peer_max_frame:
            self.send_window -= size
            out += request.headers_head
            out += sid_bytes
            out += request.block
            out += request.data_head
            out += sid_bytes
            out += body
            return
        out += request.open_head  # the body goes as the windows allow
        out += sid_bytes
        out += request.block
        stream.window = self.peer_window
        stream.offset = 0
        self.blocked.append(stream)
        self._send_blocked()

    def _send_blocked(self) -> None:
        waiting: deque[_Stream] = deque()
        for stream in self.blocked:
            if stream.done is None or stream.offset < 0:
                continue
            body = stream.request.body
            while stream.offset < len(body) and self.send_window > 0 and stream.window > 0:
                n = min(len(body) - stream.offset, self.send_window, stream.window,
                        self.peer_max_frame)
                last = stream.offset + n == len(body)
                self._write(frame(DATA, END_STREAM if last else 0, stream.sid,
                                  body[stream.offset:stream.offset + n]))
                stream.offset += n
                self.send_window -= n
                stream.window -= n
            if stream.offset < len(body):
                waiting.append(stream)
            else:
                stream.offset = -1
        self.blocked = waiting

    def _write(self, data: bytes) -> None:
        self.out += data
        if not self.flush_scheduled and not self.receiving:
            self.flush_scheduled = True
            self.engine.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.closed and self.transport is not None:
            out, self.out = self.out, bytearray()
            self.transport.write(out)

    def expire(self, stream: _Stream) -> None:
        """The sweep found ``stream`` past its timeout: cancel it (RST_STREAM) and fail it."""
        if self.streams.pop(stream.sid, None) is not None:
            self._write(frame(RST_STREAM, 0, stream.sid, CANCEL.to_bytes(4, "big")))
            self._fail(stream, ERR["timeout"])
            self._pump()
        else:
            try:
                self.queue.remove(stream)
            except ValueError:
                pass
            self._fail(stream, ERR["timeout"])

    def _drop_body(self, stream: _Stream) -> None:
        """Give what ``stream`` kept back to the engine's budget; it keeps nothing more."""
        if stream.parts is not None:
            self.engine.kept -= sum(map(len, stream.parts))
            stream.parts = None

    def _fail(self, stream: _Stream, error: int) -> None:
        done = stream.done
        if done is None:
            return
        stream.done = None
        stream.offset = -1
        self._drop_body(stream)
        stream.head = None
        done(stream.status, stream.ctype, stream.nbytes, None, error, None)

    def _finish(self, stream: _Stream) -> None:
        del self.streams[stream.sid]
        done = stream.done
        stream.done = None
        stream.offset = -1
        if self.queue:
            self._pump()
        elif not self.accepting and not self.streams:
            self.flush()
            self.lose(ERR["reset"])  # after GOAWAY, the last stream closes the connection
        # a finished stream may wait in the engine's timeout queue behind a slow one: it
        # keeps neither its body nor its head
        parts, head = stream.parts, stream.head
        stream.parts = stream.head = None
        body = None
        if parts is not None:
            body = b"".join(parts)
            self.engine.kept -= len(body)
        done(stream.status, stream.ctype, stream.nbytes, body, 0, head)

    # -- frames in ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if buf:
            buf += data
            view = buf
        else:
            view = data
        pos, n = 0, len(view)
        self.receiving = True
        try:
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = FRAME_HEAD(view, pos)
                length = (hi << 16) | lo
                end = pos + 9 + length
                if end > n:
                    if length > MAX_FRAME:
                        raise H2Error(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    break
                sid &= MAX_STREAM_ID
                if self.block_sid and ftype != CONTINUATION:
                    raise H2Error(PROTOCOL_ERROR, "header block interrupted")
                if ftype == DATA:
                    self._data(sid, flags, view, pos + 9, end)
                elif ftype == HEADERS:
                    self._headers(sid, flags, view, pos + 9, end)
                elif ftype == SETTINGS:
                    self._settings(sid, flags, view, pos + 9, end)
                elif ftype == WINDOW_UPDATE:
                    self._window_update(sid, view, pos + 9, end)
                elif ftype == RST_STREAM:
                    self._rst_stream(sid, end - pos - 9)
                elif ftype == PING:
                    if end - pos - 9 != 8:
                        raise H2Error(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
                    if not flags & ACK:
                        self._write(frame(PING, ACK, 0, bytes(view[pos + 9:end])))
                elif ftype == GOAWAY:
                    self._goaway(view, pos + 9, end)
                elif ftype == CONTINUATION:
                    self._continuation(sid, flags, view, pos + 9, end)
                elif ftype == PUSH_PROMISE:
                    raise H2Error(PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
                pos = end  # PRIORITY and unknown frame types are ignored (RFC 9113 4.1)
                if self.closed:
                    return
        except H2Error as exc:
            self.receiving = False
            self._connection_error(exc)
            return
        self.receiving = False
        if view is buf:
            del buf[:pos]
        elif pos < n:
            buf += view[pos:]
        if self.out:
            self.flush()

    def _data(self, sid: int, flags: int, view, start: int, end: int) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        length = end - start
        self.recv_unacked += length  # padding counts toward flow control too
        if flags & PADDED:
            start, end = unpad(view, start, end)
        stream = self.streams.get(sid)
        if stream is not None:
            size = end - start
            stream.nbytes += size
            parts = stream.parts
            engine = self.engine
            if parts is not None and (stream.nbytes > MAX_KEPT_BODY
                                      or engine.kept + size > engine.kept_budget):
                self._reset_stream(stream, CANCEL)  # memory stays bounded: refuse the rest
            else:
                if parts is not None:
                    engine.kept += size
                    parts.append(bytes(view[start:end]))
                if flags & END_STREAM:
                    self._finish(stream)
                else:
                    stream.recv += length
                    if stream.recv >= engine.stream_window >> 1:
                        self._write(frame(WINDOW_UPDATE, 0, sid,
                                          stream.recv.to_bytes(4, "big")))
                        stream.recv = 0
        if self.recv_unacked >= self.engine.connection_window >> 1:
            self._write(frame(WINDOW_UPDATE, 0, 0, self.recv_unacked.to_bytes(4, "big")))
            self.recv_unacked = 0

    def _headers(self, sid: int, flags: int, view, start: int, end: int) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            start, end = unpad(view, start, end)
        if flags & PRIORITY_FLAG:
            start += 5
        block = bytes(view[start:end])
        if flags & END_HEADERS:
            self._header_block(sid, block, flags & END_STREAM)
        else:
            self.block_sid, self.block_parts = sid, [block]
            self.block_end_stream = bool(flags & END_STREAM)

    def _continuation(self, sid: int, flags: int, view, start: int, end: int) -> None:
        if sid != self.block_sid or sid == 0:
            raise H2Error(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self.block_parts.append(bytes(view[start:end]))
        if (len(self.block_parts) > MAX_CONTINUATIONS
                or sum(map(len, self.block_parts)) > MAX_HEADER_BLOCK):
            raise H2Error(PROTOCOL_ERROR, "response header block too large")
        if flags & END_HEADERS:
            self.block_sid = 0
            self._header_block(sid, b"".join(self.block_parts), self.block_end_stream)
            self.block_parts = []

    def _header_block(self, sid: int, block: bytes, end_stream: int) -> None:
        stream = self.streams.get(sid)
        engine = self.engine
        if stream is None:  # a stream we reset or gave up: a stateless block changes nothing
            return
        if stream.status == 0:
            cached = engine.blocks.get(block)
            if cached is None:
                status, raw_ctype, _ = decode_header_block(block)
                cached = (status, engine.content_type(raw_ctype))
                engine.cache_block(block, cached)
            status = cached[0]
            if status < 200:
                if status < 100 or end_stream:
                    self._reset_stream(stream, PROTOCOL_ERROR)
                return  # 1xx: the final response follows
            stream.status, stream.ctype = cached
            if stream.request.head_only or status in _NO_BODY_STATUS:
                self._drop_body(stream)  # no body, as the HTTP/1.1 engine reports it
            if stream.request.want_head:
                stream.head = response_head(status, decode_header_block(block, True)[2])
        if end_stream:
            self._finish(stream)

    def _reset_stream(self, stream: _Stream, code: int) -> None:
        """A malformed response (or one past our caps): RST_STREAM it, fail it as ``protocol``."""
        self.streams.pop(stream.sid, None)
        self._write(frame(RST_STREAM, 0, stream.sid, code.to_bytes(4, "big")))
        self._fail(stream, ERR["protocol"])
        self._pump()

    def _settings(self, sid: int, flags: int, view, start: int, end: int) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if (end - start) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        for at in range(start, end, 6):
            ident, value = SETTING(view, at)
            if ident == 0x3:  # MAX_CONCURRENT_STREAMS
                self.max_streams = value
            elif ident == 0x4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                if value > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "initial window above 2^31-1")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.blocked:
                    stream.window += delta
            elif ident == 0x5:  # MAX_FRAME_SIZE
                if not MAX_FRAME <= value <= 16_777_215:
                    raise H2Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        if not self.ready:
            self.ready = True
            self._wake()
        self._pump()
        if self.blocked:
            self._send_blocked()

    def _window_update(self, sid: int, view, start: int, end: int) -> None:
        if end - start != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = U32(view, start)[0] & MAX_WINDOW
        if sid == 0:
            if increment == 0:
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                return
            if increment == 0:
                self._reset_stream(stream, PROTOCOL_ERROR)
                return
            stream.window += increment
        if self.blocked:
            self._send_blocked()

    def _rst_stream(self, sid: int, length: int) -> None:
        if length != 4:
            raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self.streams.pop(sid, None)
        if stream is not None:
            self._fail(stream, ERR["reset"])
            self._pump()

    def _goaway(self, view, start: int, end: int) -> None:
        if end - start < 8:
            raise H2Error(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        last_sid = U32(view, start)[0] & MAX_STREAM_ID
        self.accepting = False  # the owner opens a new connection for what comes next
        unprocessed = [s for sid, s in self.streams.items() if sid > last_sid]
        for stream in unprocessed:
            del self.streams[stream.sid]
        unprocessed += self.queue
        self.queue.clear()
        for stream in unprocessed:  # never processed: safe to send again, once
            if stream.done is None:
                continue
            if stream.retried:
                self._fail(stream, ERR["reset"])
            else:
                stream.retried = True
                stream.sid, stream.offset = 0, -1
                stream.owner.submit(stream)
        if not self.streams:
            self.flush()
            self.lose(ERR["reset"])
