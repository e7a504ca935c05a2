"""The command line's exit codes, decided here and nowhere else (README, "Exit codes").

k6's convention: 99 is "thresholds breached", so CI can tell a slow server from a broken run.
Every command returns one of these; a combination (``run all``, a sweep) takes the worst.
"""

from __future__ import annotations

from collections.abc import Iterable

PASSED = 0
FAILED = 1  # anything else: a notebook or driver crashed, a run wrote no result
BAD_INPUT = 2  # bad input or an unfit target, refused before any load (``error:`` line)
BREACHED = 99  # a threshold (or --fail-on-slower) was breached; k6's ThresholdsHaveFailed
INTERRUPTED = 130  # Ctrl-C / SIGINT, as a shell reports it (128 + 2)

# Worst first: an interrupted or broken run says less than a breach, a breach than a pass.
_SEVERITY = (INTERRUPTED, FAILED, BAD_INPUT, BREACHED, PASSED)
# What a notebook cell's exception means for the run (papermill names it by class).
_BY_EXCEPTION = {"ThresholdBreach": BREACHED, "WorkbenchError": BAD_INPUT,
                 "KeyboardInterrupt": INTERRUPTED}


def verdict(passed: bool) -> int:
    """A finished measurement's code: 0 when every check held, 99 when one was breached
    (also a capacity search that measured nothing: there is no capacity to pass)."""
    return PASSED if passed else BREACHED


def for_exception(name: str) -> int:
    """The code of a run that raised the exception class ``name`` (a notebook's ``ename``)."""
    return _BY_EXCEPTION.get(name, FAILED)


def worst(codes: Iterable[int]) -> int:
    """The most severe of several runs' codes (0 when there are none)."""
    found = {code if code in _SEVERITY else FAILED for code in codes}  # unknown: a failure
    return next((code for code in _SEVERITY if code in found), PASSED)
