"""What became of one request: its error class (a small integer code) from status or exception.

Error classes are stored as a dictionary-encoded string column; code 0 (``""``) means success.
The order is part of the on-disk format: new classes are only ever appended.
"""

from __future__ import annotations

import socket
import ssl

ERROR_CLASSES = (
    "", "connect", "timeout", "reset", "tls", "http_4xx", "http_5xx", "http_429", "other",
    "dropped", "unexpected_status", "cancelled",
    "protocol",  # a response that breaks HTTP (bad framing, status line) or the engine's caps
)
ERR = {name: code for code, name in enumerate(ERROR_CLASSES)}
OK = 0
DROPPED = ERR["dropped"]


def classify_status(status: int, expect: tuple[int, ...] = ()) -> int:
    """0 when ``status`` counts as success (in ``expect``, or below 400 when it is empty)."""
    if expect:
        if status in expect:
            return OK
    elif status < 400:
        return OK
    if status == 429:
        return ERR["http_429"]
    if status >= 500:
        return ERR["http_5xx"]
    if status >= 400:
        return ERR["http_4xx"]
    return ERR["unexpected_status"]


def classify_exception(exc: BaseException | None) -> int:
    """The error class of a transport failure (``None``: the peer closed mid-response)."""
    if exc is None:
        return ERR["reset"]
    if isinstance(exc, TimeoutError):
        return ERR["timeout"]
    if isinstance(exc, ssl.SSLError):  # includes certificate verification failures
        return ERR["tls"]
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return ERR["connect"]
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return ERR["reset"]
    if isinstance(exc, OSError):
        return ERR["connect"]
    return ERR["other"]
