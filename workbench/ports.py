"""A free TCP port on loopback, for servers the workbench starts (stand-in, tests, benchmarks)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just reported free on 127.0.0.1 (another process may still take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
