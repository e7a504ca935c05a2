"""Ports for the servers the workbench starts stay out of the clients' ephemeral range."""

import socket

from workbench.target import ports


def test_a_free_port_is_below_the_ephemeral_range_and_bindable():
    low = ports._below_ephemeral().stop
    for _ in range(20):
        port = ports.free_port()
        assert ports.LOWEST <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_taken_is_never_offered(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports, "_below_ephemeral", lambda: range(busy, busy + 1))
        assert ports.free_port() != busy  # falls back to the kernel's choice
