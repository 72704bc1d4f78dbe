"""The StatsD driver (PyPI ``statsd``, UDP), with labels in the configured tag style."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from typing import Any

from ..importing import import_extra
from .base import Labels, number

log = logging.getLogger("workmanager.metrics")

#: How often a StatsD host that did not resolve is looked up again.
RESOLVE_EVERY_SECONDS = 30.0


#: What a label may hold on the wire: anything else (``:``, ``|``, ``,``, ``=``, ``#``,
#: ``;``, spaces, a newline that starts a line of one's own) becomes ``_``. Agents and
#: producers choose some values (an error code, a tenant): a ``\n`` in one sent them a
#: counter of their choosing, a ``:`` made the line one no server could read.
UNSAFE = re.compile(r"[^A-Za-z0-9_.@/-]")
#: The longest label value sent, in characters.
MAX_LABEL = 100


def clean(labels: Labels) -> Labels:
    """``labels`` with every key and value safe in each style's line (:data:`UNSAFE`)."""
    return {UNSAFE.sub("_", k): UNSAFE.sub("_", v[:MAX_LABEL]) for k, v in labels.items()}


def tagged(name: str, labels: Labels | None, style: str) -> str:
    """``name`` with labels in ``influxdb`` (name,k=v), ``graphite`` (name;k=v) or no style.

    DogStatsD tags travel after the value (``|#k:v``), so for that style the name is bare
    and the driver adds the tags.
    """
    if not labels or style in ("none", "dogstatsd"):
        return name
    sep = "," if style == "influxdb" else ";"
    return name + sep + sep.join(f"{k}={v}" for k, v in clean(labels).items())


class StatsdDriver:
    """Sends counters, gauges and timers (histograms in ms) over UDP through the ``statsd``
    package's public API (``incr``, ``gauge``, ``timing``).

    DogStatsD tags (``|#k:v`` after the type) are outside what that package can send, so
    in that style a line with labels is written to the same host and port by this driver's
    own UDP socket, in the same format; nothing reaches into the package's internals.
    """

    def __init__(self, host: str, port: int, tag_style: str = "influxdb") -> None:
        self._statsd = import_extra(
            "statsd", "WORK_MANAGER_METRICS_DRIVER=statsd needs the statsd package", "statsd"
        )
        self.style = tag_style
        self._address = (host, port)
        self._tags_socket: socket.socket | None = None
        self._client: Any = None
        self._next_lookup = 0.0
        self._warned = False
        self._connect()

    @property
    def client(self) -> Any:
        return self._connect()

    @client.setter
    def client(self, client: Any) -> None:
        self._client = client

    def _connect(self) -> Any:
        """The ``statsd`` client, which looks its host up when made. A host that does not
        resolve (the exporter not started yet, a typo) never stops the process or slows
        an operation: one warning, its metrics dropped, the lookup tried again every
        :data:`RESOLVE_EVERY_SECONDS` on a thread of its own (a slow resolver must not
        hold up the checkout or request that reported a metric)."""
        if self._client is None and time.monotonic() >= self._next_lookup:
            self._next_lookup = time.monotonic() + RESOLVE_EVERY_SECONDS
            if self._warned:
                threading.Thread(target=self._lookup, name="statsd-lookup", daemon=True).start()
            else:
                self._lookup()  # at start-up: the first lookup says at once whether it works
        return self._client

    def _lookup(self) -> None:
        try:
            # an IPv6 address or an IPv6-only name: the client's socket must be AF_INET6
            family = socket.getaddrinfo(*self._address, type=socket.SOCK_DGRAM)[0][0]
            ipv6 = family == socket.AF_INET6
            self._client = self._statsd.StatsClient(*self._address, ipv6=ipv6)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "StatsD host %s:%s cannot be reached (%s): metrics are dropped until it"
                    " resolves (looked up again every %.0f s; WORK_MANAGER_STATSD_HOST)",
                    *self._address,
                    exc,
                    RESOLVE_EVERY_SECONDS,
                )

    def _tagged_line(self, name: str, value: str, labels: Labels | None) -> bool:
        """DogStatsD with labels: send ``name:value|#k:v,...`` ourselves; True if sent."""
        if self.style != "dogstatsd" or not labels:
            return False
        if self.client is None:  # the host did not resolve: dropped, as the others
            return True
        if self._tags_socket is None:
            family = socket.getaddrinfo(*self._address, type=socket.SOCK_DGRAM)[0][0]
            self._tags_socket = socket.socket(family, socket.SOCK_DGRAM)
        tags = ",".join(f"{k}:{v}" for k, v in clean(labels).items())
        self._tags_socket.sendto(f"{name}:{value}|#{tags}".encode(), self._address)
        return True

    def close(self) -> None:
        """Close both UDP sockets (the package's client and the tagged lines' own)."""
        if self._client is not None:
            self._client.close()
            self._client, self._next_lookup = None, 0.0  # made again by the next metric
        if self._tags_socket is not None:
            self._tags_socket.close()
            self._tags_socket = None

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{number(value)}|c", labels) and self.client:
            self.client.incr(tagged(name, labels, self.style), number(value))

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{number(value)}|g", labels) and self.client:
            self.client.gauge(tagged(name, labels, self.style), number(value))

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        if not self._tagged_line(name, f"{seconds * 1000:.6f}|ms", labels) and self.client:
            self.client.timing(tagged(name, labels, self.style), seconds * 1000)
