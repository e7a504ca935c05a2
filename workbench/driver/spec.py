"""What to drive: request templates and the load shape, validated before any load is sent.

``spec.json`` is a versioned envelope, ``{"schema_version": 1, "spec": {...}}`` (the fields of
:class:`DriveSpec`); a file of another version is refused with the fix.

Executors register here by name (as k6's executors register their config types in ``init()``):
each executor module decorates its class with :func:`register_executor`. The class owns its
facts about a spec: its own fields (``fields``), their checks (``validate``, k6's ``Validate``),
open or closed loop, how long it runs, its peak and offered rates, its clients, what a capacity
search raises, and how a scenario's parameters become its fields. :class:`DriveSpec` and
everything else ask the registry (:func:`executor_type`, :func:`executor_named`), so nothing
outside it branches on an executor's name (``tests/test_architecture.py`` checks). Importing
:mod:`workbench.driver` imports every executor, so the registry is complete by the time anyone
holds a spec.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from workbench import jsonio
from workbench.errors import WorkbenchError

SPEC_SCHEMA_VERSION = 1
# The names a spec's ``executor`` may take, in the order they registered (k6's, and ours:
# agent-fleet); an executor chosen by a spec's ``script`` (``scripted``) is not among them.
EXECUTORS: list[str] = []
# DriveSpec fields every executor reads; each executor declares the rest it reads (``fields``)
SHARED_FIELDS = ("base_url", "templates", "max_vus", "pre_allocated_vus", "timeout_s", "ca_file",
                 "insecure", "token_env", "scenario", "executor", "steps", "sleep_s", "protocol",
                 "connection_per_client", "connection_per_request")
FLEET_STARTS = ("spread", "fleet_restart")  # agents' first requests over one heartbeat, or a herd
SCRIPTED = "scripted"  # the executor of a spec with a ``script``: constant-vus, scripted
PROTOCOLS = ("h1", "h2")  # HTTP/1.1; HTTP/2 (ALPN h2 over TLS, prior knowledge over http://)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
# Header names whose values are credentials: never written to spec.json (or any file). Their
# values travel to the driver processes in the environment, as the API token does.
SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|passw|api-?key|auth|session"
                           r"|credential|signature", re.IGNORECASE)
ENV_REF = "$env:"  # spec.json holds ``$env:NAME`` where a secret header's value was
# Headers the engines write themselves (framing, connection, authority): a second copy from a
# template makes the request ambiguous, and HTTP/2 forbids the connection-specific ones.
ENGINE_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                            "keep-alive", "proxy-connection", "te", "upgrade"})


class SpecDocument(TypedDict):
    """``spec.json``: the schema version and the fields of a :class:`DriveSpec`."""

    schema_version: int
    spec: dict[str, Any]


_Kind = TypeVar("_Kind", bound=type)
_REGISTRY: dict[str, type] = {}  # name -> executor class (workbench.driver.executors)


def register_executor(kind: _Kind) -> _Kind:
    """Class decorator: make an executor findable by its ``name`` (k6's, or ``scripted``).

    The class (a :class:`workbench.driver.executors.Executor`) has a ``name``, its ``fields``
    and a classmethod ``validate(spec) -> list[str]`` naming every problem of a spec it would
    run (k6's ``Validate``), besides its facts (``open_loop``, ``run_s``, ``peak_rate``, ...).
    """
    _REGISTRY[kind.name] = kind
    if not kind.by_script:
        EXECUTORS.append(kind.name)
    return kind


def executor_named(name: str) -> type:
    """The registered executor class called ``name``; WorkbenchError naming the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WorkbenchError(f"no executor {name!r} is registered; choose one of "
                             f"{', '.join(EXECUTORS)}") from None


def executor_type(spec: DriveSpec) -> type:
    """The registered executor class that runs ``spec``."""
    return executor_named(spec.kind)


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
    Python per iteration (:mod:`workbench.driver.scripted`); ``factory(script_params)`` builds
    it in each driver process. The templates then name the requests the script may send, by tag.

    ``connection_per_request`` opens a new connection for every request and closes it after the
    response (k6's ``noConnectionReuse``), timing its phases (:mod:`workbench.driver.fresh`).
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
    connection_per_client: bool = False  # each VU (agent) its own connection, not a shared pool
    # a new connection for every request, its TCP connect, TLS handshake and first byte timed
    # (k6's noConnectionReuse; requests.parquet gains the phase columns): HTTP/1.1 only
    connection_per_request: bool = False
    agents: int = 0  # agent-fleet: templates 2i and 2i+1 are agent i's heartbeat and work poll
    heartbeat_s: float = 60.0
    poll_s: float = 30.0
    fleet_start: str = "spread"  # FLEET_STARTS
    start_window_s: float = 5.0  # fleet_restart: every agent's first requests within this

    @property
    def kind(self) -> str:
        """The registered executor that runs this spec: ``executor``, or ``scripted``."""
        return SCRIPTED if self.script else self.executor

    @property
    def open_loop(self) -> bool:
        """Whether arrivals are scheduled (open loop) rather than run by VUs (closed loop)."""
        return executor_type(self).open_loop

    @property
    def clients(self) -> int:
        """Clients of the run: its executor's (VUs, max VUs for an open loop, or agents)."""
        return executor_type(self).clients(self)

    @property
    def run_s(self) -> float:
        """How long arrivals (or iterations) are started, in seconds."""
        return executor_type(self).run_s(self)

    @property
    def peak_rate(self) -> float:
        """The highest arrival rate of the schedule (0 for closed loop)."""
        return executor_type(self).peak_rate(self)

    @property
    def concurrency(self) -> int:
        """Most iterations in flight at once: max VUs (open loop) or VUs (closed loop)."""
        return executor_type(self).concurrency(self)

    def validate(self) -> None:
        """Refuse bad input before any load is sent: one line naming every problem and fix."""
        problems = self.problems()
        if problems:
            raise WorkbenchError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of this spec at once (k6's ``Validate``), each naming its fix."""
        out = []
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
                ("http://", "https://")):
            out.append(f"target URL {self.base_url!r} must start with http:// or https://")
        if self.protocol not in PROTOCOLS:
            out.append(f"unknown protocol {self.protocol!r}; choose h1 (HTTP/1.1) or h2 (HTTP/2)")
        if self.executor not in EXECUTORS:
            out.append(f"unknown executor {self.executor!r}; choose one of "
                       f"{', '.join(EXECUTORS)}")
        elif self.kind in _REGISTRY:
            out += _REGISTRY[self.kind].validate(self)
        else:
            out.append(f"no executor {self.kind!r} is registered; import workbench.driver")
        if not is_int(self.max_vus) or self.max_vus < 1:
            out.append(f"max VUs must be at least 1, got {self.max_vus!r}")
        elif not is_int(self.pre_allocated_vus) or not 0 <= self.pre_allocated_vus <= self.max_vus:
            out.append(f"pre_allocated_vus must be between 0 and max VUs ({self.max_vus}), "
                       f"got {self.pre_allocated_vus!r}")
        if self.connection_per_request and self.kind in _REGISTRY:
            out += _per_request_problems(self)
        if not is_int(self.steps) or self.steps < 1:
            out.append(f"steps per iteration must be at least 1, got {self.steps!r}")
        if not is_number(self.sleep_s) or self.sleep_s < 0:
            out.append(f"sleep_s must be zero or positive seconds, got {self.sleep_s!r}")
        if not is_positive(self.timeout_s):
            out.append(f"timeout must be positive seconds, got {self.timeout_s!r}")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            out.append(f"CA file {self.ca_file} does not exist; pass the PEM file of the "
                       "target's CA (--ca-file) or --insecure")
        if not self.templates:
            out.append("no request to send: the scenario produced no request templates")
        for t in self.templates:
            out += _template_problems(t)
        return out

    def document(self) -> SpecDocument:
        """The content of ``spec.json``: a secret header's value is replaced by ``$env:NAME``
        (:meth:`secret_env` gives the variables the driver processes need)."""
        raw = asdict(self)
        for i, t in enumerate(raw["templates"]):
            t["headers"] = [(name, _env_ref(i, j) if is_secret_header(name) else value)
                            for j, (name, value) in enumerate(t["headers"])]
        return {"schema_version": SPEC_SCHEMA_VERSION, "spec": raw}

    def secret_env(self) -> dict[str, str]:
        """``{NAME: value}`` of every secret header :meth:`document` left out of the file."""
        return {_env_ref(i, j)[len(ENV_REF):]: value
                for i, t in enumerate(self.templates) for j, (name, value) in enumerate(t.headers)
                if is_secret_header(name) and not str(value).startswith(ENV_REF)}

    def to_json(self) -> str:
        return jsonio.dumps(self.document())

    @classmethod
    def from_document(cls, doc: Any) -> DriveSpec:
        """A spec from the content of ``spec.json``; WorkbenchError for another version."""
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        if version != SPEC_SCHEMA_VERSION or not isinstance(doc.get("spec"), dict):
            raise WorkbenchError(f"spec.json has schema version {version!r}, this driver reads "
                                 f"version {SPEC_SCHEMA_VERSION}; write it again with "
                                 "DriveSpec.to_json()")
        raw = dict(doc["spec"])
        try:
            raw["templates"] = tuple(RequestTemplate(**(t | {
                "headers": tuple((name, _resolve(value)) for name, value in t.get("headers", ())),
                "expect": tuple(t.get("expect", ())),
                "sum_fields": tuple(t.get("sum_fields", ())),
            })) for t in raw["templates"])
            raw["stages"] = tuple(tuple(s) for s in raw.get("stages", ()))
            return cls(**raw)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise WorkbenchError(f"spec.json does not describe a drive ({exc}); write it with "
                                 "DriveSpec.to_json()") from None

    @classmethod
    def from_json(cls, text: str) -> DriveSpec:
        return cls.from_document(json.loads(text))


def load_spec(path: Path) -> DriveSpec:
    """The spec in ``path`` (``spec.json``), or WorkbenchError saying why it cannot be read."""
    try:
        return DriveSpec.from_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot read {path}: {exc}") from None


def is_secret_header(name: str) -> bool:
    """Whether a header's value is a credential (Authorization, Cookie, X-Api-Key, ...)."""
    return bool(SECRET_HEADER.search(str(name)))


def _env_ref(template: int, header: int) -> str:
    return f"{ENV_REF}WORKBENCH_SECRET_HEADER_{template}_{header}"


def _resolve(value: str) -> str:
    """A header value from spec.json: ``$env:NAME`` is read from this process's environment."""
    if isinstance(value, str) and value.startswith(ENV_REF):
        return os.environ.get(value[len(ENV_REF):], value)  # unresolved: refused by validate()
    return value


def _per_request_problems(spec: DriveSpec) -> list[str]:
    """What a new connection per request cannot be combined with, each with its fix."""
    out = []
    if spec.protocol != "h1":
        out.append("a new connection per request is timed over HTTP/1.1 only; use protocol h1")
    if spec.connection_per_client:
        out.append("a connection per request and a connection per client exclude each other; "
                   "choose one")
    if not executor_type(spec).per_request:
        out.append(f"a connection per request needs a template executor, not {spec.kind}")
    return out


def _template_problems(t: RequestTemplate) -> list[str]:
    where = f"request {t.tag!r} ({t.method} {t.path})"
    out = []
    if not isinstance(t.method, str) or not _TOKEN.fullmatch(t.method):
        out.append(f"{where}: method {t.method!r} must be an HTTP method such as GET or POST")
    if not isinstance(t.path, str) or not t.path.startswith("/") or not t.path.isascii() \
            or _has_ctl(t.path, space=True):
        out.append(f"{where}: path must start with / and hold no spaces, control or non-ASCII "
                   "characters (percent-encode them)")
    if not isinstance(t.tag, str) or not t.tag:
        out.append(f"request {t.method} {t.path}: tag must be a non-empty name")
    for name, value in t.headers:
        if not _TOKEN.fullmatch(str(name)):
            out.append(f"{where}: header name {name!r} must be letters, digits and - (an RFC "
                       "9110 token, no spaces)")
        elif str(name).lower() in ENGINE_HEADERS:
            out.append(f"{where}: header {name!r} is written by the driver itself (framing and "
                       "connection); drop it")
        elif _has_ctl(str(value)):
            out.append(f"{where}: header {name!r} must be NAME:VALUE without line breaks or "
                       "control characters")
        elif not _latin1(str(value)):
            out.append(f"{where}: header {name!r} holds characters HTTP headers cannot carry "
                       "(only Latin-1); percent-encode or base64 them")
        elif str(value).startswith(ENV_REF):
            out.append(f"{where}: the value of header {name!r} is a secret kept out of "
                       f"spec.json; pass it in the environment as {str(value)[len(ENV_REF):]}")
    if isinstance(t.body, str) and _is_json(_content_type(t)):
        try:
            json.loads(t.body)
        except ValueError as exc:
            out.append(f"{where}: the body is not JSON ({exc}) but is sent as "
                       f"{_content_type(t)}; fix it, or set --header 'Content-Type: ...'")
    for status in t.expect:
        if not is_int(status) or not 100 <= status <= 599:
            out.append(f"{where}: expected status {status!r} is not an HTTP status")
    for name in t.sum_fields:
        if not isinstance(name, str) or not name:
            out.append(f"{where}: sum_fields must be names of JSON fields")
    return out


def _content_type(t: RequestTemplate) -> str:
    """The Content-Type a template's body is sent with: its own header, else JSON's."""
    given = [v for k, v in t.headers if str(k).lower() == "content-type"]
    return str(given[-1]) if given else "application/json"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _has_ctl(text: str, space: bool = False) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 or (space and c == " ") for c in text)


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_positive(value: Any) -> bool:
    return is_number(value) and value > 0


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
