"""Scripted virtual users: the API a script sees (the scripted executor runs it).

A spec names its script as ``package.module:factory``; each driver process calls
``factory(spec.script_params)`` once and gets a :class:`Script`, an object with two coroutine
methods:

- ``setup(vu)``: once per VU, before the timed phase (keys, account registration);
- ``iteration(vu)``: repeated by each VU until the run's duration is over.

Scripts send requests only through ``await vu.request(tag, path, body=...)``. The spec's
template with that tag gives the method, the statuses that count as success and the headers;
the engine is the run's engine; each request is recorded exactly as the template executors
record theirs (same columns, histograms, tags and error classes, and
``scheduled = completed + failed + dropped``). Its intended start is the moment the script
asks, after the script's own CPU work, so that work (signing, for one) is not server latency:
the script reports it with ``vu.timing(name, ns)``, summarized as ``result["<name>_ms"]``.
Problem responses (``application/problem+json``) are counted per tag and type into
``result["problems"]``. Setup requests are recorded too, with their own (earlier) times. An
exception from ``iteration`` fails the run: a script handles the server's answers itself.

The executor behind ``vu`` is :class:`workbench.driver.executors.scripted.Scripted`; this
module only names what a VU needs of it (:class:`ScriptHost`), so scripts import nothing else.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from workbench.driver.engine import find_header
from workbench.errors import WorkbenchError

PROBLEM_TYPE = b"application/problem+json"
MAX_PROBLEM_TYPE = 128  # characters of a problem type kept (ACME's are short words)
ACME_ERROR = "urn:ietf:params:acme:error:"
_TIMING_NAME = re.compile(r"^[a-z][a-z0-9]*$")
RESERVED_TIMINGS = frozenset({"latency"})  # "latency_ms" is the response-time summary


class Script(Protocol):
    """What ``factory(script_params)`` returns: a VU's setup and its repeated iteration."""

    async def setup(self, vu: VirtualUser) -> None: ...

    async def iteration(self, vu: VirtualUser) -> None: ...


class Stopped(Exception):
    """Raised by ``vu.request`` once the run is stopping: the iteration ends there."""


def load_factory(name: str) -> Callable[[dict], Script]:
    """The factory named ``package.module:function``; WorkbenchError when it cannot be had."""
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkbenchError(f"script {name!r} cannot be loaded ({type(exc).__name__}: {exc}); "
                             "name an importable package.module:factory") from None
    if not callable(factory):
        raise WorkbenchError(f"script {name!r} is not callable")
    return factory


@dataclass(frozen=True, slots=True)
class Response:
    """What a script sees of one response (``status`` 0 when none arrived)."""

    status: int
    content_type: str | None
    body: bytes
    error: str  # the request's error class; "" is success
    head: bytes | None
    problem: str | None  # RFC 7807 type of a problem response, ACME's URN prefix removed

    @property
    def ok(self) -> bool:
        return self.error == ""

    def header(self, name: str) -> str | None:
        """The value of response header ``name`` as received (None when absent)."""
        if not self.head:
            return None
        value = find_header(self.head, self.head.lower(),
                            b"\r\n" + name.lower().encode("latin-1") + b":")
        return None if value is None else value.decode("latin-1")

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return json.loads(self.body)


def problem_type(body: bytes) -> str:
    """The ``type`` of a problem document, ``urn:ietf:params:acme:error:`` removed, at most
    :data:`MAX_PROBLEM_TYPE` characters."""
    try:
        kind = json.loads(body).get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unparsed"
    if not isinstance(kind, str) or not kind:
        return "untyped"
    return kind.removeprefix(ACME_ERROR)[:MAX_PROBLEM_TYPE]


class ScriptHost(Protocol):
    """What a VU needs of the executor that runs it."""

    origin: str

    async def request(self, tag: str, path: str, body: bytes | None,
                      headers: dict[str, str] | None, vu: int = 0) -> Response: ...

    def timing(self, name: str, ns: int) -> None: ...


class VirtualUser:
    """One scripted VU: its number, free ``state`` for the script, and the recording client."""

    def __init__(self, run: ScriptHost, index: int) -> None:
        self._run = run
        self.index = index  # unique across shards: shard + shards * k
        self.iteration = 0  # this VU's iterations so far (the current one included)
        self.state: Any = None

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` + base path exactly as the engine sends them (Host header)."""
        return self._run.origin

    def url(self, path: str) -> str:
        """The absolute URL a request to ``path`` goes to, as the server sees it."""
        return self._run.origin + path

    def path_of(self, url: str) -> str:
        """``path`` of an absolute URL on this target; ValueError for another origin."""
        origin = self._run.origin
        if not url.startswith(origin + "/"):
            raise ValueError(f"{url!r} is not on the target {origin}")
        return url[len(origin):]

    async def request(self, tag: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send one request as template ``tag`` describes it; recorded like any other."""
        return await self._run.request(tag, path, body, headers, self.index)

    def timing(self, name: str, ns: int) -> None:
        """Record ``ns`` nanoseconds of client-side work ``name`` (reported as ``<name>_ms``)."""
        self._run.timing(name, ns)


def check_timing_name(name: str) -> None:
    """Timing names become result keys ``<name>_ms``: short lowercase words only."""
    if not _TIMING_NAME.match(name) or name in RESERVED_TIMINGS:
        raise ValueError(f"timing name {name!r} must be a lowercase word, not one of "
                         f"{', '.join(sorted(RESERVED_TIMINGS))}")
