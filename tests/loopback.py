"""A small aiohttp server on loopback, in a thread, for driver and fault tests.

It answers the response shapes the scenarios meet: ``/delay?ms=N`` after N ms, ``/status/CODE``,
``POST /bulk`` (JSON with numeric fields), ``/problem429`` (RFC 7807 problem+json), ``/text429``
(certctl's text/plain 429) and ``/chunked``; and a hostile target's: ``/vary?len=N`` (a new
Content-Type of N characters on every response), ``/big?kb=N`` (an N KiB body whose second
half waits for :meth:`LoopbackServer.release_bodies`) and ``/api/v1/version`` answering
``version`` when it is set.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from workbench.target.ports import free_port

__all__ = ["LoopbackServer", "free_port"]


class LoopbackServer:
    """/delay?ms=N, /status/CODE, POST /bulk, /problem429, /text429, /chunked, /vary, /big and
    /api/v1/version (404 until ``version`` is set)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.bulk_headers: dict[str, str] = {}
        self.bulk_bodies: list[bytes] = []
        self.version: object = None  # what /api/v1/version says the target is
        self.served = 0
        self._release: asyncio.Event | None = None  # made in the server's loop

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

    async def _vary(self, request: web.Request) -> web.Response:
        self.served += 1
        ctype = f"application/x-{self.served}-".ljust(int(request.query.get("len", "20")), "v")
        return web.Response(body=b"{}", headers={"Content-Type": ctype})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["kb"]) * 1024
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        await resp.write(b"b" * (size // 2))
        await self._release.wait()
        await resp.write(b"b" * (size - size // 2))
        await resp.write_eof()
        return resp

    async def _version(self, request: web.Request) -> web.Response:
        if self.version is None:
            raise web.HTTPNotFound()
        return web.json_response({"version": self.version, "commit": "0" * 40})

    def release_bodies(self) -> None:
        """Let every ``/big`` response, now and later, send its second half."""
        self._loop.call_soon_threadsafe(self._release.set)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/delay", self._delay)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_post("/bulk", self._bulk)
        app.router.add_get("/problem429", self._problem)
        app.router.add_get("/text429", self._text429)
        app.router.add_get("/chunked", self._chunked)
        app.router.add_get("/vary", self._vary)
        app.router.add_get("/big", self._big)
        app.router.add_get("/api/v1/version", self._version)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
