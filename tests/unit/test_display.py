"""What a person's screen shows of text callers wrote (``workmanager/display.py``): every
character that acts or hides instead of showing is escaped, visibly; the rest as it is."""

from __future__ import annotations

import sys
import unicodedata

from workmanager.display import shown


def test_every_format_and_separator_character_is_escaped() -> None:
    """A console pass: zero-width characters and Unicode's tag characters passed through,
    so a result read ``approve`` on the review page while it held ``approve and DROP TABLE
    users`` (U+E0020…). Every ``Cf``, ``Zl`` and ``Zp`` character of the running Python's
    Unicode is escaped, and the variation selectors that can carry hidden bytes."""
    hiding = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")
        or 0xFE00 <= c <= 0xFE0D
        or 0xE0100 <= c <= 0xE01EF
    ]
    missed = [f"U+{ord(c):04X}" for c in hiding if shown(c) == c]
    assert missed == []
    tagged = "approve" + "".join(chr(0xE0000 + ord(c)) for c in " and DROP")
    assert shown(tagged).startswith("approve\\U000e0020\\U000e0061")
    assert shown("saf\u200be") == "saf\\u200be"


def test_text_that_shows_itself_is_left_as_it_is() -> None:
    for text in ("naïve café", "日本語のテキスト", "مرحبا", "heart ❤️ (U+FE0F)", "tab\tand\nline"):
        assert shown(text) == text
