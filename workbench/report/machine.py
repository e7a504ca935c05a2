"""Facts about the machine a run was measured on, and a stable fingerprint of them."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

from workbench.paths import project_root

# Packages whose versions can change a measurement or its analysis.
PACKAGES = ("aiohttp", "httpx", "numpy", "pandas", "pyarrow", "sqlalchemy", "psycopg",
            "papermill", "pgserver", "scipy", "hdrhistogram", "matplotlib")
# The pinned client stack `make install` applies (pip's -c), so two machines measure alike.
LOCK_FILE = "requirements.lock"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def _virtualisation() -> str:
    if shutil.which("systemd-detect-virt"):
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True)
        if out.stdout.strip():
            return out.stdout.strip()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return "hypervisor" if re.search(r"^flags\s*:.*\bhypervisor\b", flags, re.MULTILINE) else "none"


def facts() -> dict:
    """CPU model, cores, memory, kernel and virtualisation, plus a fingerprint and a name.

    The fingerprint hashes only what changes the numbers (CPU model, core count, memory, arch),
    so two runs on like machines compare and the name stays stable across reboots and hostnames.
    ``WORKBENCH_MACHINE`` overrides the name (an operator's canonical box).
    """
    cpu, cores = _cpu_model(), os.cpu_count() or 0
    mem_gib = round(psutil.virtual_memory().total / 2**30)
    arch = platform.machine()
    fingerprint = hashlib.sha256(f"{cpu}|{cores}|{mem_gib}|{arch}".encode()).hexdigest()[:16]
    virtualisation = _virtualisation()
    name = os.environ.get("WORKBENCH_MACHINE") or machine_name(
        cpu, cores, mem_gib, virtualisation, fingerprint)
    return {
        "name": name,
        "fingerprint": fingerprint,
        "cpu_model": cpu,
        "cores": cores,
        "memory_gib": mem_gib,
        "arch": arch,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "virtualisation": virtualisation,
    }


_NOISE = {"r", "tm", "cpu", "processor", "core", "with", "radeon", "graphics"}


def machine_name(cpu: str, cores: int, mem_gib: int, virtualisation: str,
                 fingerprint: str) -> str:
    """A name that says what hardware measured: CPU, cores, memory, how virtualised.

    ``Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz``, 2 cores, 24 GiB, a KVM guest becomes
    ``intel-xeon-platinum-8375c-2c-24g-kvm-<fingerprint[:8]>``.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", cpu.lower().split("@")[0]) if w]
    slug = "-".join(w for w in words if w not in _NOISE)[:40].strip("-") or "cpu"
    where = "" if virtualisation in ("none", "unknown", "") else f"-{virtualisation}"
    return f"{slug}-{cores}c-{mem_gib}g{where}-{fingerprint[:8]}"


def lock_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a pip constraints file (comments and blanks skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _listed_versions() -> dict[str, str]:
    """Installed versions by normalized name, as the ``NAME-VERSION.dist-info`` folders on
    ``sys.path`` name them (the first on the path wins, as for an import). Reading each
    package's metadata instead costs 40 ms a record for a lock of 150 pins; a pin whose
    folder says otherwise is looked up properly."""
    out: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if folder.endswith(".dist-info"):
                name, _, version = folder.removesuffix(".dist-info").partition("-")
                out.setdefault(_normal(name), version)
    return out


def lock(root: Path | None = None, listed: dict[str, str] | None = None) -> dict | None:
    """The lock file's sha256 and whether the installed packages are the ones it pins.

    None when the checkout has no lock file (an install from a wheel elsewhere).
    """
    path = (root or project_root()) / LOCK_FILE
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mismatched = []
    pins = lock_pins(data.decode())
    listed = _listed_versions() if listed is None else listed
    for name, version in sorted(pins.items()):
        if listed.get(_normal(name)) == version:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            mismatched.append(f"{name} {installed or 'missing'} (lock {version})")
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(data).hexdigest(), "pins": len(pins),
            "matches": not mismatched, "mismatched": mismatched}


def software() -> dict:
    """Python, the versions of :data:`PACKAGES` (None when not installed) and the lock file."""
    versions, listed = {}, _listed_versions()
    for name in PACKAGES:
        try:
            versions[name] = listed.get(_normal(name)) or metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "packages": versions, "lock": lock(listed=listed)}
