"""The seam between the executors and the wire: the ``Engine`` protocol and its callback.

An engine owns connections to one origin and sends prepared requests on them. The executors
know nothing else about it, so an HTTP/1.1 engine (:mod:`workbench.driver.http1`), an HTTP/2
engine, or a test's fake engine (no sockets) are interchangeable. The contract:

- ``engine.prepare(method, path, headers, body, want_body, want_head)`` serializes a request
  once, before the run; the returned object is opaque to everyone but the engine's ``send``.
  ``headers`` may hold the API token: it stays in memory.
- ``await engine.start(warm)`` opens ``warm`` connections before the schedule starts
  (failures are left to the first sends).
- ``engine.send(request, done)`` starts one request and returns at once. Later, and never from
  inside ``send``, ``done`` is called exactly once, always with the six arguments of
  :data:`Done`.
- ``await engine.close()`` ends what is still in flight (``done`` gets ``cancelled``) and
  closes every connection.
- ``engine.name`` names the engine in results; ``engine.authority`` is the ``host[:port]`` the
  requests carry (``Host``/``:authority``), which scripted users sign into ACME URLs.

A target is not trusted to be kind: whatever it sends, what an engine keeps is bounded in
entries and in bytes (:class:`ContentTypes`, HTTP/2's header blocks, the bodies kept for
callers, :data:`MAX_KEPT_TOTAL` across everything in flight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

MAX_MEDIA_TYPE_BYTES = 256  # RFC 6838: type and subtype names are at most 127 characters each
CTYPE_CACHE_ENTRIES = 1024  # distinct raw Content-Type values remembered
MAX_CACHED_CTYPE = 512  # a longer raw value is cleaned every time, never remembered
MAX_KEPT_TOTAL = 256 * 1024 * 1024  # bodies kept for callers, all requests in flight together

Done = Callable[[int, bytes | None, int, bytes | None, int, bytes | None], None]
"""``done(status, content_type, nbytes, body, error, head)``, called once per request.

- ``status``: the final HTTP status; 0 when no response arrived (``error`` says why).
- ``content_type``: lower-case media type without parameters (``b"application/json"``), or
  None.
- ``nbytes``: response body bytes received.
- ``body``: the body, only when the request was prepared with ``want_body``; else None.
- ``error``: 0, or the error class of a transport failure (:mod:`workbench.driver.outcomes`).
  An HTTP status is classified by the executor, not the engine.
- ``head``: the response head when the request was prepared with ``want_head`` and a response
  arrived, else None: the status line and header lines as received, each ending in CRLF, as
  HTTP/1.1 writes them (an HTTP/2 engine renders its header fields the same way), read with
  :func:`find_header`.

An engine that opens a new connection per request (:mod:`workbench.driver.fresh`) passes a
seventh argument, ``phases``: when TCP connected, the TLS handshake ended and the first
response byte came (perf_counter ns, 0 for a phase that did not happen). A ``done`` that
records phases takes it with a default of None.
"""


class Engine(Protocol):
    """What an executor needs of an HTTP engine (see the module docstring)."""

    name: str
    authority: str

    def prepare(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                want_body: bool = False, want_head: bool = False) -> Any: ...

    async def start(self, warm: int = 0) -> None: ...

    def send(self, request: Any, done: Done) -> None: ...

    async def close(self) -> None: ...


def find_header(source: bytes, low_head: bytes, key: bytes) -> bytes | None:
    """The stripped value of one header in a response head, or None when it is absent.

    ``low_head`` is the head lower-cased, ``key`` the header's lower-cased ``b"\\r\\nname:"``;
    the value is cut from ``source``: ``low_head`` itself where case does not matter
    (``connection``, ``content-length``), or the head as received where it does (``location``).
    """
    i = low_head.find(key)
    if i < 0:
        return None
    i += len(key)
    j = low_head.find(b"\r\n", i)
    return source[i:j if j >= 0 else len(low_head)].strip()


class ContentTypes:
    """The media type of a raw Content-Type value, remembered: one bounded cache per engine, the
    same for HTTP/1.1 and HTTP/2 (``engine.content_type(raw)``).

    ``b"application/json"`` from ``b"Application/JSON; charset=utf-8"``, at most
    :data:`MAX_MEDIA_TYPE_BYTES`; None for None. Bounded whatever a server varies: raw values
    up to :data:`MAX_CACHED_CTYPE` bytes only, emptied when it holds :data:`CTYPE_CACHE_ENTRIES`.
    """

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self.cache)

    def __call__(self, raw: bytes | None) -> bytes | None:
        if raw is None:
            return None
        clean = self.cache.get(raw)
        return self._clean(raw) if clean is None else clean

    def _clean(self, raw: bytes) -> bytes:
        clean = raw.split(b";", 1)[0].strip().lower()[:MAX_MEDIA_TYPE_BYTES]
        if len(raw) <= MAX_CACHED_CTYPE:
            if len(self.cache) >= CTYPE_CACHE_ENTRIES:  # one varied per response never repeats
                self.cache.clear()
            self.cache[raw] = clean
        return clean
