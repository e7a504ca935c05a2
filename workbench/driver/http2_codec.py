"""HTTP/2's wire format, as the hot-loop engine (:mod:`workbench.driver.http2`) speaks it:
frames, a stateless HPACK both ways, and a request encoded once.

Pure functions over bytes, no sockets and no state: what RFC 9113 and RFC 7541 say a frame and a
header block are. A request's HEADERS (and small DATA) frames are built once
(:func:`encode_request`) with a stateless HPACK encoding, so a send writes them with only the
stream id changed. We advertise ``SETTINGS_HEADER_TABLE_SIZE = 0``, so the server's header blocks
are stateless too: :func:`decode_header_block` decodes each on its own (status and content type
only unless asked for every field; values we do not need are skipped, not Huffman-decoded).
Chosen by measurement over the ``h2`` package (``benchmarks/bench_http2.py``, section "codec").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL, COMPRESSION_ERROR = (
    0x0, 0x1, 0x3, 0x6, 0x8, 0x9)
DEFAULT_WINDOW = 65_535  # RFC 9113: every window starts here until SETTINGS or WINDOW_UPDATE
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 16_384  # what we accept (we never raise SETTINGS_MAX_FRAME_SIZE)
MAX_STREAM_ID = 2**31 - 1
# Connection-specific fields are forbidden in HTTP/2 (RFC 9113 8.2.2); Host becomes :authority.
_DROPPED_FIELDS = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                             b"transfer-encoding", b"upgrade", b"host"))
_SENSITIVE_FIELDS = frozenset((b"authorization", b"cookie", b"proxy-authorization"))

FRAME_HEAD = struct.Struct(">BHBBL").unpack_from  # length (24 bits), type, flags, stream id
SETTING = struct.Struct(">HL").unpack_from  # one SETTINGS entry: identifier, value
U32 = struct.Struct(">L").unpack_from
_STATIC = HeaderTable.STATIC_TABLE
_STATIC_FULL = {entry: i + 1 for i, entry in reversed(list(enumerate(_STATIC)))}
_STATIC_NAME = {name: i + 1 for i, (name, _) in reversed(list(enumerate(_STATIC)))}


class H2Error(Exception):
    """A connection error (RFC 9113 5.4.1): the connection ends with GOAWAY ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 9-byte head and payload."""
    return (len(payload).to_bytes(3, "big") + bytes((ftype, flags))
            + stream_id.to_bytes(4, "big") + payload)


def settings_payload(settings: dict[int, int]) -> bytes:
    return b"".join(struct.pack(">HL", k, v) for k, v in settings.items())


# -- HPACK, stateless both ways ------------------------------------------------------------

def _hpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_header_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """HPACK without the dynamic table: static indexes, else literals never added to a table.

    Each block decodes on its own, so a prepared request can be sent in any order on any
    connection. Credentials are marked never-indexed (RFC 7541 7.1.3).
    """
    out = bytearray()
    for name, value in fields:
        full = _STATIC_FULL.get((name, value))
        if full:
            out += _hpack_int(full, 7, 0x80)
            continue
        index = _STATIC_NAME.get(name, 0)
        out += _hpack_int(index, 4, 0x10 if name in _SENSITIVE_FIELDS else 0x00)
        if not index:
            out += _hpack_int(len(name), 7, 0) + name
        out += _hpack_int(len(value), 7, 0) + value
    return bytes(out)


def _int_at(data: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        b = data[i]
        i += 1
        value += (b & 127) << shift
        shift += 7
        if not b & 128:
            return value, i
        if shift > 28:
            raise H2Error(COMPRESSION_ERROR, "HPACK integer too large")


def _string_at(data: bytes, i: int, keep: bool) -> tuple[bytes | None, int]:
    huffman = data[i] & 0x80
    length, i = _int_at(data, i, 7)
    end = i + length
    if end > len(data):
        raise H2Error(COMPRESSION_ERROR, "HPACK string runs past the header block")
    if not keep:
        return None, end
    raw = data[i:end]
    return (decode_huffman(raw) if huffman else raw), end


def decode_header_block(block: bytes, full: bool = False
                        ) -> tuple[int, bytes | None, list[tuple[bytes, bytes]] | None]:
    """``(status, content-type value, fields)`` of a block encoded without a dynamic table.

    We advertise a header table of size 0, so the server may not refer to its dynamic table:
    a reference to it, or a table size update above 0, is a COMPRESSION_ERROR. ``fields``
    (every name and value, in order) only when ``full``; otherwise values other than
    ``:status`` and ``content-type`` are skipped without decoding.
    """
    i, n = 0, len(block)
    status, ctype = 0, None
    fields: list[tuple[bytes, bytes]] | None = [] if full else None
    try:
        while i < n:
            b = block[i]
            if b & 0x80:  # indexed field
                index, i = _int_at(block, i, 7)
                if not 0 < index <= len(_STATIC):
                    raise H2Error(COMPRESSION_ERROR, f"header index {index} outside the "
                                  "static table (we allow no dynamic table)")
                name, value = _STATIC[index - 1]
            elif b & 0xE0 == 0x20:  # dynamic table size update
                size, i = _int_at(block, i, 5)
                if size:
                    raise H2Error(COMPRESSION_ERROR, f"table size update to {size} above our 0")
                continue
            else:  # literal: with incremental indexing (a no-op at size 0), without, never
                index, i = _int_at(block, i, 6 if b & 0x40 else 4)
                if index:
                    if index > len(_STATIC):
                        raise H2Error(COMPRESSION_ERROR, f"header name index {index} outside "
                                      "the static table")
                    name = _STATIC[index - 1][0]
                else:
                    name, i = _string_at(block, i, True)
                keep = full or name == b":status" or name == b"content-type"
                value, i = _string_at(block, i, keep)
                if not keep:
                    continue
            if name == b":status":  # exactly three digits (RFC 9113 8.3.2), else malformed
                status = int(value) if len(value) == 3 and value.isdigit() else -1
            elif name == b"content-type":
                ctype = value
            if fields is not None:
                fields.append((name, value))
    except (IndexError, ValueError) as exc:
        raise H2Error(COMPRESSION_ERROR, f"undecodable header block: {exc}") from None
    return status, ctype, fields


def response_head(status: int, fields: list[tuple[bytes, bytes]]) -> bytes:
    """The head as the HTTP/1.1 engine gives it (status line, ``name: value`` lines, CRLF)."""
    lines = [b"HTTP/2 %d" % status]
    lines += [name + b": " + value for name, value in fields if not name.startswith(b":")]
    return b"\r\n".join(lines) + b"\r\n"



def unpad(view, start: int, end: int) -> tuple[int, int]:
    """The payload of a PADDED frame between ``start`` and ``end``, without its padding."""
    if start >= end:
        raise H2Error(PROTOCOL_ERROR, "PADDED frame without its pad length")
    pad = view[start]
    if start + 1 + pad > end:
        raise H2Error(PROTOCOL_ERROR, "padding longer than the frame")
    return start + 1, end - pad


# -- requests ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Http2Request:
    """A request encoded once: frame heads and payloads; a send only adds the stream id."""

    headers_head: bytes  # 5 bytes: length, HEADERS, END_HEADERS (+ END_STREAM without body)
    block: bytes  # the HPACK header block
    body: bytes | None
    data_head: bytes  # 5 bytes: length, DATA, END_STREAM (the body in one frame)
    open_head: bytes  # HEADERS without END_STREAM, when the body follows as flow control allows
    head_only: bool
    want_body: bool
    want_head: bool


def encode_request(method: str, scheme: str, authority: str, path: str,
                   headers: dict[str, str], body: bytes | None, want_body: bool = False,
                   want_head: bool = False) -> Http2Request:
    """``method path`` with ``headers`` and ``body`` as frames sendable on any connection in
    any order (a stateless header block); ``path`` with its prefix, in Latin-1."""
    fields = [(b":method", method.encode()), (b":scheme", scheme.encode()),
              (b":authority", authority.encode()), (b":path", path.encode("latin-1"))]
    for name, value in headers.items():
        key = name.lower().encode("latin-1")
        if key not in _DROPPED_FIELDS:
            fields.append((key, str(value).encode("latin-1")))
    if body is not None or method in ("POST", "PUT", "PATCH"):
        fields.append((b"content-length", str(len(body or b"")).encode()))
    block = encode_header_block(fields)
    if len(block) > MAX_FRAME:
        raise ValueError(f"request headers of {len(block)} bytes do not fit one HTTP/2 frame")
    length = len(block).to_bytes(3, "big")
    body = body or None  # an empty body is no DATA frame: END_STREAM on HEADERS
    return Http2Request(
        headers_head=length + bytes((HEADERS, END_HEADERS | (END_STREAM if body is None
                                                              else 0))),
        block=block, body=body,
        data_head=len(body or b"").to_bytes(3, "big") + bytes((DATA, END_STREAM)),
        open_head=length + bytes((HEADERS, END_HEADERS)),
        head_only=method == "HEAD", want_body=want_body, want_head=want_head)
