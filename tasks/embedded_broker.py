"""The embedded default's broker: kombu's SQLAlchemy transport, polled often.

kombu's virtual transports sleep ``polling_interval`` (1 s by default) whenever a poll
finds every queue empty, so each hop of an order (create, the agent's item, the approval
check, the apply) waited up to a second: the demo's 30 orders took 45 s. The interval is
a transport option, but the SQLAlchemy transport hands its options to ``create_engine``,
which refuses unknown ones; the channel in :mod:`tasks.embedded_transport` keeps it out
of the engine's options. Installed under kombu's ``sqla`` alias when the ``tasks`` app is
imported, so URLs stay ``sqla+sqlite:///…``; kombu imports that module (and its own
SQLAlchemy transport, with its table models, ~3 MiB) only when a ``sqla+`` broker is
connected, so a worker on Redis or RabbitMQ never loads them.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

#: Where the transport is: kombu resolves an alias when a connection is made.
TRANSPORT = "tasks.embedded_transport:Transport"


def install() -> None:
    """Make ``sqla+…`` broker URLs use :data:`TRANSPORT` in this process."""
    TRANSPORT_ALIASES["sqla"] = TRANSPORT
