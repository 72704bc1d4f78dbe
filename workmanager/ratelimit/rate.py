"""A rate as the settings write it: ``<count>/<s|m|h>`` (e.g. ``20/s``, ``600/m``)."""

from __future__ import annotations

from dataclasses import dataclass

UNITS = {"s": 1, "m": 60, "h": 3600}
#: What a rate looks like, for error messages.
FORM = "<count>/<s|m|h> with count from 1 to 2147483647 (e.g. 20/s, 600/m, 10000/h)"
#: The largest count (a count of 400 digits was taken, then every checkout was a 500:
#: OverflowError, int too large to convert to float).
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True)
class Rate:
    """``count`` tokens every ``period`` seconds."""

    count: int
    period: int

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        """As a setting writes it; a period no unit names (a ``Rate`` made in Python) as
        its seconds, ``5/10s`` (it raised ``StopIteration``)."""
        unit = next((u for u, seconds in UNITS.items() if seconds == self.period), None)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period}s"


def parse_rate(text: str) -> Rate:
    """``"20/s"`` → ``Rate(20, 1)``; anything else raises :class:`ValueError`."""
    count, slash, unit = text.strip().partition("/")
    unit = unit.strip().lower()
    digits = count.strip()
    if not slash or unit not in UNITS or not (digits.isascii() and digits.isdigit()):
        raise ValueError(FORM)
    if len(digits) > 10 or not 1 <= int(digits) <= MAX_COUNT:
        raise ValueError(FORM)
    return Rate(int(count), UNITS[unit])
