"""A rate as the settings write it: ``<count>/<s|m|h>`` (e.g. ``20/s``, ``600/m``)."""

from __future__ import annotations

from dataclasses import dataclass

UNITS = {"s": 1, "m": 60, "h": 3600}
#: What a rate looks like, for error messages.
FORM = "<count>/<s|m|h> with count >= 1 (e.g. 20/s, 600/m, 10000/h)"


@dataclass(frozen=True)
class Rate:
    """``count`` tokens every ``period`` seconds."""

    count: int
    period: int

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = next(u for u, seconds in UNITS.items() if seconds == self.period)
        return f"{self.count}/{unit}"


def parse_rate(text: str) -> Rate:
    """``"20/s"`` → ``Rate(20, 1)``; anything else raises :class:`ValueError`."""
    count, slash, unit = text.strip().partition("/")
    unit = unit.strip().lower()
    if not slash or unit not in UNITS or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(FORM)
    return Rate(int(count), UNITS[unit])
