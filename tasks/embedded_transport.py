"""kombu's SQLAlchemy transport with a ``polling_interval`` of its own
(:mod:`tasks.embedded_broker` says why; kombu imports this module for ``sqla+`` URLs)."""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as sqla

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
