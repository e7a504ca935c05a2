"""Scripted virtual users: Python logic per iteration inside the closed-loop executor.

A spec names its script as ``package.module:factory``; each driver process calls
``factory(spec.script_params)`` once and gets an object with two coroutine methods:

- ``setup(vu)``: once per VU, before the timed phase (keys, account registration);
- ``iteration(vu)``: repeated by each VU until the run's duration is over.

Scripts send requests only through ``await vu.request(tag, path, body=...)``. The spec's
template with that tag gives the method, the statuses that count as success and the headers;
the engine is the same HTTP/1.1 hot-loop client; each request is recorded exactly as the
template executors record theirs (same columns, histograms, tags and error classes, and
``scheduled = completed + failed + dropped``). Its intended start is the moment the script
asks, after the script's own CPU work, so that work (signing, for one) is not server latency:
the script reports it with ``vu.timing(name, ns)``, summarized as ``result["<name>_ms"]``.
Problem responses (``application/problem+json``) are counted per tag and type into
``result["problems"]``. Setup requests are recorded too, with their own (earlier) times. An
exception from ``iteration`` fails the run: a script handles the server's answers itself.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

from workbench.driver.executors import ShardRun, _headers, local_share
from workbench.driver.outcomes import ERROR_CLASSES, OK, classify_status
from workbench.errors import WorkbenchError

PROBLEM_TYPE = b"application/problem+json"
ACME_ERROR = "urn:ietf:params:acme:error:"
_TIMING_NAME = re.compile(r"^[a-z][a-z0-9]*$")
RESERVED_TIMINGS = frozenset({"latency"})  # "latency_ms" is the response-time summary


class Script(Protocol):
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
        key = b"\r\n" + name.lower().encode("latin-1") + b":"
        at = self.head.lower().find(key)
        if at < 0:
            return None
        start = at + len(key)
        end = self.head.find(b"\r\n", start)
        return self.head[start:end if end >= 0 else None].strip().decode("latin-1")

    def json(self) -> Any:
        return json.loads(self.body)


def problem_type(body: bytes) -> str:
    """The ``type`` of a problem document, ``urn:ietf:params:acme:error:`` removed."""
    try:
        kind = json.loads(body).get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unparsed"
    return kind.removeprefix(ACME_ERROR) if isinstance(kind, str) and kind else "untyped"


class VirtualUser:
    """One scripted VU: its number, free ``state`` for the script, and the recording client."""

    def __init__(self, run: ScriptedRun, index: int) -> None:
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
        return await self._run.request(tag, path, body, headers)

    def timing(self, name: str, ns: int) -> None:
        """Record ``ns`` nanoseconds of client-side work ``name`` (reported as ``<name>_ms``)."""
        if name not in self._run.rec.timings:
            check_timing_name(name)
        self._run.rec.timing(name, ns)


class ScriptedRun(ShardRun):
    """The closed-loop executor with scripted iterations (see the module docstring)."""

    def __init__(self, spec, engine, recorder, *, shard: int = 0, shards: int = 1,
                 token: str = "", progress=None) -> None:
        super().__init__(spec, engine, recorder, shard=shard, shards=shards, token=token,
                         progress=progress)
        self.script: Script = load_factory(spec.script)(dict(spec.script_params))
        self._templates = {}
        for t in reversed(spec.templates):  # the first template of a tag describes it
            self._templates[t.tag] = (t, self.tags.index(t.tag), _headers(t, token))
        parts = urlsplit(spec.base_url)
        authority = getattr(engine, "authority", None) or parts.netloc
        self.origin = f"{parts.scheme}://{authority}{parts.path.rstrip('/')}"
        vus = local_share(spec.vus, shard, shards)
        self.vus = [VirtualUser(self, shard + shards * k) for k in range(vus)]
        self.vus_running = 0
        self.setup_s = 0.0
        self._tasks: list[asyncio.Task] = []

    async def run(self, start=None) -> None:
        async def set_up_then_start():
            started = time.perf_counter()
            results = await asyncio.gather(*(self.script.setup(vu) for vu in self.vus),
                                           return_exceptions=True)
            self.setup_s = time.perf_counter() - started
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await self.engine.close()
                raise WorkbenchError(f"script setup failed for {len(errors)} of "
                                     f"{len(self.vus)} VUs: {errors[0]}") from errors[0]
            return await start() if start else None

        try:
            await super().run(set_up_then_start)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the timed phase ----------------------------------------------------------------------
    def _start_closed(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer_kind = "none"
        self.busy = len(self.vus)
        delay = max(0.0, (self.t0 - self.now()) / 1e9)
        loop.call_later(delay, self._start_tasks)
        loop.call_later(delay + self.spec.run_s, self._closed_over)

    def _start_tasks(self) -> None:
        if self.stopping:
            return
        self.vus_running = len(self.vus)
        self._tasks = [self.loop.create_task(self._vu_loop(vu)) for vu in self.vus]

    async def _vu_loop(self, vu: VirtualUser) -> None:
        try:
            while not self.stopping and self.now() < self.end_ns:
                self.iterations += 1
                vu.iteration += 1
                await self.script.iteration(vu)
                if self._sleep_s and not self.stopping:
                    await asyncio.sleep(self._sleep_s)
        except Stopped:
            pass
        except Exception as exc:  # a broken script: stop loudly rather than spin
            self.stop(f"failed: script error in VU {vu.index}: {type(exc).__name__}: {exc}")
        finally:
            self.vus_running -= 1
            self.busy -= 1
            if self._idle() and self.schedule_done.done() and not self.drained.done():
                self.drained.set_result(None)

    def _idle(self) -> bool:
        return self.in_flight == 0 and self.vus_running == 0

    # -- one request ------------------------------------------------------------------------
    async def request(self, tag: str, path: str, body: bytes | None,
                      headers: dict[str, str] | None) -> Response:
        if self.stopping:
            raise Stopped
        try:
            template, tag_index, base_headers = self._templates[tag]
        except KeyError:
            raise ValueError(f"no request template with tag {tag!r}") from None
        intended = self.now()
        prepared = self.engine.prepare(template.method, path,
                                       base_headers | headers if headers else base_headers,
                                       body, want_body=True, want_head=True)
        answer = self.loop.create_future()
        self.scheduled += 1
        self.in_flight += 1
        send = self.now()
        self.engine.send(prepared, partial(self._answered, answer, intended, send, tag_index,
                                           template.expect))
        return await answer

    def _answered(self, answer: asyncio.Future, intended: int, send: int, tag: int,
                  expect: tuple[int, ...], status: int, content_type: bytes | None,
                  nbytes: int, body: bytes | None, error: int, head: bytes | None = None) -> None:
        end = self.now()
        self.in_flight -= 1
        if error == OK:
            error = classify_status(status, expect)
        self.rec.record(intended, send, end, status, nbytes, error, tag)
        problem = None
        if status:
            self.rec.kind(tag, status, content_type)
            if content_type == PROBLEM_TYPE and body:
                problem = problem_type(body)
                self.rec.problem(tag, problem)
        if not answer.done():
            answer.set_result(Response(status, content_type.decode("latin-1")
                                       if content_type else None, body or b"",
                                       ERROR_CLASSES[error], head, problem))

    def report(self, wall_s: float, cpu_s: float, status: str | None = None) -> dict:
        return super().report(wall_s, cpu_s, status) | {
            "problems": self.rec.problem_counts(),
            "script_timings": self.rec.timing_histograms(),
            "setup_s": round(self.setup_s, 3),
        }


def check_timing_name(name: str) -> None:
    """Timing names become result keys ``<name>_ms``: short lowercase words only."""
    if not _TIMING_NAME.match(name) or name in RESERVED_TIMINGS:
        raise ValueError(f"timing name {name!r} must be a lowercase word, not one of "
                         f"{', '.join(sorted(RESERVED_TIMINGS))}")
