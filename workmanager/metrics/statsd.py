"""The StatsD driver (PyPI ``statsd``, UDP), with labels in the configured tag style."""

from __future__ import annotations

import socket
from typing import Any

from ..importing import import_extra
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
    """Sends counters, gauges and timers (histograms in ms) over UDP through the ``statsd``
    package's public API (``incr``, ``gauge``, ``timing``).

    DogStatsD tags (``|#k:v`` after the type) are outside what that package can send, so
    in that style a line with labels is written to the same host and port by this driver's
    own UDP socket, in the same format; nothing reaches into the package's internals.
    """

    def __init__(self, host: str, port: int, tag_style: str = "influxdb") -> None:
        statsd = import_extra(
            "statsd", "WORK_MANAGER_METRICS_DRIVER=statsd needs the statsd package", "statsd"
        )
        self.client: Any = statsd.StatsClient(host, port)
        self.style = tag_style
        self._address = (host, port)
        self._tags_socket: socket.socket | None = None

    def _tagged_line(self, name: str, value: str, labels: Labels | None) -> bool:
        """DogStatsD with labels: send ``name:value|#k:v,...`` ourselves; True if sent."""
        if self.style != "dogstatsd" or not labels:
            return False
        if self._tags_socket is None:
            family = socket.getaddrinfo(*self._address, type=socket.SOCK_DGRAM)[0][0]
            self._tags_socket = socket.socket(family, socket.SOCK_DGRAM)
        tags = ",".join(f"{k}:{v}" for k, v in labels.items())
        self._tags_socket.sendto(f"{name}:{value}|#{tags}".encode(), self._address)
        return True

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{value:g}|c", labels):
            self.client.incr(tagged(name, labels, self.style), _number(value))

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{value:g}|g", labels):
            self.client.gauge(tagged(name, labels, self.style), _number(value))

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{seconds * 1000:.6f}|ms", labels):
            self.client.timing(tagged(name, labels, self.style), seconds * 1000)


def _number(value: float) -> int | float:
    """``7.0`` as ``7`` (the line says ``7|g``, as StatsD servers expect for counts)."""
    return int(value) if float(value).is_integer() else value
