"""Text a target sent (its version, an error body, a content type), made safe to show.

The server under test is not trusted: what it says about itself lands in a terminal, a JUnit
file, a log line and a report. :func:`printable` keeps it one line and bounded, with every
control, format or separator character (terminal escape sequences, NUL, line breaks, bidi
overrides; all that XML 1.0 forbids among them) shown as its Python escape. Markup each output
speaks (Markdown, mathtext, HTML) is that output's own escaping.
"""

from __future__ import annotations

MAX_CHARS = 200


def printable(value: object, limit: int | None = MAX_CHARS) -> str:
    """``value`` as one line of visible text: ``"\\x1b[2J"`` for ESC [ 2 J; at most ``limit``
    characters of it (then ``…``), all of it when ``limit`` is None."""
    text = str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "\u2026"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
