"""Phase tracer for ``benchmarks/bench_overhead.py``: times named functions in any process.

Python imports ``sitecustomize`` at start-up from ``sys.path``; the benchmark puts this folder on
``PYTHONPATH`` and names a file in ``WORKBENCH_TRACE``, so every process of the command under
test (the CLI, the Jupyter kernel, the driver, the telemetry sampler) appends one JSON line per
traced call: ``{"pid", "name", "start", "end"}`` (epoch seconds), plus ``up`` (interpreter
ready) and ``exit`` lines per process. Functions are wrapped right after their module is
imported, by name; a name a tree does not have is skipped, so the same tracer times the code
before and after a change without touching either tree.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import inspect
import json
import os
import sys
import time

_PATH = os.environ.get("WORKBENCH_TRACE")

# module -> attribute paths to time ("Class.method" for a method)
TRACED = {
    "workbench.cli": ("main", "_import_report_path"),
    "workbench.report.calibration": ("measure",),
    "workbench.driver.launch": ("drive",),
    "workbench.run.adhoc": ("identify", "build_record", "report_html"),
    "workbench.report.exports": ("write_all",),
    "workbench.target.preflight": ("preflight", "check_database"),
    "workbench.run.launcher": ("prepare", "execute_notebook", "render_html"),
    "workbench.run.scenario": ("Run.__init__", "Run.seed", "Run.drive", "Run.start_telemetry",
                               "Run.stop_telemetry", "Run.summary", "Run.figures", "Run.record"),
    "workbench.scenarios": ("Scenario.seed", "Scenario.reset"),
    "workbench.run.suite": ("run_all", "combined_summary", "write_report"),
    "workbench.run.kernel": ("Kernel.start", "Kernel.prepare", "Kernel.stop"),
    "papermill.iorw": ("load_notebook_node", "write_ipynb"),
    "papermill.parameterize": ("parameterize_notebook",),
    "nbclient.client": ("NotebookClient.start_new_kernel",
                        "NotebookClient.start_new_kernel_client",
                        "NotebookClient.execute_cell", "NotebookClient._cleanup_kernel"),
}
# A tree from before the modules were grouped by pipeline step has them at the top level: their
# calls are timed under today's names, so the two trees' parts line up.
FLAT = {"workbench.calibration": "workbench.report.calibration",
        "workbench.adhoc": "workbench.run.adhoc", "workbench.exports": "workbench.report.exports",
        "workbench.preflight": "workbench.target.preflight",
        "workbench.launcher": "workbench.run.launcher", "workbench.run": "workbench.run.scenario",
        "workbench.suite": "workbench.run.suite", "workbench.kernel": "workbench.run.kernel"}
TRACED |= {old: TRACED[new] for old, new in FLAT.items()}


def _emit(record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write per line: lines of several processes never interleave
    finally:
        os.close(fd)


def _created() -> float | None:
    """This process's start (epoch s): /proc's start tick against the boot clock, to 10 ms."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def _label(name: str, args: tuple) -> str:
    """``execute_cell`` is labelled with the cell's id: a notebook's steps apart."""
    if name.endswith("execute_cell") and len(args) > 1:
        return f"cell:{args[1].get('id') or '?'}"
    return name


def _wrap(function, name: str):
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def traced_async(*args, **kwargs):
            start = time.time()
            try:
                return await function(*args, **kwargs)
            finally:
                _emit({"pid": os.getpid(), "name": _label(name, args), "start": start,
                       "end": time.time()})
        return traced_async

    @functools.wraps(function)
    def traced(*args, **kwargs):
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            _emit({"pid": os.getpid(), "name": _label(name, args), "start": start,
                   "end": time.time()})
    return traced


def _patch(module, paths) -> None:
    for path in paths:
        *owner_path, attr = path.split(".")
        owner = module
        for part in owner_path:
            owner = getattr(owner, part, None)
        function = getattr(owner, attr, None) if owner is not None else None
        if callable(function):
            name = FLAT.get(module.__name__, module.__name__)
            setattr(owner, attr, _wrap(function, f"{name}.{path}"))


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, paths) -> None:
        self.loader, self.paths = loader, paths

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _patch(module, self.paths)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in TRACED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, TRACED[name])
                return spec
        return None


if _PATH:
    sys.meta_path.insert(0, _Finder())
    _emit({"pid": os.getpid(), "name": "up", "start": _created(), "end": time.time(),
           "argv": sys.orig_argv[:6]})
    atexit.register(lambda: _emit({"pid": os.getpid(), "name": "exit", "start": time.time(),
                                   "end": time.time()}))
