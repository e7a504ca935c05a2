"""The HTTP/1.1 engine of the hot loop: keep-alive over asyncio transports, callbacks, no tasks.

Chosen by measurement (``benchmarks/run.py``, the capacity table): per request it writes one
prebuilt byte string and parses the status line, four headers and the body from the socket
buffer, with no coroutine, future or object graph per request. That costs a fraction of
aiohttp's client (itself several times cheaper than httpx's), so the numbers measure the target,
not the client.

It implements :class:`workbench.driver.engine.Engine`: ``done`` gets the six arguments of
:data:`~workbench.driver.engine.Done`, ``head`` only for a request prepared with ``want_head``.

Per-request timeouts are enforced by a sweep over open connections a few times per timeout,
instead of a timer per request; a timed-out request is recorded when the sweep sees it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from workbench.analyse import hdr
from workbench.driver.engine import MAX_KEPT_TOTAL, ContentTypes, Done, find_header
from workbench.driver.outcomes import ERR, classify_exception

_IDLE, _HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_EOF = range(8)
MAX_HEAD_BYTES = 64 * 1024  # a response head (or trailer section) longer than this: protocol
MAX_LINE_BYTES = 4 * 1024  # a chunk-size line (size and extensions) longer than this: protocol
MAX_KEPT_BODY = 16 * 1024 * 1024  # a body kept for the caller (want_body) longer: protocol
_NO_BODY_STATUS = frozenset((204, 304))
_IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"))
_HEX = frozenset(b"0123456789abcdefABCDEF")
_VERSIONS = frozenset((b"HTTP/1.1 ", b"HTTP/1.0 "))
_AFTER_STATUS = frozenset(b" \r")
_CL = b"\r\ncontent-length:"
_CL_LEN = len(_CL)


class ProtocolError(ValueError):
    """A response that breaks HTTP/1.1 (RFC 9112) or one of this engine's caps."""

@dataclass(frozen=True)
class PreparedRequest:
    """A request serialized once: the exact bytes written for every send."""

    wire: bytes
    head_only: bool  # HEAD: the response has no body whatever its headers say
    want_body: bool  # keep the body for the caller (JSON fields to sum)
    want_head: bool = False  # pass the response head to ``done`` (scripted virtual users)
    idempotent: bool = False  # may be sent again on a fresh connection (RFC 9112 9.3.1)


def ssl_context(base_url: str, ca_file: str | None, insecure: bool) -> ssl.SSLContext | None:
    """None for http://; verification against ``ca_file`` (or the system store) for https://."""
    if not base_url.startswith("https://"):
        return None
    if insecure:  # only with the explicit flag
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpEngine:
    """A keep-alive connection pool to one origin; connections are opened on demand.

    ``kept_budget``: bytes of bodies kept for callers (``want_body``) across every request in
    flight; a response that would go beyond it ends as ``protocol``, as one beyond
    :data:`MAX_KEPT_BODY` does.
    """

    name = "workbench-http1"  # in results: which engine measured

    def __init__(self, base_url: str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout_s: float = 10.0, local_host: str | None = None,
                 kept_budget: int = MAX_KEPT_TOTAL) -> None:
        parts = urlsplit(base_url)
        # the source address of every connection: more than one address lifts the ~28,000
        # local ports one (source, destination) pair allows (the fleet's loopback aliases)
        self.local_addr = (local_host, 0) if local_host else None
        self.opened = self.open_failed = 0
        self.clients: list[Http1Client] = []
        # TCP connect + TLS handshake (us) of each connection: a histogram, as a server closing
        # every connection makes one per request
        self.handshakes = hdr.new()
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl_context(base_url, ca_file, insecure)
        self.timeout_ns = int(timeout_s * 1e9)
        self.idle: list[_Connection] = []
        self.connections: set[_Connection] = set()
        self.connecting: dict[asyncio.Task, Done] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_s = min(max(timeout_s / 5, 0.02), 0.25)
        self.content_type = ContentTypes()  # raw Content-Type -> media type, bounded
        self.kept = 0  # body bytes kept for callers by the requests in flight
        self.kept_budget = kept_budget

    def prepare(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                want_body: bool = False, want_head: bool = False) -> PreparedRequest:
        """Serialize a request once; ``headers`` may carry the token (kept in memory only)."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        return PreparedRequest(wire, method == "HEAD", want_body, want_head,
                               method in _IDEMPOTENT)

    async def start(self, warm: int = 0) -> None:
        """Start the timeout sweep and open ``warm`` connections (failures are left to send)."""
        self.loop = asyncio.get_running_loop()
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)
        if warm > 0:
            results = await asyncio.gather(*(self._connect() for _ in range(warm)),
                                           return_exceptions=True)
            for conn in results:
                if isinstance(conn, _Connection) and not conn.closed:
                    self.release(conn)  # idle until the first send: the server may close it

    def send(self, request: PreparedRequest, done: Done) -> None:
        """Start ``request`` on an idle connection, or on a new one."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                conn.send(request, done, time.perf_counter_ns())
                return
        self._send_on_new(request, done, None)

    def _send_on_new(self, request: PreparedRequest, done: Done, started_ns: int | None) -> None:
        task = self.loop.create_task(self._connect_and_send(request, done, started_ns))
        self.connecting[task] = done
        task.add_done_callback(self._connected)

    def retry(self, request: PreparedRequest, done: Done, started_ns: int) -> None:
        """Send ``request`` again on a new connection: the idle one it met was already closed
        by the server (RFC 9112 9.3.1). Its latency still counts from the first send."""
        self._send_on_new(request, done, started_ns)

    async def _connect(self, owner: HttpEngine | Http1Client | None = None) -> _Connection:
        started = time.perf_counter_ns()
        try:
            _, conn = await asyncio.wait_for(self.loop.create_connection(
                lambda: _Connection(self, owner or self), self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None, local_addr=self.local_addr),
                self.timeout_ns / 1e9)
        except BaseException:
            self.open_failed += 1
            raise
        self.opened += 1
        self.handshakes.record_value(max(1, (time.perf_counter_ns() - started) // 1000))
        return conn

    def client(self) -> Http1Client:
        """A sender with its own connection (a virtual agent's), opened on first use."""
        client = Http1Client(self)
        self.clients.append(client)
        return client

    async def _connect_and_send(self, request: PreparedRequest, done: Done,
                                started_ns: int | None = None) -> None:
        started = time.perf_counter_ns() if started_ns is None else started_ns
        try:
            conn = await self._connect()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every failure is an outcome, never a crash
            done(0, None, 0, None, classify_exception(exc), None)
            return
        if conn.closed:
            done(0, None, 0, None, ERR["reset"], None)
        else:
            conn.send(request, done, started)  # the timeout counts the connect too

    def _connected(self, task: asyncio.Task) -> None:
        done = self.connecting.pop(task)
        if task.cancelled():
            done(0, None, 0, None, ERR["cancelled"], None)

    def release(self, conn: _Connection) -> None:
        conn.reused = True
        self.idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)

    def _sweep(self) -> None:
        now = time.perf_counter_ns()
        limit = now - self.timeout_ns
        for conn in [c for c in self.connections if c.done is not None and c.sent_ns < limit]:
            conn.fail(ERR["timeout"])
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    async def close(self) -> None:
        """Abort everything in flight (``cancelled``) and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        connecting = list(self.connecting)
        for task in connecting:
            task.cancel()
        for client in self.clients:
            client.close()
        for conn in list(self.connections):
            conn.fail(ERR["cancelled"])
            conn.close()
        self.idle.clear()
        if connecting:
            await asyncio.gather(*connecting, return_exceptions=True)
        await asyncio.sleep(0)  # let transports finish closing


class Http1Client:
    """One virtual user's (or agent's) own connection, with the engine's ``send`` contract.

    HTTP/1.1 carries one request at a time: a request sent while the connection is busy (or
    still opening) waits for it, and its latency from the intended start says so. The
    connection is reopened after a loss; ``close()`` ends it.
    """

    __slots__ = ("engine", "conn", "waiting", "connecting", "closed")

    def __init__(self, engine: HttpEngine) -> None:
        self.engine = engine
        self.closed = False
        self.conn: _Connection | None = None
        self.waiting: list[tuple[PreparedRequest, Done, int]] = []
        self.connecting: asyncio.Task | None = None

    async def open(self) -> None:
        """Connect now (a failure is left to the first ``send``)."""
        if self.conn is None or self.conn.closed:
            try:
                self.conn = await self.engine._connect(self)
            except Exception:  # noqa: BLE001 - counted by the engine, retried by send
                self.conn = None

    def send(self, request: PreparedRequest, done: Done) -> None:
        started = time.perf_counter_ns()
        conn = self.conn
        if (conn is not None and not conn.closed and conn.done is None and not self.waiting
                and not conn.transport.is_closing()):
            conn.send(request, done, started)
            return
        self.waiting.append((request, done, started))
        if conn is None or conn.closed:
            self._reopen()

    def retry(self, request: PreparedRequest, done: Done, started_ns: int) -> None:
        """The idle connection was already closed by the server (RFC 9112 9.3.1): send
        ``request`` again, first, on the reopened one; its latency counts from the first send."""
        self.waiting.insert(0, (request, done, started_ns))
        self._reopen()

    def _reopen(self) -> None:
        if self.connecting is None and not self.closed:
            self.connecting = self.engine.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            self.conn = await self.engine._connect(self)
        except asyncio.CancelledError:
            self._fail_waiting(ERR["cancelled"])
            raise
        except BaseException as exc:  # every failure is an outcome, never a crash
            self._fail_waiting(classify_exception(exc))
            return
        finally:
            self.connecting = None
        self.release(self.conn)

    def _fail_waiting(self, error: int) -> None:
        waiting, self.waiting = self.waiting, []
        for _, done, _ in waiting:
            done(0, None, 0, None, error, None)

    def release(self, conn: _Connection) -> None:
        """The connection is free: send the next waiting request on it."""
        conn.reused = True
        if self.waiting:
            request, done, started = self.waiting.pop(0)
            conn.send(request, done, started)

    def forget(self, conn: _Connection) -> None:
        """The connection closed: reopen it for the requests waiting for it."""
        if self.waiting:
            self._reopen()

    def close(self) -> None:
        """End the connection; requests on it or waiting for it get ``cancelled``."""
        self.closed = True
        if self.connecting is not None:
            self.connecting.cancel()
        self._fail_waiting(ERR["cancelled"])
        if self.conn is not None:
            self.conn.fail(ERR["cancelled"])
            self.conn.close()
            self.conn = None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: at most one request in flight (no pipelining)."""

    __slots__ = ("engine", "owner", "transport", "buf", "closed", "done", "state", "status",
                 "ctype",
                 "nbytes", "remaining", "keep_alive", "head_only", "want_body", "parts",
                 "sent_ns", "want_head", "head", "request", "reused", "interim")

    def __init__(self, engine: HttpEngine, owner: HttpEngine | Http1Client | None = None
                 ) -> None:
        self.engine = engine
        self.owner = owner or engine  # who gets the connection back when a response ends
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.done: Done | None = None
        self.state = _IDLE
        self.sent_ns = 0
        self.reused = False  # True once it served a request: the server may close it idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.engine.connections.add(self)

    def send(self, request: PreparedRequest, done: Done, started_ns: int) -> None:
        self.done = done
        self.request = request
        self.interim = False  # a 1xx arrived: the server did answer, so no retry
        self.state = _HEAD
        self.head_only = request.head_only
        self.want_body = request.want_body
        self.want_head = request.want_head
        self.status = 0
        self.ctype = None
        self.nbytes = 0
        self.parts = None
        self.sent_ns = started_ns
        self.transport.write(request.wire)

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # nothing asked: a server talking out of turn; drop it
            self.close()
            return
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError):  # ProtocolError is a ValueError
            self.fail(ERR["protocol"])
            self.close()

    def _keep(self, data: bytes) -> None:
        """Keep part of the body for the caller, up to :data:`MAX_KEPT_BODY` and within the
        engine's ``kept_budget``."""
        engine = self.engine
        if self.nbytes > MAX_KEPT_BODY or engine.kept + len(data) > engine.kept_budget:
            raise ProtocolError("body too large to keep")
        engine.kept += len(data)
        self.parts.append(data)

    def _body(self) -> bytes:
        """The kept body, joined; its bytes go back to the engine's budget, and the
        connection holds none of it any more."""
        body = b"".join(self.parts)
        self.parts = None
        self.engine.kept -= len(body)
        return body

    def _parse(self) -> None:
        buf = self.buf
        while True:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise ProtocolError("response head too large")
                    return
                if end > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                head = bytes(buf[:end + 2])
                del buf[:end + 4]
                # RFC 9112 section 4: HTTP/1.x SP 3DIGIT, then SP reason or the line's end
                if (head[:9] not in _VERSIONS or not head[9:12].isdigit()
                        or head[12] not in _AFTER_STATUS):
                    raise ProtocolError("malformed status line")
                if head[9] == 49:  # "1": 100 Continue and friends; the final response follows
                    self.interim = True
                    continue
                low = head.lower()
                self.status = status = int(head[9:12])
                self.head = head
                self.ctype = self.engine.content_type(find_header(low, low, b"\r\ncontent-type:"))
                connection = find_header(low, low, b"\r\nconnection:")
                if connection is None or connection == b"keep-alive":  # no list to split
                    self.keep_alive = connection is not None or head[7] != 48
                elif head[7] != 48:  # HTTP/1.1: persistent unless "close" is among the options
                    self.keep_alive = b"close" not in [t.strip() for t in connection.split(b",")]
                else:  # HTTP/1.0: persistent only with "keep-alive" among them
                    self.keep_alive = b"keep-alive" in [t.strip() for t in connection.split(b",")]
                if self.head_only or status in _NO_BODY_STATUS:
                    self._finish()
                    return
                encoding = find_header(low, low, b"\r\ntransfer-encoding:")
                if encoding is not None:
                    if encoding != b"chunked":  # the only coding we read; RFC 9112 6.1
                        raise ProtocolError("unsupported Transfer-Encoding")
                    self.state = _CHUNK_SIZE
                else:
                    i = low.find(_CL)
                    if i < 0:  # the body runs to the end of the connection
                        self.keep_alive = False
                        self.state = _UNTIL_EOF
                    else:
                        j = low.find(b"\r\n", i + _CL_LEN)
                        value = low[i + _CL_LEN:j].strip()
                        if value.isdigit() and len(value) < 19 and low.find(_CL, j) < 0:
                            self.remaining = int(value)  # the usual case: one plain length
                        else:
                            self.remaining = _content_length(low)
                        self.state = _BODY
                if self.want_body:
                    self.parts = []
            elif state == _BODY:
                n = self.remaining
                have = len(buf)
                if have < n:  # part of it: counted, kept only if wanted, never buffered
                    self.nbytes += have
                    if self.want_body:
                        self._keep(bytes(buf))
                    buf.clear()
                    self.remaining = n - have
                    return
                self.nbytes += n
                if self.want_body:
                    self._keep(bytes(buf[:n]))
                del buf[:n]
                self._finish()
                return
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_LINE_BYTES:
                        raise ProtocolError("chunk-size line too long")
                    return
                if end > MAX_LINE_BYTES:
                    raise ProtocolError("chunk-size line too long")
                digits = bytes(buf[:end]).split(b";", 1)[0].rstrip(b" \t")
                if not digits or len(digits) > 16 or not _HEX.issuperset(digits):
                    raise ProtocolError("malformed chunk size")
                size = int(digits, 16)
                del buf[:end + 2]
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining = size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                n = min(self.remaining, len(buf))
                if n == 0:
                    return
                self.nbytes += n
                if self.want_body:
                    self._keep(bytes(buf[:n]))
                del buf[:n]
                self.remaining -= n
                if not self.remaining:
                    self.state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                del buf[:2]
                self.state = _CHUNK_SIZE
            elif state == _TRAILER:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEAD_BYTES or buf[:1] == b"\r" and len(buf) > 1:
                            raise ProtocolError("malformed or too large trailer section")
                        return
                    if end > MAX_HEAD_BYTES:
                        raise ProtocolError("trailer section too large")
                    del buf[:end + 4]
                self._finish()
                return
            elif state == _UNTIL_EOF:
                self.nbytes += len(buf)
                if self.want_body:
                    self._keep(bytes(buf))
                buf.clear()
                return
            else:
                return

    def _finish(self) -> None:
        done = self.done
        self.done = None
        self.state = _IDLE
        body = self._body() if self.parts is not None else None
        if self.keep_alive and not self.buf and not self.closed:
            self.owner.release(self)  # first, so the callback's next request can reuse it
        else:
            self.close()
        done(self.status, self.ctype, self.nbytes, body, 0,
             self.head if self.want_head else None)

    def fail(self, error: int) -> None:
        """End the request in flight, if any, with ``error``; the connection is not reused."""
        done = self.done
        if done is None:
            return
        self.done = None
        self.state = _IDLE
        if self.parts is not None:  # what was kept goes back to the budget
            self.engine.kept -= sum(map(len, self.parts))
            self.parts = None
        self.close()
        done(self.status, self.ctype, self.nbytes, None, error, None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.forget(self)
            if self.transport is not None:
                self.transport.abort()
            if self.owner is not self.engine:
                self.owner.forget(self)

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        self.engine.forget(self)
        if not was_closed and self.owner is not self.engine:
            self.engine.loop.call_soon(self.owner.forget, self)
        done = self.done
        if done is None:
            return
        if self.state == _UNTIL_EOF and exc is None:
            self._finish()
        elif (self.reused and self.state == _HEAD and not self.buf and not self.interim
              and self.request.idempotent):
            # no byte of an answer: the server closed this idle connection as the request left
            self.done = None
            self.state = _IDLE
            self.owner.retry(self.request, done, self.sent_ns)
        else:
            self.fail(ERR["tls"] if isinstance(exc, ssl.SSLError) else ERR["reset"])


def _content_length(low: bytes) -> int | None:
    """The body length a lower-cased head (ending in CRLF) declares, or None.

    ProtocolError when it is not 1*DIGIT (``-5``, ``1_0``, ``+5``), or when several
    Content-Length fields or list members disagree (RFC 9112 6.3); one plain field is the
    fast path.
    """
    i = low.find(_CL)
    if i < 0:
        return None
    i += len(_CL)
    j = low.find(b"\r\n", i)
    value = low[i:j].strip(b" \t")
    if value.isdigit() and len(value) < 19 and low.find(_CL, j) < 0:  # bytes: ASCII digits
        return int(value)
    found = set()
    while i >= len(_CL):
        j = low.find(b"\r\n", i)
        found.update(v.strip(b" \t") for v in low[i:j].split(b","))
        i = low.find(_CL, j) + len(_CL)
    value = found.pop()
    if found or not value.isdigit() or len(value) > 18:
        raise ProtocolError("bad Content-Length")
    return int(value)
