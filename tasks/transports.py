"""The kombu transports this project's broker URLs get: kombu's own, subclassed.

- ``sqla+…`` (the embedded default) — :mod:`tasks.embedded_transport`: polled every
  50 ms rather than every second (each hop of an order waited up to a second: the demo's
  30 orders took 45 s; the interval is a transport option, but kombu's SQLAlchemy
  transport hands its options to ``create_engine``, which refuses unknown ones), a
  queue's first declaration safe between processes, and redelivery after the visibility
  timeout.
- ``redis://``, ``rediss://`` — :mod:`tasks.redis_transport`: a channel that closes
  cleanly after its connection did (a Redis restart made workers exit).

Installed under kombu's aliases when the ``tasks`` app is imported, so URLs keep their
schemes. kombu imports a transport's module only when a connection of that scheme is
made: a worker on RabbitMQ loads neither, one on Redis never loads the SQLAlchemy
transport and its table models (~3 MiB).
"""

from __future__ import annotations

import kombu.transport
from kombu.transport import TRANSPORT_ALIASES

#: Where each scheme's transport is: kombu resolves an alias when a connection is made.
TRANSPORTS = {
    "sqla": "tasks.embedded_transport:Transport",
    "redis": "tasks.redis_transport:Transport",
    "rediss": "tasks.redis_transport:Transport",
}


def install() -> None:
    """Make this process's broker URLs use :data:`TRANSPORTS`, also when a connection was
    made before (kombu keeps the class it resolved for a scheme: a ``/readyz`` probe of
    the broker before the first order kept kombu's own SQLAlchemy transport, and every
    send then failed on its options)."""
    TRANSPORT_ALIASES.update(TRANSPORTS)
    resolved = getattr(kombu.transport, "_transport_cache", {})
    for scheme in TRANSPORTS:
        resolved.pop(scheme, None)
