"""HTTP/2 for the stand-in: one TLS port where ALPN picks HTTP/2 (this front) or HTTP/1.1.

certctl (Go's net/http) offers ``h2`` and ``http/1.1`` over ALPN; aiohttp's server speaks only
HTTP/1.1. So each accepted connection is handed, once its TLS handshake is done, either to
aiohttp's own protocol (``http/1.1`` or no ALPN: exactly the HTTP/1.1 server as before) or to
:class:`Http2Front`, which runs the HTTP/2 framing with the ``h2`` package and turns each
stream into an aiohttp ``Request`` for the same application: the same middlewares, router and
handlers answer both protocols, with no second hop and no re-encoding as HTTP/1.1. The
response's status, headers and body go back as HEADERS and DATA frames (connection-specific
header fields dropped, as RFC 9113 requires), within the client's flow-control windows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

log = logging.getLogger("standin.h2")

MAX_CONCURRENT_STREAMS = 250  # Go's net/http default, which certctl keeps
MAX_BUFFERED_BODY = (1 << 20) + 1  # one byte past certctl's 1 MiB limit: enough to refuse it
_CONNECTION_FIELDS = frozenset(("connection", "keep-alive", "proxy-connection",
                                "transfer-encoding", "upgrade"))


class AlpnDispatch(asyncio.Protocol):
    """Hands a new TLS connection to the HTTP/2 front or to aiohttp, by the ALPN outcome."""

    def __init__(self, http1: Callable[[], asyncio.Protocol], app: web.Application) -> None:
        self.http1, self.app = http1, app

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol = Http2Front(self.app) if alpn == "h2" else self.http1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class Http2Front(asyncio.Protocol):
    """One HTTP/2 connection; each stream is served by the aiohttp application."""

    # read by aiohttp's Request from its protocol
    max_field_size = 8190
    max_headers = 128
    _reading_paused = False

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.ssl_context = self.peername = self.sockname = None
        self.heads: dict[int, list[tuple[bytes, bytes]]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.sending: dict[int, tuple[bytearray, bool]] = {}  # body left, end of stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.ssl_context = transport.get_extra_info("sslcontext")
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        self.conn.initiate_connection()
        self._flush()

    def pause_reading(self) -> None:  # aiohttp's StreamReader may ask; h2 windows bound us
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("HTTP/2 protocol error from %s: %s", self.peername, exc)
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.heads[event.stream_id] = event.headers
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                body = self.bodies.get(event.stream_id)
                if body is not None and len(body) < MAX_BUFFERED_BODY:
                    body += event.data[:MAX_BUFFERED_BODY - len(body)]
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._serve(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self._pump()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self.transport.close()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for sid in list(self.tasks):
            self._forget(sid)

    def _forget(self, sid: int) -> None:
        task = self.tasks.pop(sid, None)
        if task is not None:
            task.cancel()
        self.heads.pop(sid, None)
        self.bodies.pop(sid, None)
        self.sending.pop(sid, None)

    def _serve(self, sid: int) -> None:
        head = self.heads.pop(sid, None)
        body = self.bodies.pop(sid, b"")
        if head is None:
            return
        task = asyncio.get_running_loop().create_task(self._respond(sid, head, bytes(body)))
        self.tasks[sid] = task

    async def _respond(self, sid: int, head: list[tuple[bytes, bytes]], body: bytes) -> None:
        writer = _StreamWriter(self, sid)
        try:
            request = self.app._make_request(_message(head), self._payload(body), self, writer,
                                             asyncio.current_task())
            try:
                response = await self.app._handle(request)
            except web.HTTPException as exc:  # raised outside the stand-in's own middleware
                response = exc
            await response.prepare(request)
            await response.write_eof()
        except asyncio.CancelledError:
            return  # the client reset the stream or the connection went away
        except Exception:
            log.exception("HTTP/2 stream %d failed", sid)
            if not writer.started:
                await writer.write_headers("HTTP/1.1 500 Internal Server Error",
                                           CIMultiDict({"Content-Type": "text/plain"}))
            await writer.write_eof(b"")
        finally:
            self.tasks.pop(sid, None)

    def _payload(self, body: bytes) -> StreamReader:
        if not body:
            return EMPTY_PAYLOAD
        payload = StreamReader(self, 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()
        return payload

    # -- sending ----------------------------------------------------------------------------
    def send_headers(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        if sid in self.conn.streams and not self.transport.is_closing():
            self.conn.send_headers(sid, fields)
            self._flush()

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        pending = self.sending.get(sid)
        buffer = pending[0] if pending is not None else bytearray()
        buffer += data
        self.sending[sid] = (buffer, end)
        self._pump()
        self._flush()

    def _pump(self) -> None:
        for sid, (buffer, end) in list(self.sending.items()):
            try:
                while buffer or end:
                    room = min(self.conn.local_flow_control_window(sid),
                               self.conn.max_outbound_frame_size)
                    if buffer and room <= 0:
                        break
                    chunk = bytes(buffer[:room])
                    del buffer[:room]
                    last = end and not buffer
                    self.conn.send_data(sid, chunk, end_stream=last)
                    if last or not buffer:
                        break
            except (h2.exceptions.NoSuchStreamError, h2.exceptions.StreamClosedError):
                buffer.clear()
                end = True
            if end and not buffer:
                del self.sending[sid]

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _StreamWriter(AbstractStreamWriter):
    """aiohttp's response writer for one HTTP/2 stream: head as HEADERS, body as DATA."""

    def __init__(self, front: Http2Front, sid: int) -> None:
        self.front, self.sid = front, sid
        self.buffer_size = self.output_size = 0
        self.length = None
        self.started = False

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        self.started = True
        fields = [(b":status", status_line.split(" ", 2)[1].encode())]
        fields += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                   for name, value in headers.items() if name.lower() not in _CONNECTION_FIELDS]
        self.front.send_headers(self.sid, fields)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.output_size += len(chunk)
        self.front.send_data(self.sid, bytes(chunk), False)

    async def write_eof(self, chunk: bytes = b"") -> None:
        self.output_size += len(chunk)
        self.front.send_data(self.sid, bytes(chunk), True)

    async def drain(self) -> None:
        pass  # the front keeps what the client's window cannot take yet

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        pass  # the stand-in never compresses

    def enable_chunking(self) -> None:
        pass  # HTTP/2 frames the body itself


def _message(head: list[tuple[bytes, bytes]]) -> RawRequestMessage:
    """The request line and headers aiohttp's parser would have produced for this stream."""
    pseudo = {name.decode("latin-1"): value.decode("latin-1") for name, value in head
              if name.startswith(b":")}
    headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1"))
                          for name, value in head if not name.startswith(b":"))
    if "Host" not in headers and ":authority" in pseudo:
        headers["Host"] = pseudo[":authority"]
    target = pseudo.get(":path", "/")
    path, _, query = target.partition("?")
    raw = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return RawRequestMessage(
        pseudo.get(":method", "GET"), target, HttpVersion11, CIMultiDictProxy(headers), raw,
        False, None, False, False, URL.build(path=path, query_string=query, encoded=True))
