"""The embedded default's broker: kombu's SQLAlchemy transport, polled often.

kombu's virtual transports sleep ``polling_interval`` (1 s by default) whenever a poll
finds every queue empty, so each hop of an order (create, the agent's item, the approval
check, the apply) waited up to a second: the demo's 30 orders took 45 s. The interval is
a transport option, but the SQLAlchemy transport hands its options to ``create_engine``,
which refuses unknown ones; this channel keeps it out of the engine's options. Installed
under kombu's ``sqla`` alias when the ``tasks`` app is imported, so URLs stay
``sqla+sqlite:///…``.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqla

#: Seconds between polls of empty queues. An empty poll is one indexed SELECT per queue.
POLLING_SECONDS = 0.05
#: Transport options that are the transport's own, not ``create_engine``'s.
OWN_OPTIONS = ("polling_interval",)


class Channel(sqla.Channel):  # type: ignore[misc]
    def _engine_from_config(self) -> Any:
        client = self.connection.client
        saved = client.transport_options
        client.transport_options = {k: v for k, v in saved.items() if k not in OWN_OPTIONS}
        try:
            return super()._engine_from_config()  # type: ignore[no-untyped-call]
        finally:
            client.transport_options = saved


class Transport(sqla.Transport):  # type: ignore[misc]
    Channel = Channel


def install() -> None:
    """Make ``sqla+…`` broker URLs use :class:`Transport` in this process."""
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
