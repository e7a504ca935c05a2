"""The scenario registry: one module per scenario in this package, found by its file name.

A scenario module (``workbench/scenarios/<name>.py``) defines ``SCENARIO = Scenario(...)``: what
it sends (request templates and executor), its parameters with their types, its profiles (smoke,
canonical) and default thresholds (k6 syntax), its fixtures (seed and reset, each one SQL file
run by :func:`workbench.seed.load_fixture`), the certctl traps and probes preflight checks for
it, and the notes its report shows beside the latency. Modules whose name starts with ``_`` hold
pieces several scenarios share (``_acme``: ACME's iteration; ``_fleet``: the seeded agent fleet).

What only a scenario knows reaches the core through its hooks, so :mod:`workbench.run.scenario`,
:mod:`workbench.capacity.runner` and the notebooks name no scenario: ``warnings`` (what it says is
wrong with a run, from its result), ``backlog`` (the work its requests leave queued in the
target, and whether and how it drains after the timed phase), ``sized_to_load`` (how its
fixture scales with a capacity step's load) and ``capacity_text`` (what a capacity means in
words). docs/adding-a-scenario.md says when each is needed.

Nothing else lists the scenarios: :func:`names` imports every module of this package (as
papermill registers its engines and k6 its executors by name), and the notebooks
(:mod:`workbench.report.notebook`), README's scenario table and ``workbench run all`` read the
registry.
"""

from __future__ import annotations

import functools
import importlib
import math
import pkgutil
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from workbench import argtypes, seed
from workbench.driver import RequestTemplate
from workbench.driver.executors import AgentFleet, ConstantArrivalRate, ConstantVUs
from workbench.driver.spec import PROTOCOLS, executor_named
from workbench.errors import WorkbenchError

if TYPE_CHECKING:  # pandas only where a table is made: every driver process imports the
    import pandas as pd  # module of a scripted scenario, and so this package

    from workbench.target.preflight import Probe, Target

# The executors a scenario drives, by the registry's names (what each means: its class)
ARRIVAL_RATE = ConstantArrivalRate.name  # open loop: ``rate`` iterations per second
CONSTANT_VUS = ConstantVUs.name  # closed loop: ``vus`` users, each iterating after the last ended
AGENT_FLEET = AgentFleet.name  # open loop per agent: certctl's heartbeat and work-poll loop
PROFILES = ("smoke", "canonical")  # every scenario has both
DEFAULT = "agent_storm"  # what a notebook run by hand opens on (the capacity notebook's cell)
CUSTOM = "custom"  # the profile of a run whose parameters differ from the profile it names
# The two 429 shapes certctl sends, as the driver counts them (status and content type): its
# ACME server's RFC 7807 problem (only ever ...:rateLimited) and its REST limiter's refusal.
ACME_429_KIND = "429 application/problem+json"
REST_429_PREFIX = "429 text/plain"  # Go's http.Error: "text/plain; charset=utf-8"

NUMBER, INTEGER, NAME, FLAG = "number", "integer", "name", "flag"
_ID = re.compile(r"[A-Za-z0-9._-]+")  # names go into URL paths and JSON bodies verbatim


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its type, default and the comment shown beside it.

    ``default`` None means every profile must give a value. Numbers and integers must be
    positive (``zero_ok``: or zero) and at most ``maximum``; a number whose name ends in ``_s``
    is seconds (``-p duration_s 30s`` works on the command line), at most a week unless its
    ``maximum`` says otherwise. Every number has a bound, so a typo such as 1e300 is refused.
    """

    name: str
    kind: str  # NUMBER, INTEGER, NAME (letters, digits, . _ -) or FLAG (true/false)
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    zero_ok: bool = False
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind in (NUMBER, INTEGER) and self.ceiling is None:
            raise WorkbenchError(f"parameter {self.name} needs a maximum (or a name ending in "
                                 f"{argtypes.SECONDS_SUFFIX} for seconds)")

    @property
    def is_duration(self) -> bool:
        return self.kind == NUMBER and self.name.endswith(argtypes.SECONDS_SUFFIX)

    @property
    def ceiling(self) -> float | None:
        """The largest value allowed: ``maximum``, else a week for a duration."""
        if self.maximum is not None:
            return self.maximum
        return argtypes.MAX_DURATION_S if self.is_duration else None

    def but(self, **changes: Any) -> Param:
        """This parameter with other fields (a scenario's own help text or default)."""
        return replace(self, **changes)

    def check(self, value: Any) -> None:
        """Refuse a value of the wrong type or out of range, naming the parameter."""
        what = f"parameter {self.name}"
        if self.kind == FLAG:
            if not isinstance(value, bool):
                raise WorkbenchError(f"{what} must be true or false, got {value!r}")
        elif self.kind == NAME:
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise WorkbenchError(f"{what} must be a non-empty name of letters, digits, '.',"
                                     f" '_' or '-', got {value!r}")
            if self.choices and value not in self.choices:
                raise WorkbenchError(f"{what} must be one of {', '.join(self.choices)}, "
                                     f"got {value!r}")
        elif self.kind == INTEGER and not self.zero_ok:  # one message says all of it
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    1 <= value <= self.ceiling):
                raise WorkbenchError(f"{what} must be an integer in 1..{self.ceiling:.0f}, "
                                     f"got {value!r}")
        else:
            types = (int, float) if self.kind == NUMBER else int
            if isinstance(value, bool) or not isinstance(value, types):
                want = "a number" if self.kind == NUMBER else "an integer"
                unit = " of seconds (or 30s, 5m, 250ms)" if self.is_duration else ""
                raise WorkbenchError(f"{what} must be {want}{unit}, got {value!r}")
            if not math.isfinite(value):  # JSON parsing of -p turns NaN and Infinity into floats
                raise WorkbenchError(f"{what} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and not self.zero_ok):
                rule = "must not be negative" if self.zero_ok else "must be positive"
                raise WorkbenchError(f"{what} {rule}, got {value!r}")
            if value > self.ceiling:
                unit = " seconds" if self.is_duration else ""
                raise WorkbenchError(f"{what} must be at most {argtypes.figure(self.ceiling)}"
                                     f"{unit}, got {value!r}")


# Parameters of the executors, shared by every scenario that uses them.
DURATION = Param("duration_s", NUMBER, None, "seconds of load")
RATE = Param("rate", NUMBER, None, "iterations per second, open loop",
             maximum=argtypes.MAX_RATE)
MAX_VUS = Param("max_vus", INTEGER, 200, "open loop: most iterations in flight; an arrival "
                                         "beyond them is dropped, and counted",
                maximum=argtypes.MAX_VUS)
VUS = Param("vus", INTEGER, None, "virtual users, closed loop", maximum=argtypes.MAX_VUS)
SLEEP = Param("sleep_s", NUMBER, 1.0, "think time after each iteration", zero_ok=True)
# Every scenario declares both (its own default, and why in its help): what certctl's real
# clients speak, and whether each of them holds a connection of its own.
PROTOCOL = Param("protocol", NAME, None, "h1 (HTTP/1.1) or h2 (HTTP/2)", choices=PROTOCOLS)
PER_CLIENT = Param("connection_per_client", FLAG, False,
                   "each virtual user its own connection (false: a shared pool)")
REQUIRED = (PROTOCOL.name, PER_CLIENT.name)
REST_H2 = PROTOCOL.but(default="h2", help="h2: certctl's CLI and agents (Go, ForceAttemptHTTP2) "
                                          "and its k6 tier speak HTTP/2 over TLS")
ACME_H1 = PROTOCOL.but(default="h1", help="h1: certbot (Python requests), the ACME client "
                                          "certctl's docs lead with, speaks HTTP/1.1 only")
AGENT_CONNECTION = PER_CLIENT.but(default=True, help="each agent its own connection, as "
                                                     "certctl's agents (false: a shared pool)")


def fixture_size(name: str, help: str) -> Param:
    """A fixture's row count, bounded as the fixture SQL numbers its rows."""
    return Param(name, INTEGER, None, help, maximum=seed.MAX_FIXTURE)


@dataclass(frozen=True)
class Note:
    """A table a scenario's report shows beside the latency, read from ``result.json``.

    ``table`` gives the notebook's table; ``line`` one endpoint's short text in the combined
    report of ``workbench run all`` ("" when there is nothing to say).
    """

    title: str
    text: str  # markdown: what the table counts and why it matters
    table: Callable[[Mapping], pd.DataFrame]
    line: Callable[[Mapping, str], str]


def _429s(counts: Mapping[str, int]) -> dict[str, int]:
    """One endpoint's 429s by kind, from its ``response_kinds`` counts."""
    return {"acme_rate_limited": counts.get(ACME_429_KIND, 0),
            "rest_rate_limited": sum(n for kind, n in counts.items()
                                     if kind.startswith(REST_429_PREFIX))}


def _rate_limited_table(result: Mapping) -> pd.DataFrame:
    import pandas as pd

    rows = {tag: _429s(counts) for tag, counts in sorted(
        (result.get("response_kinds") or {}).items())}
    frame = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["acme_rate_limited", "rest_rate_limited"])
    frame.index.name = "endpoint"
    return frame


def _rate_limited_line(result: Mapping, tag: str) -> str:
    counts = _429s((result.get("response_kinds") or {}).get(tag, {}))
    acme, rest = counts["acme_rate_limited"], counts["rest_rate_limited"]
    return f"429 rateLimited={acme} 429 text/plain={rest}" if acme or rest else ""


# certctl's REST limiter can refuse any scenario's requests, so the combined report of every
# scenario counts both 429 kinds; acme_burst also shows them in its notebook.
RATE_LIMITED = Note(
    "429 counters",
    "ACME `rateLimited` problems (`application/problem+json`) against the REST limiter's "
    "`text/plain` refusals, per endpoint.",
    _rate_limited_table, _rate_limited_line)


def _no_probes(params: Mapping) -> tuple[Probe, ...]:
    return ()


def _no_sizes(params: Mapping) -> dict:
    return {}


def _no_warnings(result: Mapping) -> list[str]:
    return []


@dataclass(frozen=True)
class Backlog:
    """Work a scenario's requests leave queued in the target (jobs of its fixture), watched
    after the timed phase: ``Run.drive`` reads the jobs, asks ``plan`` whether they will drain
    on this target, and if so waits (at most the ``timeout_param`` seconds; 0: not at all),
    recording what drained, how fast and what that means (the record's ``telemetry.drain``).
    """

    jobs_like: str  # SQL LIKE of the fixture's certificate ids: whose jobs are the backlog
    statuses: tuple[str, ...]  # job statuses that are still to drain
    enqueued: Callable[[Mapping], int]  # what the requests enqueued, from result.json
    # (target kind, the fixture's jobs by status) -> (wait for the drain?, what it measures)
    plan: Callable[[str, Mapping[str, int]], tuple[bool, str]]
    timeout_param: str = "drain_timeout_s"  # the scenario parameter: seconds to wait at most

    def timeout_s(self, params: Mapping) -> float:
        return float(params.get(self.timeout_param) or 0)


@dataclass(frozen=True)
class OwnTarget:
    """The target of a scenario that loads something other than certctl (the connector tier's
    daemons): where it is, how it is checked before any load, and the notebook's word for it.
    Such a scenario sends no API token, and ``workbench run all`` (certctl's scenarios) leaves
    it out, saying so."""

    resolve: Callable[[Mapping, str | None, str | None, bool], Target]  # params, url, CA, insecure
    check: Callable[[Target, Mapping], dict]  # the identity, as preflight.preflight returns it
    url_help: str  # the parameters cell's comment on target_url


LATENCY_FROM_INTENDED = (
    "Response time from each request's intended start, in milliseconds, per endpoint and "
    "status class; each percentile with a distribution-free 95% interval (`_lo`, `_hi`; blank "
    "where this many samples cannot bound it).")


@dataclass(frozen=True)
class Scenario:
    """One load scenario: what it sends, seeds, checks and shows; see the package docstring.

    Fields that say what a reader sees (``title``, ``description``, ``fixture_text``,
    ``drive_text``, ``latency_text``, notes) are markdown for the generated notebook.
    """

    name: str
    title: str
    description: str  # what it sends and why, the notebook's introduction
    sends: str  # the requests in a few words, for README's table
    executor: str  # ARRIVAL_RATE, CONSTANT_VUS or AGENT_FLEET
    parameters: tuple[Param, ...]
    profiles: Mapping[str, Mapping[str, Any]]  # PROFILES, each over the parameters' defaults
    thresholds: Mapping[str, Sequence[str]]  # k6 syntax, the notebook's default
    templates: Callable[[Mapping], tuple[RequestTemplate, ...]]
    fixture: Callable[[str, Mapping], dict] | None = None  # create or reset (idempotent)
    fixture_reset: Callable[[str, Mapping], dict] | None = None  # undo a run; None: fixture
    fixture_sizes: Callable[[Mapping], dict] = _no_sizes  # for the record (comparability)
    size_param: str | None = None  # the parameter that sizes the fixture (`workbench seed --size`)
    fixture_heading: str = "Fixtures"
    fixture_text: str = "None."
    traps: tuple[str, ...] = ("rate_limit",)  # certctl traps that spoil it (preflight.TRAPS)
    probes: Callable[[Mapping], tuple[Probe, ...]] = _no_probes  # its own preflight checks
    steps: int = 1  # templates per iteration (closed loop: one user's sequence)
    script: str = ""  # package.module:factory of scripted virtual users (closed loop only)
    script_params: tuple[str, ...] = ()  # the parameters the script receives
    notes: tuple[Note, ...] = ()
    drive_text: str = ""
    latency_text: str = LATENCY_FROM_INTENDED
    threshold_help: str = ""  # a comment on the thresholds in the parameters cell
    # what a run with these parameters is judged by, when it depends on them (None: thresholds)
    thresholds_for: Callable[[Mapping], Mapping[str, Sequence[str]]] | None = None
    own_target: OwnTarget | None = None  # None: certctl (or the stand-in), as --target says
    connection_per_request: bool = False  # a new connection per request, its phases timed
    # Hooks (see the package docstring). What it says is wrong with a run, each a sentence
    # from result.json, shown in the summary under ``warnings_title``, in the record's
    # fixtures.warnings and after `workbench run`; the backlog its requests leave, if any.
    warnings: Callable[[Mapping], list[str]] = _no_warnings
    warnings_title: str = "Warnings"
    backlog: Backlog | None = None
    # A capacity search (`--find-capacity`): the parameters that size the fixture to a step's
    # parameters (its load), and what a capacity at a load means in words, given the step's
    # parameters and whether it is a bound ("at least") rather than a knee.
    sized_to_load: Callable[[Mapping], dict] = _no_sizes
    capacity_text: Callable[[Mapping, float, bool], str | None] | None = None
    _by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse a module whose profiles do not fit its parameters."""
        object.__setattr__(self, "_by_name", {p.name: p for p in self.parameters})
        missing = [p for p in PROFILES if p not in self.profiles]
        if missing:
            raise WorkbenchError(f"scenario {self.name}: profiles must include "
                                 f"{', '.join(PROFILES)}")
        for name in REQUIRED:
            if name not in self._by_name:
                raise WorkbenchError(f"scenario {self.name}: parameters must include {name} "
                                     "(its default: what certctl's real clients do)")
        if self.backlog and self.backlog.timeout_param not in self._by_name:
            raise WorkbenchError(f"scenario {self.name}: its backlog's timeout parameter "
                                 f"{self.backlog.timeout_param} must be one of its parameters")
        for profile in self.profiles:
            self.defaults(profile)

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def takes(self) -> tuple[str, ...]:
        """The parameter names, in the notebook's order."""
        return tuple(self._by_name)

    @property
    def needs_database(self) -> bool:
        return self.fixture is not None

    def defaults(self, profile: str) -> dict:
        """A profile's complete parameters, validated."""
        return self.params_for(profile)

    def params_for(self, profile: str, overrides: Mapping | None = None) -> dict:
        """A profile's parameters (over the parameters' defaults) with ``overrides``, validated."""
        if profile not in self.profiles:
            raise WorkbenchError(f"unknown profile {profile!r} for {self.name}; choose one of "
                                 f"{', '.join(self.profiles)}")
        params = ({p.name: p.default for p in self.parameters} | dict(self.profiles[profile])
                  | dict(overrides or {}))
        self.validate(params)
        return params

    def validate(self, params: Mapping) -> None:
        """Refuse an unknown name, a missing value or a bad one, naming the parameter."""
        unknown = sorted(set(params) - set(self._by_name))
        if unknown:
            raise WorkbenchError(f"{self.name} takes no parameter {', '.join(unknown)}; it takes "
                                 f"{', '.join(self.takes)} (and thresholds)")
        for param in self.parameters:
            if params.get(param.name) is None:
                raise WorkbenchError(f"{self.name} needs parameter {param.name}")
            param.check(params[param.name])
        if self.connection_per_request and params[PER_CLIENT.name]:
            raise WorkbenchError(f"{self.name} opens a new connection for every iteration: "
                                 f"{PER_CLIENT.name} must stay false")

    def profile_of(self, profile: str, params: Mapping) -> dict:
        """What a run with ``params`` that names ``profile`` was: that profile, or custom.

        Returns ``profile`` (the name, or ``custom``), ``profile_base`` (the profile named) and
        ``profile_differs`` (each differing parameter: the profile's value and the run's).
        """
        base = self.defaults(profile)
        differs = {name: {"profile": base[name], "run": params[name]}
                   for name in self.takes if params[name] != base[name]}
        return {"profile": CUSTOM if differs else profile, "profile_base": profile,
                "profile_differs": differs}

    def default_thresholds(self, params: Mapping) -> dict:
        """The thresholds a run with ``params`` is judged by unless it is given its own."""
        return dict(self.thresholds_for(params) if self.thresholds_for else self.thresholds)

    def target(self, params: Mapping, url: str | None, ca_file: str | None,
               insecure: bool) -> Target:
        """Where this scenario's load goes: certctl (``url``, else the embedded stand-in), or
        the scenario's own target."""
        from workbench.target import preflight

        if self.own_target is not None:
            return self.own_target.resolve(params, url, ca_file, insecure)
        return preflight.resolve_target(url, ca_file, insecure)

    def token(self, target: Target) -> str:
        """The API token its requests carry: certctl's, or none for a target of its own."""
        from workbench.target import preflight

        return "" if self.own_target is not None else preflight.token_for(target)

    def check_target(self, target: Target, token: str, params: Mapping,
                     strict: bool = False) -> dict:
        """Preflight before any load: the target's identity, with warnings (see preflight)."""
        from workbench.target import preflight

        if self.own_target is not None:
            return self.own_target.check(target, params)
        return preflight.preflight(target, token, strict=strict, **self.preflight_args(params))

    def preflight_args(self, params: Mapping) -> dict:
        """What preflight checks for this scenario: its traps, ACME profile and probes."""
        acme = (params["profile_id"],) if "acme" in self.traps else ()
        return {"traps": self.traps, "acme_profiles": acme, "probes": self.probes(params)}

    @property
    def executor_type(self) -> type:
        """The registered executor class this scenario drives (its facts and parameters)."""
        return executor_named(self.executor)

    @property
    def open_loop(self) -> bool:
        """Whether its executor schedules arrivals (open loop) rather than VUs (closed)."""
        return self.executor_type.open_loop

    def executor_settings(self, params: Mapping) -> dict:
        """The DriveSpec fields of this scenario's executor, from its parameters (the
        executor's own fields: its ``settings``)."""
        settings: dict = {"executor": self.executor, "steps": self.steps,
                          "duration_s": float(params["duration_s"]),
                          "protocol": params["protocol"],
                          "connection_per_client": bool(params["connection_per_client"]),
                          "connection_per_request": self.connection_per_request}
        settings |= self.executor_type.settings(params, self.size_param)
        if self.script:
            settings |= {"script": self.script,
                         "script_params": {k: params[k] for k in self.script_params}}
        return settings

    @property
    def capacity_unit(self) -> str:
        """What a capacity search raises, as its executor says: requests/s (open loop),
        virtual users (closed) or agents (a fleet, each agent running its own loop)."""
        unit = self.executor_type.capacity_unit
        if unit is None:
            raise WorkbenchError(f"{self.name}: a capacity search cannot raise the load of "
                                 f"{self.executor}")
        return unit

    def load_of(self, params: Mapping) -> float:
        """The load ``params`` drive, in :attr:`capacity_unit`."""
        return self.executor_type.load_of(params, self.steps, self.size_param)

    def at_load(self, params: Mapping, load: float, duration_s: float) -> dict:
        """A capacity step's parameters: ``params`` at ``load`` (:attr:`capacity_unit`) for
        ``duration_s``, with the fixture sized to that load (``sized_to_load``), validated."""
        step = self.executor_type.params_at_load(load, self.steps, self.size_param)
        out = dict(params) | step | {"duration_s": float(duration_s)}
        out |= self.sized_to_load(out)
        self.validate(out)
        return out

    def seed(self, dsn: str, params: Mapping) -> dict:
        """Create or reset the fixtures (idempotent); what was seeded, and how fast."""
        self.validate(params)
        return self.fixture(dsn, params) if self.fixture else {}

    def seed_size(self, dsn: str, size: int, profile: str = "smoke") -> dict:
        """Seed the fixture at ``size`` rows (its size parameter), the rest from ``profile``."""
        if self.size_param is None:
            raise WorkbenchError(f"{self.name} has no sized fixture; scenarios with one: "
                                 + ", ".join(n for n in names() if get(n).size_param))
        return self.seed(dsn, self.params_for(profile, {self.size_param: size}))

    def reset(self, dsn: str, params: Mapping) -> dict:
        """Undo what an earlier run changed, once the fixtures are seeded."""
        self.validate(params)
        reset = self.fixture_reset or self.fixture
        return reset(dsn, params) if reset else {}


def module_names() -> list[str]:
    """The scenario modules in this package, in name order (``_`` modules are shared parts)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


@functools.cache
def _registry() -> dict[str, Scenario]:
    found = {}
    for name in module_names():
        scenario = getattr(importlib.import_module(f"{__name__}.{name}"), "SCENARIO", None)
        if not isinstance(scenario, Scenario) or scenario.name != name:
            raise WorkbenchError(f"workbench/scenarios/{name}.py must define SCENARIO = "
                                 f"Scenario(name={name!r}, ...)")
        found[name] = scenario
    return found


def names() -> list[str]:
    """Every registered scenario, in name order."""
    return list(_registry())


def certctl_names() -> list[str]:
    """The scenarios that load certctl, in name order: what ``workbench run all`` runs."""
    return [name for name, scenario in _registry().items() if scenario.own_target is None]


def result_warnings(result: Mapping) -> list[str]:
    """What the scenario that made ``result`` (a ``result.json``) warns about it; nothing for
    a result no scenario made (``workbench drive``)."""
    scenario = _registry().get(result.get("scenario") or "")
    return scenario.warnings(result) if scenario else []


def get(name: str) -> Scenario:
    """The scenario called ``name``; one line naming the choices when there is none."""
    registry = _registry()
    if name not in registry:
        raise WorkbenchError(f"unknown scenario {name!r}; choose one of {', '.join(registry)}"
                             " (or all)")
    return registry[name]


def plan_all(overrides: Mapping, names: Sequence[str]) -> dict[str, dict]:
    """Each scenario's overrides in ``workbench run all``: a ``-p`` goes to the scenarios that
    take it; one that no scenario takes is refused, and so are thresholds, which name one
    scenario's endpoints."""
    if "thresholds" in overrides:
        raise WorkbenchError("thresholds name one scenario's endpoints; set them per scenario: "
                             "workbench run NAME -p thresholds '{...}'")
    taken = {param for name in names for param in get(name).takes}
    unknown = sorted(set(overrides) - taken)
    if unknown:
        raise WorkbenchError(f"no scenario takes parameter {', '.join(unknown)}; they take "
                             f"{', '.join(sorted(taken))}")
    return {name: {k: v for k, v in overrides.items() if k in get(name).takes}
            for name in names}


def plan_sizes(scenario: str, profile: str, sizes: Sequence[int],
               overrides: Mapping) -> list[dict]:
    """Each run's overrides of a fixture-size sweep; every size is checked before any run."""
    spec = get(scenario)
    if spec.size_param is None:
        sized = ", ".join(n for n in names() if get(n).size_param)
        raise WorkbenchError(f"{scenario} has no sized fixture to sweep; scenarios with one: "
                             f"{sized}")
    if spec.size_param in overrides:
        raise WorkbenchError(f"--fixture-sizes sets {spec.size_param}; do not also pass "
                             f"-p {spec.size_param}")
    runs = []
    for size in sizes:
        params = dict(overrides) | {spec.size_param: size}
        spec.params_for(profile, {k: v for k, v in params.items() if k != "thresholds"})
        runs.append(params)
    return runs
