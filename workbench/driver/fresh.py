"""HTTP/1.1 with a new connection for every request, its phases timed (k6's noConnectionReuse).

What a TLS daemon's connection rate costs is the handshake, so each request here opens its own
TCP connection, runs its own TLS handshake, sends ``Connection: close`` and is closed after the
response; no connection is ever reused or opened ahead. The TCP connect and the TLS handshake
are two steps (``create_connection``, then ``start_tls``), so their ends are timed apart:

- ``connected``: the TCP handshake completed (the protocol's ``connection_made``);
- ``tls_done``: the TLS handshake completed and the request is written (0 for ``http://``);
- ``first_byte``: the first byte of the response arrived (``data_received``).

``done`` gets them as its seventh argument, ``phases`` (perf_counter ns; 0 for a phase that
did not happen), whatever the outcome. The handshake's end is read when the coroutine resumes,
one event-loop turn after the last handshake byte; the other two are read in the callbacks.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from functools import partial

from workbench.driver.engine import Done
from workbench.driver.http1 import HttpEngine, PreparedRequest, _Connection
from workbench.driver.outcomes import ERR, classify_exception
from workbench.driver.recorder import NO_PHASES


class _TimedConnection(_Connection):
    """One connection of one request, noting when TCP connected and when the response began."""

    __slots__ = ("connected_ns", "tls_ns", "first_byte_ns")

    def __init__(self, engine: HttpEngine) -> None:
        super().__init__(engine)
        self.connected_ns = self.tls_ns = self.first_byte_ns = 0

    def connection_made(self, transport) -> None:
        self.connected_ns = time.perf_counter_ns()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.first_byte_ns:
            self.first_byte_ns = time.perf_counter_ns()
        super().data_received(data)

    def phases(self) -> tuple[int, int, int]:
        return self.connected_ns, self.tls_ns, self.first_byte_ns


class FreshConnectionEngine(HttpEngine):
    """An :class:`HttpEngine` that connects anew for every request and times the phases."""

    name = "workbench-http1-per-request"

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(base_url, **kwargs)
        self.handshakes_ns = array("q")  # one per request: a C array, not a list of ints

    def prepare(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                want_body: bool = False, want_head: bool = False) -> PreparedRequest:
        # the server closes first, as for Go's DisableKeepAlives: its TIME_WAIT, not ours
        return super().prepare(method, path, headers | {"Connection": "close"}, body,
                               want_body, want_head)

    async def start(self, warm: int = 0) -> None:
        """Start the timeout sweep; nothing is opened ahead (every request connects itself)."""
        await super().start(0)

    def send(self, request: PreparedRequest, done: Done) -> None:
        task = self.loop.create_task(self._connect_and_send(request, done,
                                                            time.perf_counter_ns()))
        self.connecting[task] = done
        task.add_done_callback(self._connected)

    def release(self, conn: _Connection) -> None:
        """A response ended and the server kept the connection open: close it anyway."""
        conn.close()

    def retry(self, request: PreparedRequest, done: Done, started_ns: int) -> None:
        """Never called: no connection is reused, so none can be found closed while idle."""
        done(0, None, 0, None, ERR["reset"], None)

    async def _connect_and_send(self, request: PreparedRequest, done: Done,
                                started_ns: int | None = None) -> None:
        started = started_ns or time.perf_counter_ns()
        conn: _TimedConnection | None = None
        deadline = self.loop.time() + self.timeout_ns / 1e9
        try:
            raw, conn = await asyncio.wait_for(self.loop.create_connection(
                partial(_TimedConnection, self), self.host, self.port,
                local_addr=self.local_addr), self.timeout_ns / 1e9)
            if self.ssl is not None:
                conn.transport = await asyncio.wait_for(self.loop.start_tls(
                    raw, conn, self.ssl, server_hostname=self.host),
                    max(deadline - self.loop.time(), 0.001))
                conn.tls_ns = time.perf_counter_ns()
        except asyncio.CancelledError:
            if conn is not None:
                conn.close()
            raise
        except BaseException as exc:  # every failure is an outcome, never a crash
            self.open_failed += 1
            phases = conn.phases() if conn is not None else NO_PHASES
            if conn is not None:
                conn.close()
            done(0, None, 0, None, classify_exception(exc), None, phases)
            return
        self.opened += 1
        self.handshakes_ns.append(time.perf_counter_ns() - started)
        if conn.closed:
            done(0, None, 0, None, ERR["reset"], None, conn.phases())
        else:  # the timeout counts the connect and the handshake too
            conn.send(request, partial(_with_phases, conn, done), started)


def _with_phases(conn: _TimedConnection, done: Done, status: int, content_type: bytes | None,
                 nbytes: int, body: bytes | None, error: int, head: bytes | None) -> None:
    done(status, content_type, nbytes, body, error, head, conn.phases())
