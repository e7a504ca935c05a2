"""Loopback servers for the driver tests (no tests here).

``ShapesServer``: aiohttp with the response shapes the scenarios meet (JSON with numeric
fields, RFC 7807 problem+json 429, certctl's text/plain 429, chunked bodies).
``RawServer``: answers each request with canned bytes chosen by path, to test the engine's
HTTP/1.1 parsing edge cases byte for byte.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from tests.loopback import free_port


class ShapesServer:
    """/delay?ms=N, /status/CODE, POST /bulk, /problem429, /text429 and /chunked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.bulk_headers: dict[str, str] = {}
        self.bulk_bodies: list[bytes] = []

    async def _delay(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("ms", "0")) / 1000)
        return web.json_response({"ok": True})

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def _bulk(self, request: web.Request) -> web.Response:
        self.bulk_headers = dict(request.headers)
        self.bulk_bodies.append(await request.read())
        return web.json_response({"total_matched": 10, "total_enqueued": 7,
                                  "total_skipped": 2, "total_failed": 1, "note": "x"})

    async def _problem(self, request: web.Request) -> web.Response:
        return web.Response(status=429, text='{"type":"urn:ietf:params:acme:error:rateLimited"}',
                            content_type="application/problem+json")

    async def _text429(self, request: web.Request) -> web.Response:
        return web.Response(status=429, text="rate limit exceeded\n", content_type="text/plain",
                            charset="utf-8")

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        resp.content_type = "application/json"
        await resp.prepare(request)
        for part in (b'{"total_matched": ', b"5", b"}"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/delay", self._delay)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_post("/bulk", self._bulk)
        app.router.add_get("/problem429", self._problem)
        app.router.add_get("/text429", self._text429)
        app.router.add_get("/chunked", self._chunked)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> ShapesServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class RawServer:
    """Canned HTTP/1.1 responses by request path; ``connections`` counts accepted sockets.

    ``/drip/...`` sends the canned response one byte at a time; ``/reset`` closes the socket
    halfway through a body; other paths are looked up in ``responses``.
    """

    def __init__(self, responses: dict[str, bytes]) -> None:
        self.responses = responses
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0].decode()
                path = request_line.split(" ")[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                drip = path.startswith("/drip")
                answer = self.responses[path.removeprefix("/drip") if drip else path]
                if drip:
                    for i in range(len(answer)):
                        writer.write(answer[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(answer)
                    await writer.drain()
                if b"connection: close" in answer.lower() or path.endswith("eof"):
                    break
                if path == "/reset":
                    writer.transport.abort()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> RawServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
