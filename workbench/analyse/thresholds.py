"""k6's threshold grammar, parsed without pandas so the command line checks it before any load.

``{"http_req_duration{endpoint:heartbeat}": ["p(95)<500"], "http_req_failed": ["rate<0.01"]}``:
a metric (optionally with one ``{endpoint:NAME}`` selector) and its expressions, each an
aggregate (``p(N)`` with N in 0..100, ``avg``, ``min``, ``max``, ``med``, ``rate``, ``count``),
an operator and a number. :mod:`workbench.analyse.analysis` evaluates them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass

from workbench.errors import WorkbenchError

_AGG = r"p\((?P<q>\d+(?:\.\d+)?)\)|avg|min|max|med|rate|count"
_EXPR = re.compile(
    rf"\s*(?P<agg>{_AGG})\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)\s*")
_METRIC = re.compile(r"(?P<name>[a-z_]+)(?:\{(?P<key>[a-z_]+):(?P<tag>[^}\s]+)\})?")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
METRICS = {"http_req_duration": "latency_ms", "http_req_failed": "failed",
           "http_req_service_time": "service_ms",
           "http_req_server_error": "server_error"}  # share of sent requests answered 5xx


class ThresholdBreach(AssertionError):
    """Raised at the end of a notebook so papermill, and so CI, exits non-zero."""


@dataclass(frozen=True)
class Threshold:
    metric: str  # as written, e.g. http_req_duration{endpoint:heartbeat}
    expression: str  # as written, e.g. p(95)<500
    column: str
    tag: str | None
    agg: str
    q: float | None
    op: str
    limit: float


METRIC_FIRST = re.compile(r"([a-z_]+(?:\{[^}]*\})?)\s*[:\s]\s*(\S.*)")


def threshold_options(values: list[str]) -> dict[str, list[str]]:
    """Command-line thresholds as k6's mapping: each a k6 expression on
    ``http_req_duration`` (``p(99)<200``) unless a metric comes first, after a space or a
    colon (``http_req_failed rate<0.01``, ``http_req_duration{endpoint:heartbeat}:p(95)<100``).
    """
    thresholds: dict[str, list[str]] = {}
    for value in values:
        named = METRIC_FIRST.fullmatch(value.strip())
        metric, expression = named.groups() if named else ("http_req_duration", value.strip())
        thresholds.setdefault(metric, []).append(expression.strip())
    return thresholds


def parse_thresholds(spec: Mapping[str, list[str] | str]) -> list[Threshold]:
    """Parse k6-style thresholds; a malformed one raises WorkbenchError naming it."""
    if not isinstance(spec, Mapping):
        raise WorkbenchError(f"thresholds must be a mapping of metric to expressions, got {spec!r}")
    out = []
    for metric, exprs in spec.items():
        m = _METRIC.fullmatch(metric) if isinstance(metric, str) else None
        if not m or m["name"] not in METRICS:
            raise WorkbenchError(f"unknown threshold metric {metric!r}; use one of "
                                 f"{', '.join(METRICS)} (optionally with {{endpoint:NAME}})")
        if m["key"] not in (None, "endpoint", "tag"):
            raise WorkbenchError(f"threshold selector in {metric!r} must be {{endpoint:NAME}}")
        if not isinstance(exprs, str | list | tuple):
            raise WorkbenchError(f"thresholds of {metric} must be a list of expressions such as "
                                 f"[\"p(95)<500\"], got {exprs!r}")
        for expr in [exprs] if isinstance(exprs, str) else exprs:
            e = _EXPR.fullmatch(expr) if isinstance(expr, str) else None
            if not e:
                raise WorkbenchError(f"malformed threshold {expr!r} for {metric}; write it as "
                                     "k6 does, e.g. 'p(95)<500' or 'rate<0.01'")
            q = float(e["q"]) if e["q"] else None
            if q is not None and q > 100:
                raise WorkbenchError(f"threshold {expr!r} for {metric} asks for percentile "
                                     f"{q:g}; a percentile is between 0 and 100, e.g. p(99.9)")
            out.append(Threshold(metric, expr, METRICS[m["name"]], m["tag"],
                                 e["agg"].split("(")[0], q, e["op"], float(e["value"])))
    return out
