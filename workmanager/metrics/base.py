"""The MetricsDriver protocol and the guard that keeps a failing driver harmless."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("workmanager.metrics")

Labels = dict[str, str]


class MetricsDriver(Protocol):
    """Where metrics go. Names arrive already prefixed with the namespace."""

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        """Add ``value`` to a counter."""

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        """Set a gauge to ``value``."""

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        """Observe a duration in seconds (statsd sends a timer in ms)."""


class Metrics:
    """What services call. Prefixes names, stringifies labels, and never raises."""

    def __init__(
        self, driver: MetricsDriver, namespace: str = "work_manager", enabled: bool = True
    ) -> None:
        self.driver = driver
        self.namespace = namespace
        self.enabled = enabled

    def _name(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    @staticmethod
    def _labels(labels: dict[str, object]) -> Labels:
        return {k: str(v) for k, v in labels.items()}

    def increment(self, name: str, value: float = 1, **labels: object) -> None:
        self._call("increment", name, value, labels)

    def gauge(self, name: str, value: float, **labels: object) -> None:
        self._call("gauge", name, value, labels)

    def histogram(self, name: str, seconds: float, **labels: object) -> None:
        self._call("histogram", name, seconds, labels)

    def _call(self, method: str, name: str, value: float, labels: dict[str, object]) -> None:
        if not self.enabled:
            return
        try:
            getattr(self.driver, method)(self._name(name), value, self._labels(labels))
        except Exception:  # a metrics outage must never fail the operation reporting to it
            log.warning(
                "metrics driver %s failed on %s", type(self.driver).__name__, name, exc_info=True
            )
