"""A raw loopback server for the driver engine's tests.

``RawServer`` answers each request with canned bytes chosen by path, to test the engine's
HTTP/1.1 parsing edge cases byte for byte.
"""

from __future__ import annotations

import asyncio
import threading

from workbench.target.ports import free_port


class RawServer:
    """Canned HTTP/1.1 responses by request path; ``connections`` counts accepted sockets.

    ``/drip/...`` sends the canned response one byte at a time; ``/reset`` closes the socket
    halfway through a body; other paths are looked up in ``responses``. A path in ``gates`` is
    answered once its event is set.
    """

    def __init__(self, responses: dict[str, bytes],
                 gates: dict[str, threading.Event] | None = None) -> None:
        self.responses = responses
        self.gates = gates or {}
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
                if path in self.gates:
                    await asyncio.get_running_loop().run_in_executor(None, self.gates[path].wait)
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
