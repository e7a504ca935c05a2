"""What one driver process can hold open, checked before any load is sent.

Every connection is a file descriptor, so a process holds at most its open-files limit
(RLIMIT_NOFILE) of them, less a reserve for everything else; and one (source address,
destination) pair has at most the kernel's ephemeral port range of connections (28,232 by
default). Per-client runs on an IPv4 loopback target bind shard k's connections to the
source address 127.0.0.(k+1) (Linux routes all of 127/8 to loopback without setup), so
shards do not share one port range.
"""

from __future__ import annotations

import ipaddress
import math
import resource
from pathlib import Path
from urllib.parse import urlsplit

from workbench.driver.spec import DriveSpec
from workbench.errors import WorkbenchError

RESERVE_FDS = 256  # the interpreter, pyarrow, pipes, the timer, the Parquet file


def open_files_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE; unlimited reads as a very large number."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    big = 2**31
    return (big if soft == resource.RLIM_INFINITY else soft,
            big if hard == resource.RLIM_INFINITY else hard)


def local_ports() -> int:
    """Ephemeral ports per (source, destination) pair (``ip_local_port_range``)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(high) - int(low) + 1
    except (OSError, ValueError):
        return 28_232  # Linux's default range, 32768-60999


def connections_per_process(spec: DriveSpec, shards: int) -> int:
    """Most connections one of ``shards`` processes opens: its clients, or its pool."""
    if spec.connection_per_client or spec.protocol == "h1":  # HTTP/1.1: one per request
        return math.ceil(spec.clients / shards)
    return 1


def shards_needed(spec: DriveSpec) -> int:
    """Fewest processes whose connections fit the hard open-files limit."""
    _, hard = open_files_limit()
    return max(1, math.ceil(spec.clients / max(1, hard - RESERVE_FDS))) \
        if spec.connection_per_client else 1


def source_host(spec: DriveSpec, shard: int) -> str | None:
    """The source address of shard ``shard``'s connections (see the module doc), or None."""
    host = urlsplit(spec.base_url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host) \
            .is_loopback
    except ValueError:
        return None
    return f"127.0.0.{shard % 254 + 1}" if loopback and spec.connection_per_client else None


def check_limits(spec: DriveSpec, shards: int) -> None:
    """Refuse, before any load, a run whose connections one process cannot hold."""
    conns = connections_per_process(spec, shards)
    need = conns + RESERVE_FDS
    soft, hard = open_files_limit()
    if need > hard:
        fewest = shards_needed(spec)
        raise WorkbenchError(
            f"{spec.scenario} needs {need:,} open files in each of {shards} driver "
            f"process(es) ({conns:,} connections + {RESERVE_FDS} spare), but the open-files "
            f"limit is {hard:,} (hard; soft {soft:,}); raise the hard limit (as root: "
            f"`ulimit -Hn {need}` in the shell that starts the workbench, LimitNOFILE= for a "
            f"systemd unit, docker run --ulimit nofile={need}) or run {fewest} or more driver "
            f"processes (--shards {fewest})")
    if not spec.connection_per_client:
        return
    if source_host(spec, 0) is None and spec.clients > local_ports():
        raise WorkbenchError(
            f"{spec.scenario} opens {spec.clients:,} connections to one server port, more "
            f"than the {local_ports():,} local ports of this machine's one source address; "
            "spread the clients over several driver machines (--cluster)")
    if conns > local_ports():
        raise WorkbenchError(
            f"{spec.scenario} opens {conns:,} connections from each driver process, more than "
            f"the {local_ports():,} local ports of one source address; run "
            f"{math.ceil(spec.clients / local_ports())} or more driver processes (--shards)")


def raise_open_files(want: int) -> None:
    """Lift the soft open-files limit toward the hard one (often 1,024 of far more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
