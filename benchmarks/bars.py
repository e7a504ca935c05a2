"""Bars: a benchmark's targets, printed with the measured value and a verdict.

A bar is ``(name, measured, target, op)`` with ``op`` ``"<="`` or ``">="``; every section
module returns its bars and ``run.py`` (or a module's own ``main``) prints them together.
"""

from __future__ import annotations

import math

Bar = tuple[str, float, float, str]


def fmt(value: float | None, width: int = 10) -> str:
    """A number right-aligned in ``width``: thousands separated, small values to 3 places."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    if abs(value) >= 1000:
        return f"{value:>{width},.0f}"
    return f"{value:>{width}.3f}"


def print_bars(bars: list[Bar]) -> int:
    """Print one line per bar; return how many were missed (NaN counts as missed)."""
    width = max(len(name) for name, *_ in bars)
    print(f"\n{'bar':<{width}}  {'measured':>10}  {'target':>10}  verdict")
    missed = 0
    compare = {"<=": float.__le__, ">=": float.__ge__, "==": float.__eq__}
    for name, value, limit, op in bars:
        ok = compare[op](float(value), float(limit)) if not (
            isinstance(value, float) and math.isnan(value)) else False
        missed += not ok
        print(f"{name:<{width}}  {fmt(value)}  {op}{fmt(limit, 8)}  {'ok' if ok else 'MISSED'}")
    return missed
