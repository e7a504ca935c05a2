"""What to drive: request templates and the load shape (k6's executors), validated up front."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

EXECUTORS = ("constant-arrival-rate", "ramping-arrival-rate", "constant-vus")
PROTOCOLS = ("h1", "h2")  # HTTP/1.1; HTTP/2 (ALPN h2 over TLS, prior knowledge over http://)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: methods, header names
_SCRIPT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:factory


@dataclass(frozen=True)
class RequestTemplate:
    """One request shape; iteration k sends ``templates[(k*steps + j) % len(templates)]``.

    ``expect``: statuses that count as success (empty: any status below 400).
    ``sum_fields``: numeric top-level JSON fields of the response body, summed per tag into
    ``result["response_totals"][tag][field]``.
    """

    method: str
    path: str
    tag: str
    body: str | None = None  # JSON text, sent with Content-Type application/json
    headers: tuple[tuple[str, str], ...] = ()
    expect: tuple[int, ...] = ()
    sum_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class DriveSpec:
    """Everything the driver process needs; written to ``spec.json`` (never holds a secret).

    Executors, as k6 names them:

    - ``constant-arrival-rate``: ``rate`` iterations/s for ``duration_s`` (open loop).
    - ``ramping-arrival-rate``: from ``start_rate``, each stage ``(duration_s, target_rate)``
      ramps linearly from the previous rate; the run lasts the sum of the stages.
    - ``constant-vus``: ``vus`` virtual users repeat iterations for ``duration_s`` (closed loop).

    An iteration is ``steps`` consecutive requests, then ``sleep_s`` of think time; the VU is
    busy throughout. Open loop: at most ``max_vus`` iterations in flight, an arrival that finds
    them all busy is dropped; ``pre_allocated_vus`` connections are opened before the start
    (0: a few, from the rate).

    ``script`` (``package.module:factory``, constant-vus only) replaces the fixed steps with
    Python per iteration (``workbench.driver.scripted``); ``factory(script_params)`` builds it
    in each driver process. The templates then name the requests the script may send, by tag.
    """

    base_url: str
    templates: tuple[RequestTemplate, ...]
    rate: float = 0.0  # arrivals (iterations) per second
    duration_s: float = 0.0
    max_vus: int = 200  # in-flight cap; an arrival beyond it is dropped
    timeout_s: float = 10.0
    ca_file: str | None = None
    insecure: bool = False
    token_env: str | None = None  # name of the env var holding the Bearer token
    scenario: str = "adhoc"
    executor: str = "constant-arrival-rate"
    start_rate: float = 0.0
    stages: tuple[tuple[float, float], ...] = ()
    vus: int = 0
    steps: int = 1
    sleep_s: float = 0.0
    pre_allocated_vus: int = 0
    script: str = ""
    script_params: dict[str, Any] = field(default_factory=dict)  # JSON values, never a secret
    protocol: str = "h1"

    @property
    def open_loop(self) -> bool:
        return self.executor != "constant-vus"

    @property
    def run_s(self) -> float:
        """How long arrivals (or iterations) are started, in seconds."""
        if self.executor == "ramping-arrival-rate":
            return float(sum(d for d, _ in self.stages))
        return float(self.duration_s)

    @property
    def peak_rate(self) -> float:
        """The highest arrival rate of the schedule (0 for closed loop)."""
        if self.executor == "ramping-arrival-rate":
            return max([self.start_rate] + [r for _, r in self.stages])
        return self.rate if self.open_loop else 0.0

    @property
    def concurrency(self) -> int:
        """Most iterations in flight at once: max VUs (open loop) or VUs (closed loop)."""
        return self.max_vus if self.open_loop else self.vus

    def validate(self) -> None:
        """Refuse bad input before any load is sent, with one line naming the fix."""
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
                ("http://", "https://")):
            raise WorkbenchError(
                f"target URL {self.base_url!r} must start with http:// or https://")
        if self.protocol not in PROTOCOLS:
            raise WorkbenchError(f"unknown protocol {self.protocol!r}; choose h1 (HTTP/1.1) or "
                                 "h2 (HTTP/2)")
        if self.executor not in EXECUTORS:
            raise WorkbenchError(f"unknown executor {self.executor!r}; choose one of "
                                 f"{', '.join(EXECUTORS)}")
        if self.executor == "constant-arrival-rate" and not _positive(self.rate):
            raise WorkbenchError(f"rate must be a positive number of requests/s, got {self.rate!r}")
        if self.executor == "ramping-arrival-rate":
            self._validate_stages()
        elif not _positive(self.duration_s):
            raise WorkbenchError(f"duration must be positive seconds, got {self.duration_s!r}")
        if self.executor == "constant-vus" and (not _int(self.vus) or self.vus < 1):
            raise WorkbenchError(f"constant-vus needs at least 1 VU (vus), got {self.vus!r}")
        if not _int(self.max_vus) or self.max_vus < 1:
            raise WorkbenchError(f"max VUs must be at least 1, got {self.max_vus!r}")
        if not _int(self.pre_allocated_vus) or not 0 <= self.pre_allocated_vus <= self.max_vus:
            raise WorkbenchError(f"pre_allocated_vus must be between 0 and max VUs "
                                 f"({self.max_vus}), got {self.pre_allocated_vus!r}")
        if not _int(self.steps) or self.steps < 1:
            raise WorkbenchError(f"steps per iteration must be at least 1, got {self.steps!r}")
        if not _finite(self.sleep_s) or self.sleep_s < 0:
            raise WorkbenchError(f"sleep_s must be zero or positive seconds, got {self.sleep_s!r}")
        if not _positive(self.timeout_s):
            raise WorkbenchError(f"timeout must be positive seconds, got {self.timeout_s!r}")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise WorkbenchError(f"CA file {self.ca_file} does not exist; pass the PEM file of "
                                 "the target's CA (--ca-file) or --insecure")
        if not self.templates:
            raise WorkbenchError("no request to send: the scenario produced no request templates")
        for t in self.templates:
            _validate_template(t)
        if self.script:
            self._validate_script()

    def _validate_script(self) -> None:
        if self.executor != "constant-vus":
            raise WorkbenchError(f"script {self.script!r} needs the constant-vus executor, not "
                                 f"{self.executor}")
        if not isinstance(self.script, str) or not _SCRIPT.match(self.script):
            raise WorkbenchError(f"script {self.script!r} must name a factory as "
                                 "package.module:function")
        try:
            json.dumps(self.script_params)
        except (TypeError, ValueError):
            raise WorkbenchError("script_params must hold JSON values only") from None
        from workbench.driver.scripted import load_factory

        load_factory(self.script)

    def _validate_stages(self) -> None:
        if not self.stages:
            raise WorkbenchError("ramping-arrival-rate needs stages: ((duration_s, rate), ...)")
        if not _finite(self.start_rate) or self.start_rate < 0:
            raise WorkbenchError(f"start_rate must be zero or a positive rate, "
                                 f"got {self.start_rate!r}")
        for stage in self.stages:
            if (len(stage) != 2 or not _finite(stage[0]) or stage[0] < 0
                    or not _finite(stage[1]) or stage[1] < 0):
                raise WorkbenchError(f"stage {stage!r} must be (duration_s >= 0, rate >= 0)")
        total = self.run_s
        if total <= 0:
            raise WorkbenchError("the stages' durations add up to 0 s; give a stage a duration")
        if self.duration_s and abs(self.duration_s - total) > 1e-9:
            raise WorkbenchError(f"duration {self.duration_s} s disagrees with the stages' "
                                 f"total {total} s; leave duration_s 0 for ramping-arrival-rate")
        if self.peak_rate <= 0:
            raise WorkbenchError("every stage rate is 0: the ramp would send nothing; "
                                 "give a stage a positive rate")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DriveSpec:
        raw = json.loads(text)
        raw["templates"] = tuple(RequestTemplate(**(t | {
            "headers": tuple(tuple(h) for h in t.get("headers", ())),
            "expect": tuple(t.get("expect", ())),
            "sum_fields": tuple(t.get("sum_fields", ())),
        })) for t in raw["templates"])
        raw["stages"] = tuple(tuple(s) for s in raw.get("stages", ()))
        return cls(**raw)


def _validate_template(t: RequestTemplate) -> None:
    where = f"request {t.tag!r} ({t.method} {t.path})"
    if not isinstance(t.method, str) or not _TOKEN.match(t.method):
        raise WorkbenchError(f"{where}: method must be an HTTP method such as GET or POST")
    if not isinstance(t.path, str) or not t.path.startswith("/") or _has_ctl(t.path, space=True):
        raise WorkbenchError(f"{where}: path must start with / and hold no spaces or control "
                             "characters (percent-encode them)")
    if not isinstance(t.tag, str) or not t.tag:
        raise WorkbenchError(f"request {t.method} {t.path}: tag must be a non-empty name")
    for name, value in t.headers:
        if not _TOKEN.match(str(name)) or _has_ctl(str(value)):
            raise WorkbenchError(f"{where}: header {name!r} must be NAME:VALUE without line "
                                 "breaks")
    for status in t.expect:
        if not _int(status) or not 100 <= status <= 599:
            raise WorkbenchError(f"{where}: expected status {status!r} is not an HTTP status")
    for name in t.sum_fields:
        if not isinstance(name, str) or not name:
            raise WorkbenchError(f"{where}: sum_fields must be names of JSON fields")


def _has_ctl(text: str, space: bool = False) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 or (space and c == " ") for c in text)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value) -> bool:
    return _finite(value) and value > 0


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
