"""Text from callers as a person's screen shows it (a terminal table, a console page):
characters that act instead of showing are replaced by their escapes, visibly.

Control characters (C0 but tab and newline, DEL, C1) move a terminal's cursor or retitle
it; bidi controls (the embeddings, overrides and isolates, the marks) reorder what
follows, so ``account \u202e0001-9999`` read as ``account 9999-1000`` on a review
page; a lone surrogate (a broken emoji escape in a JSON feed) cannot be written out as
UTF-8 at all (a traceback where a table was).
Agents, producers and reviewers write results, payloads, notes and reasons: every one of
those is shown through :func:`shown`.
"""

from __future__ import annotations

import re

_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def shown(text: str) -> str:
    """``text`` with each control and bidi character as its escape (``\\x1b``,
    ``\\u202e``); anything else, non-Latin scripts and emoji among them, as it is."""
    return _HIDDEN.sub(_escape, text)
