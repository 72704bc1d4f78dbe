"""Text from callers as a person's screen shows it (a terminal table, a console page):
characters that act instead of showing are replaced by their escapes, visibly.

Control characters (C0 but tab and newline, DEL, C1) move a terminal's cursor or retitle
it; bidi controls (the embeddings, overrides and isolates, the marks) reorder what
follows, so ``account \u202e0001-9999`` read as ``account 9999-1000`` on a review
page; a lone surrogate (a broken emoji escape in a JSON feed) cannot be written out as
UTF-8 at all (a traceback where a table was). Format characters show nothing yet are
there: zero-width spaces, the word joiner, the byte-order mark, soft hyphens,
Unicode's tag characters and the variation selectors past the two emoji use (text hidden
in them reads ``approve`` where ``approve and DROP TABLE users`` is stored), and the line
and paragraph separators. Every character of Unicode's ``Cf``, ``Zl`` and ``Zp`` is
escaped (a test holds the list to the running Python's Unicode) but those of
:data:`WRITING`, which scripts and emoji are written with; so are runs of spaces other
than the plain one, and the letters that draw nothing. Two sequences of them are writing and shown
(:data:`_WRITTEN`): a CJK ideograph's variation selector and a subdivision's flag.
Agents, producers and reviewers write results, payloads, notes and reasons: every one of
those is shown through :func:`shown`.
"""

from __future__ import annotations

import re

#: Format characters that are part of writing, shown as they are: the zero-width
#: non-joiner and joiner (Persian, the Indic scripts, emoji sequences) and the prepended
#: marks that draw a glyph (Arabic number signs, the end of an ayah, Syriac, Kaithi).
WRITING = "\u200c\u200d\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"

_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufe00-\ufe0d\ufeff"
    "\ufff9-\ufffb\ud800-\udfff\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    "\U000e0100-\U000e01ef"
    # letters that draw nothing: the braille blank, the Hangul fillers
    "\u2800\u115f\u1160\u3164\uffa0]"
)
#: Sequences of the characters above that are writing, shown as they are: one ideographic
#: variation selector right after a CJK ideograph (a name's registered glyph, 葛󠄀), and a
#: subdivision flag (🏴, two to six tag letters or digits, the cancel tag: Scotland's).
_WRITTEN = (
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
    "[\ufe00-\ufe0d\U000e0100-\U000e01ef]"
    "|\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f"
)
_SHOWN_OR_HIDDEN = re.compile(f"({_WRITTEN})|{_HIDDEN.pattern}")
#: Spaces other than the plain one, two or more in a row: a run of them fills lines instead
#: of hanging where a box wraps, and 3,000 no-break spaces pushed "; curl … | sh" out of
#: sight after "ls -la /tmp" (one alone, French typography's, is left as it is).
_SPACE_RUN = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{2,}")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _escape_hidden(match: re.Match[str]) -> str:
    return match.group() if match.group(1) else _escape(match)


def shown(text: str) -> str:
    """``text`` with each control and bidi character as its escape (``\\x1b``,
    ``\\u202e``); anything else, non-Latin scripts and emoji (flags of subdivisions too)
    among them, as it is."""
    return _SPACE_RUN.sub(_escape, _SHOWN_OR_HIDDEN.sub(_escape_hidden, text))
