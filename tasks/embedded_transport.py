"""kombu's SQLAlchemy transport with a ``polling_interval`` of its own
(:mod:`tasks.transports` says why; kombu imports this module for ``sqla+`` URLs),
a queue's first declaration safe between processes, and redelivery.

Redelivery: kombu hides a message (``visible`` false) the moment a worker fetches it and
never shows it again, so a worker killed before acknowledging lost every message it held
(with ``acks_late``, the task it was running too). Here a fetched message's row is marked
as waiting for its acknowledgement (``version`` 0, ``timestamp`` the UTC time it was
taken); an acknowledgement or a rejection deletes the row (a consumer without
acknowledgements: at once); a graceful stop puts the unacknowledged messages back
(kombu's restore) and deletes their rows; and a row still waiting after
``visibility_timeout`` seconds (its worker died) is made visible again, by any polling
consumer, as Redis's transport does. The deletes of acknowledged rows are made by the
consuming thread in its next fetch (a poll, every ``polling_interval``): an
acknowledgement comes from a pool thread and the channel's session is not thread-safe. A
worker killed in between has its last acknowledged messages delivered again after the
timeout: the tasks are safe to run twice. A rejection that requeues (a pool child lost
mid-task, ``reject_on_worker_lost``) is made the same way: the consuming thread shows the
row again at its next fetch. kombu's own requeue inserted a copy from the pool's result
thread on the shared session, and the worker died ("This session is in 'prepared'
state").
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu.transport import sqlalchemy as sqla
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from workmanager.settings import Settings

#: Transport options that are the transport's own, not ``create_engine``'s.
OWN_OPTIONS = ("polling_interval", "visibility_timeout")
#: ``version`` of a row fetched here and waiting for its acknowledgement; kombu's own
#: fetch leaves 2 on a row it never deletes.
TAKEN = 0
#: ``version`` of a row shown again (its worker died, or a pool child lost it): its next
#: delivery says ``redelivered``, as RabbitMQ's and Redis's do (kombu inserts 1).
REDELIVERED = 3
#: How often a consumer looks for rows whose worker died (seconds, monotonic).
RESTORE_EVERY = 1.0
#: Rows kombu's own transport hid for good, deleted per look.
LEGACY_BATCH = 2_000


class Channel(sqla.Channel):  # type: ignore[misc]
    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        options = connection.client.transport_options
        default = Settings.broker_visibility_timeout_seconds  # a connection made without it
        self.visibility_timeout = float(options.get("visibility_timeout", default))
        self._rows: dict[str, int] = {}  # delivery tag -> the row it was fetched from
        self._done: deque[int] = deque()  # rows acknowledged, to delete at the next fetch
        self._requeued: deque[int] = deque()  # rows rejected to requeue, shown at the next
        self._restored_at = float("-inf")
        #: queues consumed without acknowledgements (Celery's ``rpc://`` results), and
        #: whether the ``basic_get`` under way is: their rows go as they are delivered
        self._no_ack: dict[str, str] = {}  # consumer tag -> queue
        self._getting_no_ack = False

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

    def _get(self, queue: str) -> Any:
        """The queue's next visible message, its row marked as taken; in the same
        transaction, the rows acknowledged since the last fetch are deleted and, at most
        every :data:`RESTORE_EVERY`, the rows whose worker died made visible again, in
        every queue: kombu polls a channel's queues in turn, and the first poll after each
        second fell on the same one, so a control worker's other queue was never looked at."""
        obj = self._get_or_create(queue)
        session = self.session
        if session.bind.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            self._housekeep()
            message = self.message_cls
            row = (
                session.query(message.id, message.payload, message.version)
                .with_for_update()
                .filter(message.queue_id == obj.id, message.visible.is_(True))
                .order_by(message.sent_at, message.id)
                .limit(1)
                .first()
            )
            if row is None:
                raise Empty()
            payload = loads(bytes_to_str(row.payload))
            if row.version == REDELIVERED or payload.get("redelivered"):  # kombu's restore
                payload["properties"].setdefault("delivery_info", {})["redelivered"] = True
            if self._getting_no_ack or queue in self._no_ack.values():
                session.execute(delete(message).where(message.id == row.id))  # acknowledged
                return payload
            session.execute(
                update(message)
                .where(message.id == row.id)
                .values(visible=False, version=TAKEN, sent_at=_now())
            )
            self._rows[payload["properties"]["delivery_tag"]] = row.id
            return payload
        finally:
            session.commit()

    def _housekeep(self) -> None:
        message, session = self.message_cls, self.session
        self._housekeep_rows(session)
        now = time.monotonic()
        if now - self._restored_at >= RESTORE_EVERY:
            self._restored_at = now
            # rows kombu's own fetch hid for good (delivered; an older worker of a rolling
            # upgrade still hides them), a batch a second: a million at once held SQLite's
            # lock for half a minute and every publish failed meanwhile
            hidden = select(message.id).where(message.visible.is_(False), message.version != TAKEN)
            session.execute(delete(message).where(message.id.in_(hidden.limit(LEGACY_BATCH))))
            lapsed = _now() - timedelta(seconds=self.visibility_timeout)
            session.execute(
                update(message)
                .where(
                    message.visible.is_(False),
                    message.version == TAKEN,
                    message.sent_at < lapsed,
                )
                .values(visible=True, version=REDELIVERED, sent_at=None)
            )

    def _forget(self, delivery_tag: str) -> None:
        row = self._rows.pop(delivery_tag, None)
        if row is not None:
            self._done.append(row)

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        """A consumer without acknowledgements never acks what it gets: the rows it is
        delivered go at once, or they came back after every timeout, for good."""
        if no_ack:
            self._no_ack[consumer_tag] = queue
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)  # type: ignore[no-untyped-call]

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._no_ack.pop(consumer_tag, None)
        return super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._getting_no_ack = no_ack
        try:
            return super().basic_get(queue, no_ack, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self._getting_no_ack = False

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)  # type: ignore[no-untyped-call]
        self._forget(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        row = self._rows.pop(delivery_tag, None) if requeue else None
        if row is not None:  # its row shows again at the consuming thread's next fetch
            self.qos.reject(delivery_tag, requeue=False)  # the QoS forgets it, restores nothing
            self._requeued.append(row)
            return
        super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        self._forget(delivery_tag)

    def _restore(self, message: Any) -> None:
        """kombu puts an unacknowledged message back (a graceful stop, a requeue) as a new
        row: the row it was fetched from goes."""
        super()._restore(message)  # type: ignore[no-untyped-call]
        self._forget(message.delivery_tag)

    def close(self) -> None:
        """kombu's close puts the unacknowledged messages back; then the rows acknowledged
        or put back go, in one transaction."""
        super().close()  # type: ignore[no-untyped-call]
        if (self._done or self._requeued) and self._session is not None:
            try:
                self._housekeep_rows(self._session)
                self._session.commit()
            except Exception:  # the broker's database gone: after the timeout, delivered again
                self._session.rollback()

    def _housekeep_rows(self, session: Any) -> None:
        """Delete the rows acknowledged or put back since the last time, and show again
        those rejected to be requeued."""
        message = self.message_cls
        done = [self._done.popleft() for _ in range(len(self._done))]
        if done:
            session.execute(delete(message).where(message.id.in_(done)))
        requeued = [self._requeued.popleft() for _ in range(len(self._requeued))]
        if requeued:
            shown = {"visible": True, "version": REDELIVERED, "sent_at": None}
            session.execute(update(message).where(message.id.in_(requeued)).values(**shown))


def _now() -> datetime:
    """The time a row was taken, naive (kombu's column has no zone) and in UTC, so that
    workers in other time zones agree on when it lapses."""
    return datetime.now(UTC).replace(tzinfo=None)


class Transport(sqla.Transport):  # type: ignore[misc]
    Channel = Channel
