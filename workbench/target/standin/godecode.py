"""Request bodies decoded the way Go's ``json.NewDecoder(r.Body).Decode(&structValue)`` does.

certctl answers 400 when Go's decoder fails, so the stand-in must fail on the same inputs:
only the first JSON value is read (trailing bytes are ignored), ``null`` leaves the struct
empty, a non-object or a wrong field type is an error, unknown fields are ignored and field
names match case-insensitively.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

# Field kinds a struct declares: Go string, []string, map[string]string, time.Time.
STR, STRS, STR_MAP, TIME = "string", "[]string", "map[string]string", "time.Time"

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


class GoDecodeError(ValueError):
    """The body Go's decoder would refuse (certctl then answers 400)."""


def parse_rfc3339(text: str) -> datetime:
    """Go's ``time.Parse(time.RFC3339, text)`` (fractional seconds beyond microseconds cut)."""
    m = _RFC3339.match(text)
    if not m:
        raise GoDecodeError(f"not an RFC 3339 time: {text!r}")
    fraction = f".{m[2][:6]}" if m[2] else ""
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        return datetime.fromisoformat(m[1] + fraction + zone)
    except ValueError as exc:
        raise GoDecodeError(str(exc)) from None


def _convert(kind: str, value: Any) -> Any:
    if kind == STR:
        if not isinstance(value, str):
            raise GoDecodeError(f"cannot unmarshal {type(value).__name__} into string")
        return value
    if kind == STRS:
        if not isinstance(value, list):
            raise GoDecodeError("cannot unmarshal into []string")
        return ["" if v is None else _convert(STR, v) for v in value]
    if kind == STR_MAP:
        if not isinstance(value, dict):
            raise GoDecodeError("cannot unmarshal into map[string]string")
        return {k: "" if v is None else _convert(STR, v) for k, v in value.items()}
    if kind == TIME:
        if not isinstance(value, str):
            raise GoDecodeError("cannot unmarshal into time.Time")
        return parse_rfc3339(value)
    raise AssertionError(kind)


def decode_struct(body: bytes, fields: dict[str, str]) -> dict[str, Any]:
    """Decode ``body`` into the declared ``fields`` (JSON name -> kind); absent fields omitted.

    Raises :class:`GoDecodeError` wherever Go's decoder returns an error.
    """
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not text:
        raise GoDecodeError("EOF")
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError as exc:
        raise GoDecodeError(str(exc)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoDecodeError(f"cannot unmarshal {type(value).__name__} into a struct")
    folded = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, field_value in value.items():
        name = key if key in fields else folded.get(key.lower())
        if name is None or field_value is None:  # unknown fields ignored; null is a no-op
            continue
        out[name] = _convert(fields[name], field_value)
    return out
