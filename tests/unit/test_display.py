"""What a person's screen shows of text callers wrote (``workmanager/display.py``): every
character that acts or hides instead of showing is escaped, visibly; the rest as it is."""

from __future__ import annotations

import re
import sys
import unicodedata

from workmanager.display import WRITING, shown


def test_every_format_and_separator_character_is_escaped() -> None:
    """A console pass: zero-width characters and Unicode's tag characters passed through,
    so a result read ``approve`` on the review page while it held ``approve and DROP TABLE
    users`` (U+E0020…). Every ``Cf``, ``Zl`` and ``Zp`` character of the running Python's
    Unicode is escaped but those scripts are written with (``WRITING``), and the variation
    selectors that can carry hidden bytes."""
    writing = re.compile(f"[{WRITING}]")
    hiding = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if (unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp") and not writing.match(chr(c)))
        or 0xFE00 <= c <= 0xFE0D
        or 0xE0100 <= c <= 0xE01EF
    ]
    missed = [f"U+{ord(c):04X}" for c in hiding if shown(c) == c]
    assert missed == []
    tagged = "approve" + "".join(chr(0xE0000 + ord(c)) for c in " and DROP")
    assert shown(tagged).startswith("approve\\U000e0020\\U000e0061")
    assert shown("saf\u200be") == "saf\\u200be"


def test_text_that_shows_itself_is_left_as_it_is() -> None:
    for text in (
        "naïve café",
        "日本語のテキスト",
        "مرحبا",
        "heart ❤️ (U+FE0F)",
        "tab\tand\nline",
        "می\u200cخواهم",  # noqa: RUF001  (Persian, its zero-width non-joiner)
        "family 👨\u200d👩\u200d👧",  # an emoji sequence's joiners
        "\u0600١٢",  # noqa: RUF001  (an Arabic number sign, drawn)
        "prix\u00a0: 10\u00a0€",  # French's single no-break spaces
    ):
        assert shown(text) == text, text


def test_a_run_of_unusual_spaces_or_blank_letters_is_escaped() -> None:
    """A review pass: 3,000 no-break spaces (or em spaces, or braille blanks) filled a
    box's lines and pushed "; curl … | sh" out of sight after "ls -la /tmp"."""
    assert shown("a\u00a0\u00a0b") == "a\\xa0\\xa0b"
    assert shown("a\u2003\u2003b") == "a\\u2003\\u2003b"
    assert shown("a\u2800b") == "a\\u2800b"


def test_a_cjk_variation_and_a_subdivision_flag_are_writing() -> None:
    """A review pass: a Japanese name's registered glyph (an ideograph and its variation
    selector) and Scotland's flag (🏴 and tag letters) came out as escapes. Those two
    sequences are shown; the same characters anywhere else are still escaped."""
    ivs = "葛\U000e0100城"
    flag = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"
    assert (shown(ivs), shown(flag)) == (ivs, flag)
    assert shown("a\U000e0100") == "a\\U000e0100"  # not after an ideograph
    assert shown("葛\U000e0100\U000e0100") == "葛\U000e0100\\U000e0100"  # one selector
    hidden = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "approved") + "\U000e007f"
    assert shown(hidden).startswith("\U0001f3f4\\U000e0061")  # eight tags: not a flag
