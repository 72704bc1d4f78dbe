"""The StatsD driver (PyPI ``statsd``, UDP), with labels in the configured tag style."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import Labels


def tagged(name: str, labels: Labels | None, style: str) -> str:
    """``name`` with labels in ``influxdb`` (name,k=v), ``graphite`` (name;k=v) or no style.

    DogStatsD tags travel after the value (``|#k:v``), so for that style the name is bare
    and :func:`dogstatsd_suffix` supplies the tags.
    """
    if not labels or style in ("none", "dogstatsd"):
        return name
    clean = {
        k: str(v).replace(",", "_").replace(" ", "_").replace(";", "_") for k, v in labels.items()
    }
    sep = "," if style == "influxdb" else ";"
    return name + sep + sep.join(f"{k}={v}" for k, v in clean.items())


class StatsdDriver:
    """Sends counters, gauges and timers (histograms in ms) over UDP."""

    def __init__(self, host: str, port: int, tag_style: str = "influxdb") -> None:
        try:
            import statsd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "WORK_MANAGER_METRICS_DRIVER=statsd needs the statsd package: "
                "pip install 'workmanager[statsd]'"
            ) from exc
        self.client: Any = statsd.StatsClient(host, port)
        self.style = tag_style

    def _send(self, name: str, value: str, labels: Labels | None) -> None:
        stat = tagged(name, labels, self.style)
        data = f"{stat}:{value}"
        if self.style == "dogstatsd" and labels:
            data += "|#" + ",".join(f"{k}:{v}" for k, v in labels.items())
        self.client._send(data)

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        self._send(name, f"{value:g}|c", labels)

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._send(name, f"{value:g}|g", labels)

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        self._send(name, f"{seconds * 1000:.3f}|ms", labels)
