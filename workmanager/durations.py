"""Durations written the way operators type them: ``90d``, ``12h``, ``30m``, ``45s``, ``2w``.

The one parser every surface uses (CLI ``--older-than``, maintenance thresholds in scripts).
"""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import ValidationFailed

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
#: The longest duration taken: ten years. Longer reaches before any record this product
#: keeps (and past what a date can hold: "now minus it" would overflow).
MAX_DURATION = timedelta(days=3650)
MAX_SECONDS = int(MAX_DURATION.total_seconds())
#: The longest an approve may wait for its apply to settle (HTTP ``?wait=``, MCP ``wait``,
#: ``WorkClient.approve(wait=…)``).
MAX_WAIT_SECONDS = 60.0


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """``"90d"`` → ``timedelta(days=90)``; a positive number and one unit of s/m/h/d/w, at
    most :data:`MAX_DURATION`.

    Raises :class:`ValidationFailed` (naming ``field``) for anything else, zero included.
    """
    match = _DURATION.match(text or "")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if seconds <= 0:
        message = f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w"
        raise ValidationFailed.at(field, message, "format", f"{field}: {message}")
    if seconds > MAX_SECONDS:  # inf included (a number too long for a float)
        message = f"{text!r} is longer than {MAX_DURATION.days}d (ten years), the longest taken"
        raise ValidationFailed.at(field, message, "maximum", f"{field}: {message}")
    return timedelta(seconds=seconds)
