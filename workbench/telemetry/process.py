"""The sampler's own process, and the parent's handle that starts and stops it.

:class:`TelemetrySampler` starts ``python -m workbench.telemetry`` (the DSN goes through the
child's stdin, never its command line), waits until the first tick is recorded, and stops it
with SIGTERM; the child writes its files and exits. Nothing the sampler does raises into the
run: a sampler that cannot start, or dies, records why in ``telemetry.json``. It runs at a
lower priority (nice 5): the driver and the target come first, and a late sample is only late.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.telemetry.files import SIDECAR_FILE, read_sidecar
from workbench.telemetry.sampler import (
    LOG_FILE,
    Sampler,
    build_sources,
    finalize,
    statement_timeout_ms,
    write_json,
)

READY = "ready"
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.05, 60.0


# --- the child process -------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM (so: write the files and exit) when the parent dies; Linux only, as the driver."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.telemetry --out DIR``; the configuration (JSON) comes on stdin."""
    p = argparse.ArgumentParser(prog="python -m workbench.telemetry")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    config = json.loads(sys.stdin.readline() or "{}")
    _die_with_parent(config.get("parent_pid", os.getppid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with contextlib.suppress(OSError):
        os.nice(5)  # the driver and the target come first; a late sample is only late
    dsn = config.get("dsn")  # a libpq URI: the parent converted it, as it redacted dsn_shown
    sources, disabled = build_sources(dsn, config.get("target_url"), config.get("target_pid"),
                                      config.get("host"),
                                      statement_timeout_ms(config.get("interval_s", 1.0)),
                                      config.get("scrapes") or ())
    target = {k: config.get(k) for k in ("target_url", "target_pid", "host")}
    sampler = Sampler(sources, args.out, config.get("interval_s", 1.0), disabled, dsn, target,
                      config.get("dsn_shown"))

    def ready() -> None:
        print(READY, flush=True)

    sidecar = sampler.run(stop, on_first_tick=ready, final_tick=True)
    return 0 if sidecar["status"] == "completed" else 1


# --- the parent's handle -----------------------------------------------------------------------


class TelemetrySampler:
    """Start, then stop, a sampler process writing into ``out_dir`` (a run folder).

    ``host``: whether the target runs on this machine (None: decided from ``target_url``).
    ``target_pid`` names the target's process when finding it by port is not possible.
    ``scrapes``: Prometheus targets (:func:`workbench.telemetry.sampler.build_sources`); like
    the DSN, a scrape's token reaches the child through its stdin only.
    """

    def __init__(self, out_dir: str | Path, *, dsn: str | None = None,
                 target_url: str | None = None, target_pid: int | None = None,
                 host: bool | None = None, interval_s: float = 1.0,
                 scrapes: Sequence[Mapping] = ()) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or not (
                MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S):
            raise WorkbenchError(f"telemetry interval must be {MIN_INTERVAL_S}..{MAX_INTERVAL_S}"
                                 f" seconds, got {interval_s!r}")
        if target_pid is not None and (isinstance(target_pid, bool)
                                       or not isinstance(target_pid, int) or target_pid <= 0):
            raise WorkbenchError(f"--target-pid must be a process id, got {target_pid!r}")
        self.out_dir = Path(out_dir)
        self._config = {"dsn": dsn, "target_url": target_url, "target_pid": target_pid,
                        "host": host, "interval_s": float(interval_s),
                        "scrapes": [dict(s) for s in scrapes]}
        self.process: subprocess.Popen | None = None
        self.error: str | None = None

    def start(self, ready_timeout_s: float = 30.0) -> TelemetrySampler:
        """Start the child and wait for its first tick; a failure is recorded, never raised."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)}
        config = dict(self._config, parent_pid=os.getpid())
        if config["dsn"]:  # SQLAlchemy's URL reading here, where it is loaded already
            from workbench.seed import redact_dsn
            from workbench.telemetry.sources import libpq_conninfo

            config |= {"dsn": libpq_conninfo(config["dsn"]),
                       "dsn_shown": redact_dsn(config["dsn"])}
        with open(self.out_dir / LOG_FILE, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workbench.telemetry", "--out", str(self.out_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        try:
            self.process.stdin.write((json.dumps(config) + "\n").encode())
            self.process.stdin.close()
        except OSError:
            pass  # the child died at once; reported below
        if not self._await_ready(ready_timeout_s):
            self._abandon()
        return self

    def _await_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        stdout = self.process.stdout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], min(0.1, timeout_s))
            if readable:
                line = stdout.readline().decode(errors="replace").strip()
                if line == READY:
                    return True
                if not line and self.process.poll() is not None:
                    self.error = (f"the telemetry sampler exited with code "
                                  f"{self.process.returncode} before its first sample; see "
                                  f"{self.out_dir / LOG_FILE}")
                    return False
        self.error = f"the telemetry sampler took no sample within {timeout_s:.0f} s"
        return False

    def _abandon(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        sidecar = finalize(self.out_dir, f"failed: {self.error}")
        sidecar["error"] = self.error
        write_json(self.out_dir / SIDECAR_FILE, sidecar)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> dict:
        """Stop sampling and return ``telemetry.json`` (after writing ``telemetry.parquet``)."""
        if self.process is None:
            raise WorkbenchError("the telemetry sampler was never started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        sidecar = read_sidecar(self.out_dir)
        if sidecar is None or sidecar.get("status") == "running" or self.process.returncode < 0:
            status = (sidecar or {}).get("status", "")
            final = status if status.startswith("failed") else "interrupted"
            sidecar = finalize(self.out_dir, final)
        return sidecar

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.stop()
