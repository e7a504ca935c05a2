"""``scripted``: the closed loop of ``constant-vus`` with Python iterations (a spec's script).

Each VU runs ``script.setup(vu)`` once before the start instant, then ``script.iteration(vu)``
until the duration is over, as a task of its own; what a script sees is in
:mod:`workbench.driver.scripted`. Its requests go through the same engine and recorder as the
template executors' (intended start = the moment the script asked).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from functools import partial
from urllib.parse import urlsplit

from workbench.driver.engine import Engine
from workbench.driver.executors.base import Progress, request_headers
from workbench.driver.executors.constant_vus import ConstantVUs
from workbench.driver.outcomes import ERROR_CLASSES, OK, classify_status
from workbench.driver.recorder import Recorder
from workbench.driver.result import ShardReport
from workbench.driver.scripted import (
    PROBLEM_TYPE,
    Response,
    Script,
    Stopped,
    VirtualUser,
    check_timing_name,
    load_factory,
    problem_type,
)
from workbench.driver.spec import SCRIPTED, DriveSpec, RequestTemplate, register_executor
from workbench.errors import WorkbenchError
from workbench.untrusted import printable

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:factory


@register_executor
class Scripted(ConstantVUs):
    """Scripted VUs: ``vus`` tasks, each repeating the script's iteration."""

    name = SCRIPTED
    fields = (*ConstantVUs.fields, "script", "script_params")
    by_script = True
    per_request = False  # its requests are the script's, not fixed templates

    def __init__(self, spec: DriveSpec, engine: Engine, recorder: Recorder, *, shard: int = 0,
                 shards: int = 1, token: str = "", progress: Progress | None = None) -> None:
        super().__init__(spec, engine, recorder, shard=shard, shards=shards, token=token,
                         progress=progress)
        self.script: Script = load_factory(spec.script)(dict(spec.script_params))
        self._templates: dict[str, tuple[RequestTemplate, int, dict[str, str]]] = {}
        for t in reversed(spec.templates):  # the first template of a tag describes it
            self._templates[t.tag] = (t, self.tags.index(t.tag), request_headers(t, token))
        parts = urlsplit(spec.base_url)
        self.origin = f"{parts.scheme}://{engine.authority}{parts.path.rstrip('/')}"
        self.users = [VirtualUser(self, shard + shards * k) for k in range(self.vus)]
        self.vus_running = 0
        self.setup_s = 0.0
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def validate(cls, spec: DriveSpec) -> list[str]:
        if spec.executor != ConstantVUs.name:
            out = [f"script {spec.script!r} needs the constant-vus executor, not "
                   f"{spec.executor}"]
        else:
            out = super().validate(spec)
        if not isinstance(spec.script, str) or not _FACTORY.match(spec.script):
            return out + [f"script {spec.script!r} must name a factory as "
                          "package.module:function"]
        try:
            json.dumps(spec.script_params)
        except (TypeError, ValueError):
            out.append("script_params must hold JSON values only")
        try:
            load_factory(spec.script)
        except WorkbenchError as exc:
            out.append(str(exc))
        return out

    async def set_up(self) -> None:
        """Every VU's ``setup``, concurrently; one failure fails the run before the start."""
        started = time.perf_counter()
        results = await asyncio.gather(*(self.script.setup(vu) for vu in self.users),
                                       return_exceptions=True)
        self.setup_s = time.perf_counter() - started
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.engine.close()
            raise WorkbenchError(f"script setup failed for {len(errors)} of "
                                 f"{len(self.users)} VUs: {printable(errors[0])}") from errors[0]

    def begin(self) -> None:
        self.busy = len(self.users)
        delay = max(0.0, (self.t0 - self.now()) / 1e9)
        self.loop.call_later(delay, self._start_tasks)
        self.loop.call_later(delay + self.spec.run_s, self._schedule_over)

    def idle(self) -> bool:
        return self.in_flight == 0 and self.vus_running == 0

    async def tear_down(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_tasks(self) -> None:
        if self.stopping:
            return
        self.vus_running = len(self.users)
        self._tasks = [self.loop.create_task(self._vu_loop(vu)) for vu in self.users]

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
            # one line, shown as written: a script may pass on what the server said
            self.stop(f"failed: script error in VU {vu.index}: "
                      f"{printable(f'{type(exc).__name__}: {exc}')}")
        finally:
            self.vus_running -= 1
            self.busy -= 1
            if self.idle() and self.schedule_done.done() and not self.drained.done():
                self.drained.set_result(None)

    # -- what a VU calls (workbench.driver.scripted.ScriptHost) ---------------------------------
    async def request(self, tag: str, path: str, body: bytes | None,
                      headers: dict[str, str] | None, vu: int = 0) -> Response:
        """Send one request as template ``tag`` describes it and wait for its response.

        ``vu``: the global index of the VU asking (per client: its own connection)."""
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
        sender = self.senders[(vu - self.shard) // self.shards] if self.senders else self.engine
        sender.send(prepared, partial(self._answered, answer, intended, send, tag_index,
                                           template.expect))
        return await answer

    def timing(self, name: str, ns: int) -> None:
        """One sample of a script's own work ``name`` (reported as ``<name>_ms``)."""
        if name not in self.rec.timings:
            check_timing_name(name)
        self.rec.timing(name, ns)

    def _answered(self, answer: asyncio.Future, intended: int, send: int, tag: int,
                  expect: tuple[int, ...], status: int, content_type: bytes | None,
                  nbytes: int, body: bytes | None, error: int, head: bytes | None) -> None:
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

    def report(self, wall_s: float, cpu_s: float, status: str | None = None) -> ShardReport:
        return super().report(wall_s, cpu_s, status) | {
            "problems": self.rec.problem_counts(),
            "script_timings": self.rec.timing_histograms(),
            "setup_s": round(self.setup_s, 3),
        }
