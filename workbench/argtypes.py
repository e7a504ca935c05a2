"""Typed command-line values: each parser turns one string into a checked value, or refuses it
with what is wrong and how to fix it. Every option of ``workbench`` that takes a duration, a
bounded number, a name, a header, a URL, a file or an output folder uses one of these, so a new
option gets the same checks (and the same bounds) by naming its type.

The parsers raise :class:`BadValue`, which is both argparse's ``ArgumentTypeError`` (argparse
prefixes the option: ``error: argument --rate: ...``) and a :class:`WorkbenchError` (the same
check called from code). Nothing here imports more than the standard library: the command
line refuses bad input before any heavy import, target start or load.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from workbench.errors import WorkbenchError

# Upper bounds: far beyond what one machine (or a Dask cluster) can do, so they refuse only
# values that are typos or overflows (1e308 req/s, a 1e300 s run), never a real plan.
MAX_RATE = 1_000_000.0  # requests (or iterations) per second over every shard
MAX_DURATION_S = 7 * 86_400.0  # a week of load; nanosecond offsets stay far inside int64
MAX_TIMEOUT_S = 3_600.0  # one request's timeout
MAX_VUS = 1_000_000  # virtual users or requests in flight
MAX_SHARDS = 256  # driver processes of one run
MAX_RESAMPLES = 100_000  # bootstrap resamples of a comparison
MAX_BODY_BYTES = 16 << 20  # a request body from --body @FILE
MAX_LINE = 200  # a free-text label (a version string) kept in records and tables
DEFAULT_PID_MAX = 4_194_304  # Linux's PID_MAX_LIMIT, when /proc does not say

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h))+")
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
PATH_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # no leading dot: no "..", no hidden
SECONDS_SUFFIX = "_s"  # a scenario parameter in seconds (duration_s, sleep_s): takes units


class BadValue(WorkbenchError, argparse.ArgumentTypeError):
    """A command-line value that cannot be used; the message says why and what to write."""


def _show(text: str) -> str:
    """The value as the message quotes it: repr, so a newline or an odd character shows."""
    return repr(text)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a bare number (``30``, ``0.5``) or numbers with units, as k6 and
    vegeta write them (``30s``, ``5m``, ``250ms``, ``1h30m``). Not bounded; see :func:`duration`.
    """
    spoken = text.strip()
    if _DURATION.fullmatch(spoken):
        return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(spoken))
    try:
        seconds = float(spoken)
    except ValueError:
        raise BadValue(f"{_show(text)} is not a duration; write seconds (30, 0.5) or a number "
                       "with a unit: 250ms, 30s, 5m, 1h") from None
    if not math.isfinite(seconds):
        raise BadValue(f"{_show(text)} is not a finite duration; write e.g. 30s or 5m")
    return seconds


def duration(maximum: float = MAX_DURATION_S, zero: bool = False) -> Callable[[str], float]:
    """A positive duration in seconds (or 0 with ``zero``: "none"), at most ``maximum`` (see
    :func:`parse_duration`)."""
    least = "at least 0" if zero else "above 0"

    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not (0 <= seconds if zero else 0 < seconds) or not seconds <= maximum:
            raise BadValue(f"{_show(text)} is out of range: a duration {least} and at most "
                           f"{_seconds_text(maximum)}")
        return seconds
    return parse


def _seconds_text(seconds: float) -> str:
    return f"{seconds / 86_400:g} days" if seconds >= 86_400 else f"{seconds:g} s"


def figure(value: float) -> str:
    """1,000,000 rather than 1e+06; 0.5 as 0.5."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def number(kind: type = float, *, above: float | None = None, minimum: float | None = None,
           below: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """A finite ``kind`` (int or float) within the given bounds (``above``/``below`` exclusive,
    ``minimum``/``maximum`` inclusive); NaN, infinities and fractions of an int are refused."""
    word = "an integer" if kind is int else "a number"
    rules = [f"above {figure(above)}" if above is not None else "",
             f"at least {figure(minimum)}" if minimum is not None else "",
             f"below {figure(below)}" if below is not None else "",
             f"at most {figure(maximum)}" if maximum is not None else ""]
    wanted = f"{word} " + " and ".join(r for r in rules if r)

    def parse(text: str):
        try:
            value = kind(text.strip())
        except ValueError:
            raise BadValue(f"{_show(text)} is not {word}; write {wanted.strip()}") from None
        if kind is float and not math.isfinite(value):
            raise BadValue(f"{_show(text)} is not a finite number; write {wanted.strip()}")
        if ((above is not None and not value > above)
                or (minimum is not None and not value >= minimum)
                or (below is not None and not value < below)
                or (maximum is not None and not value <= maximum)):
            raise BadValue(f"{_show(text)} is out of range: {wanted.strip()}")
        return value
    return parse


rate = number(above=0, maximum=MAX_RATE)
vus = number(int, minimum=1, maximum=MAX_VUS)
fraction = number(minimum=0, maximum=1)  # a share of requests, e.g. --max-error-rate


def port(text: str) -> int:
    return number(int, minimum=1, maximum=65_535)(text)


def pid(text: str) -> int:
    """A process id this kernel can have (1 .. pid_max)."""
    try:
        highest = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        highest = DEFAULT_PID_MAX
    return number(int, minimum=1, maximum=highest)(text)


def name(text: str) -> str:
    """A name that goes into URL paths, JSON and file names verbatim: letters, digits, . _ -"""
    if not _NAME.fullmatch(text):
        raise BadValue(f"{_show(text)} is not a name; use only letters, digits, '.', '_' "
                       "and '-'")
    return text


def header(text: str) -> tuple[str, str]:
    """``NAME: VALUE`` as (name, value), both stripped; what a header may hold is checked with
    the request (:meth:`workbench.driver.DriveSpec.validate`)."""
    name_part, colon, value = text.partition(":")
    if not colon or not name_part.strip():
        raise BadValue(f"{_show(text)} is not a header; write NAME:VALUE, e.g. "
                       "'Accept: application/json'")
    return name_part.strip(), value.strip()


def url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host, printable ASCII, without a login.

    A login (``user:password@``) is refused: the URL is written to spec.json, record.json and
    the report, and ``baseline commit`` commits the record. The message never repeats it.
    """
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise BadValue("the URL holds a login (user:password@); it would be written to "
                       "spec.json, record.json and the report: remove it and pass credentials "
                       "in the environment (CERTCTL_TOKEN) or a header (--header)")
    if not text.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in text):
        raise BadValue(f"{_show(text)} holds spaces, control or non-ASCII characters; "
                       "percent-encode them (e.g. %20, %E2%82%AC) and write the host in ASCII")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadValue(f"{_show(text)} is not an http:// or https:// URL with a host; write "
                       "e.g. https://127.0.0.1:8443")
    try:
        given = parts.port
    except ValueError:
        given = -1
    if given is not None and not 1 <= given <= 65_535:
        raise BadValue(f"{_show(text)} has no valid port; a port is 1..65535")
    return text


def existing_file(text: str) -> str:
    """A path to a readable regular file (a CA certificate, a k6 summary)."""
    path = Path(text)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise BadValue(f"{text} is {what}; name an existing file")
    return text


def folder(text: str) -> str:
    """A folder that exists (a run folder)."""
    path = Path(text)
    if not path.is_dir():
        what = "a file" if path.exists() else "missing"
        raise BadValue(f"{text!r} is {what}; name a run folder (runs/<id>)")
    return text


def ca_file(text: str) -> str:
    """A PEM file of CA certificates that TLS verification can load."""
    existing_file(text)
    try:
        ssl.create_default_context(cafile=text)
    except (ssl.SSLError, ValueError, OSError):
        raise BadValue(f"{text} holds no PEM CA certificate; pass the CA that signed the "
                       "target's certificate (-----BEGIN CERTIFICATE-----)") from None
    return text


def path_part(text: str) -> str:
    """A name that can be a folder or file name under baselines/: letters, digits, . _ -,
    not starting with a dot (so never ``..`` or a hidden file)."""
    if not PATH_PART.fullmatch(text):
        raise BadValue(f"{_show(text)} cannot name a folder: use only letters, digits, '.', "
                       "'_' and '-' (not starting with '.')")
    return text


def existing_path(text: str) -> str:
    """A file or folder that exists (a run folder, a record, a folder of records)."""
    if not text or not Path(text).exists():
        raise BadValue(f"{text!r} does not exist; name a run folder (runs/<id>), a record "
                       ".json or a folder of them")
    return text


def new_folder(text: str) -> Path:
    """An output folder that does not exist yet or is empty: a run's files are never mixed
    with, or written over, another's."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise BadValue(f"{text} is a file; name a new folder for the run")
    if path.is_dir() and any(path.iterdir()):
        raise BadValue(f"{text} already holds files; name a new folder (a run's files are "
                       "never overwritten)")
    return path


def body(text: str) -> str:
    """A request body: inline text, or ``@FILE`` (as curl and hey read one), UTF-8."""
    if not text.startswith("@"):
        return text
    path = Path(text[1:])
    try:
        if path.stat().st_size > MAX_BODY_BYTES:
            raise BadValue(f"body file {path} is larger than {MAX_BODY_BYTES >> 20} MiB")
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise BadValue(f"body file {path} is a folder; name a file") from None
    except OSError as exc:
        raise BadValue(f"cannot read body file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadValue(f"body file {path} is not UTF-8 text") from None


def sizes(maximum: int | None = None) -> Callable[[str], list[int]]:
    """``10000,100000,1000000``: distinct positive integers (at most ``maximum``), in
    increasing order."""
    one = number(int, minimum=1, maximum=maximum)

    def parse(text: str) -> list[int]:
        parts = text.split(",")
        if not text.strip() or any(not p.strip() for p in parts):
            raise BadValue(f"{_show(text)} is not a list of sizes; write integers separated by "
                           "commas, e.g. 10000,100000,1000000")
        return sorted({one(p) for p in parts})
    return parse


def choices_list(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """``p50,p95``: one or more of ``allowed``, comma-separated, in ``allowed``'s order."""
    def parse(text: str) -> tuple[str, ...]:
        parts = [p.strip() for p in text.split(",")]
        wrong = [p for p in parts if p not in allowed]
        if wrong or not parts:
            raise BadValue(f"{_show(text)} is not a list of {', '.join(allowed)}; write one or "
                           f"more separated by commas, e.g. {allowed[0]}")
        return tuple(a for a in allowed if a in parts)
    return parse


def line(text: str) -> str:
    """A short free-text label (a version string): one line of printable characters, since it
    lands in records, Markdown tables and JUnit XML."""
    if not text.strip() or len(text) > MAX_LINE or not text.isprintable():
        raise BadValue(f"{_show(text[:MAX_LINE])} must be one line of at most {MAX_LINE} "
                       "printable characters")
    return text


def scheduler(text: str) -> str:
    """A Dask scheduler address: ``tcp://HOST:PORT`` or ``tls://HOST:PORT``."""
    parts = urlsplit(text)
    try:
        given = parts.port
    except ValueError:
        given = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or given is None \
            or parts.path not in ("", "/") or "@" in parts.netloc:
        raise BadValue(f"{_show(text)} is not a Dask scheduler address; write "
                       "tcp://HOST:PORT or tls://HOST:PORT (e.g. tcp://10.0.0.5:8786)")
    return text


def param_value(param: str, text: str):
    """``-p NAME VALUE``'s value: JSON where it parses (numbers, true, objects), a duration
    with a unit for a parameter in seconds (``-p duration_s 30s``), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if param.endswith(SECONDS_SUFFIX) and _DURATION.fullmatch(text.strip()):
        return parse_duration(text)
    return text
