"""Prometheus scrape targets as a telemetry source: certctl's own metrics, node_exporter,
postgres_exporter, or any exporter speaking the text exposition format.

A target with its database and host on machines of their own is dark to the SQL and ``/proc``
sources; what operators run beside it is Prometheus. ``--scrape [NAME=]URL`` (repeatable) adds
a :class:`ScrapeSource` per URL, named NAME (default: the URL's ``host:port``); ``--scrape
certctl`` scrapes the target's own ``GET /api/v1/metrics/prometheus`` with its API token (as
``certctl_metrics``). Each scrape is parsed by prometheus_client's text parser and becomes
rows of the one long telemetry format:

* every series as ``name{label="value",...}`` (labels sorted, values escaped as in the
  exposition), its value for a gauge, its per-second rate for a counter (and a histogram's or
  summary's ``_count``, ``_sum`` and ``_bucket``) as ``name_per_s{...}`` between two scrapes
  (none across a reset);
* recognised series summed into the names the host and PostgreSQL sources use, so the report's
  figure draws a remote host and database the way it draws local ones: from node_exporter
  ``cpu.<n>``, ``cpu.all`` (busy %: neither idle nor iowait), ``cpu.iowait``, ``cpu.steal``,
  ``load.1|5|15``, ``memory.used_bytes``, ``memory.available_bytes``; from postgres_exporter,
  over every database, ``pg.xact_commit_per_s`` (and rollbacks, rows, block reads),
  ``pg.connections.<state>`` and ``pg.locks.held``. A ``.`` never appears in a Prometheus
  name, so these never collide with a series.

A scrape costs its target work (certctl's runs COUNT queries on its database): like the jobs
count, a source takes at most :data:`MAX_DUTY` of the wall time, skipping ticks after a slow
scrape. What a target sends is bounded: :data:`MAX_BODY` bytes, :data:`MAX_SERIES` series.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from workbench.errors import WorkbenchError
from workbench.telemetry.sources import SourceError

SCRAPE_ENV = "WORKBENCH_SCRAPE"  # --scrape reaches the notebook kernel through the environment
CERTCTL = "certctl"  # --scrape certctl: the target's own metrics
CERTCTL_SOURCE = "certctl_metrics"
CERTCTL_PATH = "/api/v1/metrics/prometheus"
RESERVED = ("postgres", "certctl", "host", "target_process", "sampler")  # the built-in sources
MAX_DUTY = 0.01  # a scrape takes at most 1% of the wall time (as counting certctl's jobs)
MAX_BODY = 8 * 1024 * 1024
MAX_SERIES = 5000
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"  # the text format, not OpenMetrics
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# cumulative samples of each metric type: a counter's, and a histogram's or summary's parts
_CUMULATIVE = {"counter": ("_total", ""), "histogram": ("_bucket", "_count", "_sum"),
               "summary": ("_count", "_sum")}
_IDLE = ("idle", "iowait")
_BARE_COUNTER = re.compile(r"^#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)
PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
               "tup_fetched", "tup_returned", "blks_read", "blks_hit", "deadlocks")


def parse_option(text: str) -> dict[str, str]:
    """One ``--scrape`` value: ``certctl``, or ``[NAME=]URL`` (http or https); refused with
    what to write instead."""
    text = text.strip()
    if text == CERTCTL:
        return {"name": CERTCTL_SOURCE, "url": CERTCTL}
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        name, url = "", text
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkbenchError(f"--scrape {text!r}: give certctl (the target's own metrics) or an "
                             "exporter's URL, e.g. http://db-host:9100/metrics or "
                             "node=http://db-host:9100/metrics")
    name = name or f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if not _NAME.fullmatch(name) or name in RESERVED or name == CERTCTL_SOURCE:
        raise WorkbenchError(f"--scrape {text!r}: the name {name!r} must be 1-64 letters, "
                             "digits, '_', '.', ':' or '-' and not one of the built-in sources "
                             f"({', '.join(RESERVED)})")
    return {"name": name, "url": url}


def parse_options(values: Iterable[str]) -> list[dict[str, str]]:
    """Every ``--scrape`` value, checked; two targets of one name are refused."""
    scrapes = [parse_option(v) for v in values]
    names = [s["name"] for s in scrapes]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise WorkbenchError(f"--scrape names {', '.join(twice)} twice; name each target "
                             "(NAME=URL)")
    return scrapes


def to_env(values: list[str]) -> None:
    """Hand the ``--scrape`` values, checked, to the notebook kernel (:func:`from_env`)."""
    parse_options(values)
    if values:
        os.environ[SCRAPE_ENV] = json.dumps(list(values))


def from_env() -> list[dict[str, str]]:
    """The scrape targets ``workbench run --scrape`` gave (none when it gave none)."""
    text = os.environ.get(SCRAPE_ENV, "").strip()
    try:
        values = json.loads(text) if text else []
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise WorkbenchError(f"{SCRAPE_ENV} must be a JSON list of --scrape values")
    return parse_options(values)


def shown_url(url: str) -> str:
    """A scrape URL as recorded: without user and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else "")))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def series(name: str, labels: Mapping[str, str]) -> str:
    """``name{a="1",b="2"}``: labels sorted and escaped as the exposition format writes them."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) \
        + "}"


def parse(text: str, max_series: int = MAX_SERIES) -> tuple[list[tuple], int]:
    """Samples of an exposition: ``(name, labels, value, cumulative)``, at most ``max_series``
    of them (``_created`` timestamps left out), and how many more were dropped."""
    out: list[tuple] = []
    dropped = 0
    # the parser names a counter's samples ``<name>_total`` even where the exposition did not
    # (postgres_exporter's do not): the series keep the names the target gave them
    bare = set(_BARE_COUNTER.findall(text))
    try:
        for family in text_string_to_metric_families(text):
            parts = _CUMULATIVE.get(family.type, ())
            for sample in family.samples:
                name = sample.name
                if family.type == "counter" and family.name in bare:
                    name = name.removesuffix("_total")
                if name.endswith("_created"):
                    continue
                if len(out) >= max_series:
                    dropped += 1
                    continue
                cumulative = any(name == family.name + suffix for suffix in parts)
                out.append((name, dict(sample.labels), float(sample.value), cumulative))
    except ValueError as exc:
        raise SourceError(f"not Prometheus text exposition: {str(exc)[:200]}") from None
    return out, dropped


def recognised(samples: list[tuple], rates: Mapping[tuple, float]) -> dict[str, float]:
    """node_exporter's and postgres_exporter's series in the host's and PostgreSQL's names.

    ``rates`` maps ``(name, sorted label items)`` of a cumulative sample to its rate.
    """
    out: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    for (name, labels), rate in rates.items():
        labels = dict(labels)
        if name == "node_cpu_seconds_total" and "cpu" in labels and "mode" in labels:
            cpu.setdefault(labels["cpu"], {})[labels["mode"]] = rate
        elif name.startswith("pg_stat_database_") and name[17:] in PG_COUNTERS:
            key = f"pg.{name[17:]}_per_s"
            out[key] = out.get(key, 0.0) + rate
    if cpu:
        totals = {"all": 0.0, "busy": 0.0, "iowait": 0.0, "steal": 0.0}
        for core in sorted(cpu, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c)):
            modes = cpu[core]
            total = sum(modes.values())
            busy = total - sum(modes.get(m, 0.0) for m in _IDLE)
            if total > 0:
                out[f"cpu.{core}"] = max(0.0, min(100.0, 100.0 * busy / total))
            totals["all"] += total
            totals["busy"] += busy
            totals["iowait"] += modes.get("iowait", 0.0)
            totals["steal"] += modes.get("steal", 0.0)
        if totals["all"] > 0:
            out["cpu.all"] = max(0.0, min(100.0, 100.0 * totals["busy"] / totals["all"]))
            out["cpu.iowait"] = 100.0 * totals["iowait"] / totals["all"]
            out["cpu.steal"] = 100.0 * totals["steal"] / totals["all"]
    gauges = {}
    for name, labels, value, cumulative in samples:
        if cumulative:
            continue
        if name in ("node_load1", "node_load5", "node_load15"):
            out[f"load.{name[9:]}"] = value
        elif name in ("node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes"):
            gauges[name] = value
        elif name == "pg_stat_activity_count" and "state" in labels:
            state = re.sub(r"\W+", "_", labels["state"].replace("(", "").replace(")", ""))
            out[f"pg.connections.{state}"] = out.get(f"pg.connections.{state}", 0.0) + value
            out["pg.connections.total"] = out.get("pg.connections.total", 0.0) + value
        elif name == "pg_locks_count":
            out["pg.locks.held"] = out.get("pg.locks.held", 0.0) + value
    if len(gauges) == 2:
        available = gauges["node_memory_MemAvailable_bytes"]
        out["memory.available_bytes"] = available
        out["memory.used_bytes"] = gauges["node_memory_MemTotal_bytes"] - available
    return out


def recorded(metric: str) -> bool:
    """Whether a scraped metric goes into the baseline record (the Parquet file keeps every
    series): the recognised ones and certctl's own, not an exporter's hundreds."""
    name = metric.split("{", 1)[0]
    return "." in name or name.startswith("certctl_")


class ScrapeSource:
    """One Prometheus target, scraped once a tick at most (:data:`MAX_DUTY`)."""

    def __init__(self, name: str, url: str, *, token: str | None = None,
                 verify: object = True, timeout_s: float = 0.8,
                 max_duty: float | None = MAX_DUTY) -> None:
        self.name, self.url = name, url
        self.kind, self.shown_url = "prometheus", shown_url(url)
        headers = {"Accept": ACCEPT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(headers=headers, verify=verify,  # type: ignore[arg-type]
                                    timeout=timeout_s, follow_redirects=False)
        self.max_duty = max_duty
        self._next_at = self._slowest = 0.0
        self._last: dict[tuple, tuple[float, float]] = {}  # series -> (monotonic s, value)
        self.notes: list[str] = []
        self.backend_pid = None

    def _fetch(self) -> str:
        try:
            with self._client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise SourceError(f"{shown_url(self.url)} answered HTTP "
                                      f"{response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise SourceError(f"{shown_url(self.url)} sent more than "
                                          f"{MAX_BODY // 2**20} MiB")
                return body.decode(response.encoding or "utf-8", errors="replace")
        except httpx.HTTPError as exc:
            raise SourceError(f"{shown_url(self.url)}: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None

    def sample(self) -> dict[str, float] | None:
        now = time.monotonic()
        if now < self._next_at:
            return None
        text = self._fetch()
        elapsed = time.monotonic() - now
        if self.max_duty:
            self._next_at = now + elapsed / self.max_duty
            if elapsed > self._slowest and elapsed / self.max_duty > 1.0:
                self._slowest = elapsed
                self.notes[:] = [f"a scrape took up to {elapsed * 1e3:.0f} ms, so it was "
                                 f"scraped as seldom as every {elapsed / self.max_duty:.1f} s "
                                 f"(at most {self.max_duty:.0%} of the time)"]
        samples, dropped = parse(text)
        if dropped:
            note = (f"more than {MAX_SERIES} series: {dropped} were left out (the first "
                    f"{MAX_SERIES} kept)")
            if note not in self.notes:
                self.notes.append(note)
        out: dict[str, float] = {}
        rates: dict[tuple, float] = {}
        seen: dict[tuple, tuple[float, float]] = {}
        for name, labels, value, cumulative in samples:
            if not cumulative:
                out[series(name, labels)] = value
                continue
            key = (name, tuple(sorted(labels.items())))
            seen[key] = (now, value)
            last = self._last.get(key)
            if last is not None and now > last[0] and value >= last[1]:  # down: a reset
                rates[key] = (value - last[1]) / (now - last[0])
                out[series(f"{name}_per_s", labels)] = rates[key]
        self._last = seen
        return out | recognised(samples, rates)

    def close(self) -> None:
        self._client.close()
