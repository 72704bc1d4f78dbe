"""The drivers with no dependencies: ``log``, ``null`` and ``memory`` (for tests)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from .base import Labels, number

log = logging.getLogger("workmanager.metrics")


def _fmt(labels: Labels | None) -> str:
    if not labels:
        return ""
    return " {" + ", ".join(f"{k}={_shown(v)}" for k, v in labels.items()) + "}"


def _shown(value: object) -> str:
    """A label's value on one log line: clients choose some (a tenant, a failure's code),
    so a newline or an escape sequence in one is written escaped (``\n``), never as a
    line of its own or a terminal control."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class LogDriver:
    """Writes ``[Metric] COUNTER name = 1 {k=v}`` lines to the ``workmanager.metrics`` log."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        self.log.info("[Metric] COUNTER %s = %s%s", name, number(value), _fmt(labels))

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self.log.info("[Metric] GAUGE %s = %s%s", name, number(value), _fmt(labels))

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        self.log.info("[Metric] HISTOGRAM %s = %g%s", name, seconds, _fmt(labels))


class NullDriver:
    """Drops everything."""

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        pass

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        pass


class MemoryDriver:
    """Keeps every value in memory; tests and the demo's summary read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(
            list
        )

    @staticmethod
    def _key(name: str, labels: Labels | None) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted((labels or {}).items()))

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        with self._lock:
            self.counters[self._key(name, labels)] += value

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        with self._lock:
            self.gauges[self._key(name, labels)] = value

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        with self._lock:
            self.histograms[self._key(name, labels)].append(seconds)

    def total(self, name: str) -> float:
        """The sum of a counter over every label set (matching by name suffix)."""
        with self._lock:
            return sum(v for (n, _), v in self.counters.items() if n.endswith(name))
