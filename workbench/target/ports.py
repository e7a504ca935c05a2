"""A free TCP port on loopback, for servers the workbench starts (stand-in, tests, benchmarks).

The port comes from below the kernel's ephemeral range: a port from inside it (what binding to
port 0 gives) is also what every outgoing connection on the machine draws from, so between
choosing it and the server binding it, a load test's client socket can take it ("address
already in use", seen under load). Below the range only another server choosing at random can.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _below_ephemeral() -> range:
    try:
        low = int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default ephemeral range starts here
    return range(LOWEST, max(low, LOWEST + 1_000))


def free_port() -> int:
    """A port free on 127.0.0.1 right now, outside the ephemeral range where possible."""
    candidates = _below_ephemeral()
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # everything tried was taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now (the connector
    targets take four in a row)."""
    for _ in range(200):
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise OSError(f"no {count} consecutive free ports found on 127.0.0.1")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine: a loopback address, ``localhost`` or a Unix socket."""
    if not host or host.startswith("/") or host == "localhost":
        return True  # Unix socket or local name
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
