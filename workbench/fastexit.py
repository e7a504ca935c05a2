"""Leaving a finished process without the interpreter's teardown.

At exit CPython frees every module it loaded, one object at a time: with pandas, SciPy,
Matplotlib and nbformat loaded that is 0.5-2 s (measured by ``benchmarks/bench_overhead.py``)
of a short command's wall time, spent on nothing anyone sees. :func:`exit_now` runs what was
registered to run at exit (temporary files, logging, multiprocessing), flushes the standard
streams and ends the process; it falls back to the ordinary exit while a non-daemon thread is
still working, since the ordinary exit waits for it. Only for the end of a process's main
path, after every file it writes is closed.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with ``code``: at-exit handlers run and output is flushed."""
    working = [t for t in threading.enumerate()
               if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if working:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)
