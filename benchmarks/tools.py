"""External load tools for the side-by-side capacity table: found, or installed, or skipped.

Each ``find_*`` returns ``(argv prefix, version)`` or raises :class:`Unavailable` with the
reason the column is skipped. Installs use the ordinary clients only: the Go module proxy for
vegeta (``go install github.com/tsenart/vegeta/v12@v12.12.0``, MIT), Debian's packages
(``apt-get install wrk hey``, as root) and PyPI (Locust into its own virtualenv under
``.workbench/bench-tools/``, so it never touches the workbench's environment). k6 is AGPL and
is never installed here: its column is measured only when a user already has k6 on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = ROOT / ".workbench" / "bench-tools"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.12.0"
LOCUST_REQUIREMENT = "locust>=2.20"
_apt_updated = False


class Unavailable(Exception):
    """Why a tool's column is skipped (one line)."""


def _run(argv: list[str], timeout: float, env: dict | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
        raise Unavailable(f"`{' '.join(argv[:3])} ...` failed: {tail[0][:120]}")
    return out.stdout.strip()


def find_k6() -> tuple[list[str], str]:
    """k6 from PATH only: it is AGPL-licensed, so the benchmarks never install it."""
    path = shutil.which("k6")
    if not path:
        raise Unavailable("k6 is never installed here (AGPL); use it only when on PATH")
    return [path], _run([path, "version"], 30).split("(")[0].strip()


def _go() -> str | None:
    go = shutil.which("go")
    if go is None and Path("/usr/local/go/bin/go").exists():
        go = "/usr/local/go/bin/go"
    return go


def find_vegeta(install: bool = True) -> tuple[list[str], str]:
    """vegeta on PATH or in GOPATH/bin, else ``go install`` it through the Go module proxy."""
    go = _go()
    candidates = [shutil.which("vegeta")]
    if go:
        gopath = _run([go, "env", "GOPATH"], 30).split(os.pathsep)[0]
        candidates.append(str(Path(gopath) / "bin" / "vegeta"))
    for path in candidates:
        if path and Path(path).exists():
            return [path], _go_module_version(go, path, "vegeta")
    if not go:
        raise Unavailable(f"vegeta not found and no Go toolchain to `go install {VEGETA_MODULE}`")
    if not install:
        raise Unavailable("vegeta not installed (run with installs allowed)")
    print(f"[benchmarks] installing vegeta: go install {VEGETA_MODULE}", flush=True)
    _run([go, "install", VEGETA_MODULE], 1800)
    return find_vegeta(install=False)


def _go_module_version(go: str | None, exe: str, name: str) -> str:
    """``name vX.Y.Z`` from the module information Go builds into a binary."""
    if go:
        try:
            for line in _run([go, "version", "-m", exe], 30).splitlines():
                fields = line.split()
                if fields[:1] == ["mod"] and len(fields) >= 3:
                    return f"{name} {fields[2]}"
        except Unavailable:
            pass
    return name


def _apt_install(*packages: str) -> None:
    global _apt_updated
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise Unavailable(f"{' '.join(packages)} not installed and apt-get is not usable here "
                          "(needs root on Debian)")
    if not _apt_updated:
        _run(["apt-get", "update", "-qq"], 600)
        _apt_updated = True
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "install", "-y", "-qq", *packages], 600, env=env)


def find_debian_tool(name: str, install: bool = True) -> tuple[list[str], str]:
    """``wrk`` or ``hey`` from PATH, else from Debian's packages."""
    path = shutil.which(name)
    if not path and install:
        print(f"[benchmarks] installing {name}: apt-get install {name}", flush=True)
        try:
            _apt_install(name)
        except Unavailable as exc:
            raise Unavailable(f"Debian package {name}: {exc}") from None
        path = shutil.which(name)
    if not path:
        raise Unavailable(f"{name} is not installed and its Debian package did not provide it")
    return [path], _debian_version(name)


def _debian_version(package: str) -> str:
    if shutil.which("dpkg-query"):
        try:
            return f"{package} " + _run(["dpkg-query", "-W", "-f=${Version}", package], 30)
        except Unavailable:
            pass
    return package


def find_locust(install: bool = True) -> tuple[list[str], str]:
    """Locust from its own virtualenv under .workbench/bench-tools (made with pip on demand)."""
    venv = TOOLS_DIR / "locust"
    exe = venv / "bin" / "locust"
    if not exe.exists():
        if not install:
            raise Unavailable("Locust not installed (run with installs allowed)")
        print(f"[benchmarks] installing Locust into {venv} (pip)", flush=True)
        _run([sys.executable, "-m", "venv", str(venv)], 300)
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
              LOCUST_REQUIREMENT], 900)
    return [str(exe)], _run([str(exe), "--version"], 60).splitlines()[0]


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


_realtime: bool | None = None


def can_realtime() -> bool:
    """Whether ``chrt -f`` (SCHED_FIFO) works here: root, or CAP_SYS_NICE."""
    global _realtime
    if _realtime is None:
        _realtime = shutil.which("chrt") is not None and subprocess.run(
            ["chrt", "-f", "10", "true"], capture_output=True).returncode == 0
    return _realtime


def pinned(argv: list[str], cpu: int, realtime: bool = False) -> list[str]:
    """``argv`` pinned to one CPU with taskset (unchanged where taskset or a 2nd CPU lacks).

    ``realtime``: also SCHED_FIFO priority 10 where allowed, so other tenants of a shared
    machine cannot delay its wake-ups (it never spins, so it cannot starve the core).
    """
    if have_taskset():
        argv = ["taskset", "-c", str(cpu), *argv]
    if realtime and can_realtime():
        argv = ["chrt", "-f", "10", *argv]
    return argv
