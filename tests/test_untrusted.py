"""Text a target sent, made safe to show: one line, bounded, no control characters."""

from __future__ import annotations

import pytest

from workbench.untrusted import printable


@pytest.mark.parametrize("raw,shown", [
    ("v2.0.71", "v2.0.71"),
    ("a b\tc", "a b\\tc"),
    ("\x1b[2Jcleared\x07", "\\x1b[2Jcleared\\x07"),
    ("two\r\nlines", "two\\r\\nlines"),
    ("nul\x00", "nul\\x00"),
    ("\u202eevil", "\\u202eevil"),  # a bidi override reorders what a terminal shows
    ("caf\u00e9 $x$ [l](u)", "caf\u00e9 $x$ [l](u)"),  # printable text is left alone
    (3.5, "3.5"),
])
def test_control_and_format_characters_are_shown_as_escapes(raw, shown):
    assert printable(raw) == shown


def test_long_text_is_cut_and_says_so():
    assert printable("x" * 500, 10) == "x" * 10 + "\u2026"
    assert printable("x" * 500, None) == "x" * 500


@pytest.mark.parametrize("body,said", [
    ({"version": "v2.0.71", "commit": "a" * 40, "modified": False},
     {"version": "v2.0.71", "commit": "a" * 40, "modified": False, "standin": False}),
    ({"version": "v1\x1b[2J" + "x" * 500, "commit": 12345, "modified": "yes", "standin": 1},
     {"version": "v1\\x1b[2J" + "x" * 94 + "\u2026", "commit": "12345", "modified": None,
      "standin": False}),
    (["not", "an", "object"], {"version": None, "commit": None, "modified": None,
                               "standin": False}),
])
def test_what_a_target_says_it_is_is_kept_printable_and_short(body, said):
    from workbench.target.preflight import target_identity

    assert target_identity(body) == said
