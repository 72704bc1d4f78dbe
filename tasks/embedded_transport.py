"""kombu's SQLAlchemy transport with a ``polling_interval`` of its own
(:mod:`tasks.embedded_broker` says why; kombu imports this module for ``sqla+`` URLs),
and a queue's first declaration safe between processes."""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as sqla
from sqlalchemy.exc import IntegrityError

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

    def _get_or_create(self, queue: str) -> Any:
        """kombu looks for the queue's row, then inserts it, under a lock of its process
        only: when another process (the control worker publishing an item's message, the
        agent declaring its queue) inserts it in between, the insert's IntegrityError
        escaped and left the channel's session needing a rollback, so that publish and
        every later one on the channel failed ("could not send …", seen in the demo,
        which then waited out its timeout). The row exists now: roll back, read it."""
        try:
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """The same race by kombu's other path: when the queue's insert waited out SQLite's
        lock, ``_get_or_create`` rolled back and handed ``_put`` an unsaved queue, which
        the message's insert adds again, beside the other process's row by then. Roll
        back, and put once more (the row is read this time)."""
        try:
            super()._put(queue, payload, **kwargs)  # type: ignore[no-untyped-call]
        except IntegrityError:
            self.session.rollback()
            super()._put(queue, payload, **kwargs)  # type: ignore[no-untyped-call]


class Transport(sqla.Transport):  # type: ignore[misc]
    Channel = Channel
