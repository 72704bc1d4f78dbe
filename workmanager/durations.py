"""Durations written the way operators type them: ``90d``, ``12h``, ``30m``, ``45s``, ``2w``.

The one parser every surface uses (CLI ``--older-than``, maintenance thresholds in scripts).
"""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import ValidationFailed

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """``"90d"`` → ``timedelta(days=90)``; a positive number and one unit of s/m/h/d/w.

    Raises :class:`ValidationFailed` (naming ``field``) for anything else, zero included.
    """
    match = _DURATION.match(text or "")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if seconds <= 0:
        raise ValidationFailed.at(
            field,
            f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w",
            "format",
            f"{field}: {text!r} is not a duration like 90d, 12h, 30m, 45s or 2w",
        )
    return timedelta(seconds=seconds)
