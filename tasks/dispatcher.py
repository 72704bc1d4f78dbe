"""The dispatcher that turns service announcements into Celery messages (SPEC §8.2)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from celery import Celery, Signature

from workmanager.settings import Settings

log = logging.getLogger("workmanager.tasks")

CHECK_AUTO_APPROVAL = "workmanager.orders.check_auto_approval"
APPLY = "workmanager.orders.apply"
AGENT_TASK = "workmanager.agents.{type}"
#: One more try on a new connection (a broker restarted since the last send), not Celery's
#: three: each waits out the broker's socket timeout when the broker is frozen, and the
#: caller (an HTTP request, a task) waits for all of them.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class CeleryDispatcher:
    """Sends by task name, so the control plane needs no agent code and vice versa.

    A broker hiccup is logged, never raised: the state change already committed, and the
    sweep / maintenance recover what a lost message would have done.
    """

    def __init__(self, app: Celery, settings: Settings | None = None) -> None:
        self.app = app
        #: queue names (``WORK_MANAGER_CONTROL_QUEUE``, ``_APPLY_QUEUE``,
        #: ``_AGENT_QUEUE_PREFIX``); the defaults when no settings are given
        self.settings = settings or Settings()

    def _send(self, name: str, queue: str | None = None, **kwargs: object) -> bool:
        """Send one message; ``False`` after one logged line when the broker did not take
        it (the operation that announced stands: maintenance sends it again later)."""
        try:
            self.app.send_task(name, kwargs=kwargs, queue=queue, retry_policy=RETRY_POLICY)
        except Exception as exc:
            _not_sent(f"{name} {kwargs}", exc)
            return False
        return True

    def approval_chain(self, order_id: uuid.UUID) -> Signature:
        """``check_auto_approval | apply`` for one order (SPEC §8.2): Flower shows apply as
        the check's child; apply gets the check's result and does nothing unless approved."""
        kwargs = {"order_id": str(order_id)}
        check = self.app.signature(
            CHECK_AUTO_APPROVAL, kwargs=kwargs, queue=self.settings.control_queue
        )
        then = self.app.signature(APPLY, kwargs=kwargs, queue=self.settings.apply_queue)
        return check | then

    def order_submitted(self, order_id: uuid.UUID) -> bool:
        try:
            self.approval_chain(order_id).apply_async(retry_policy=RETRY_POLICY)
        except Exception as exc:
            _not_sent(f"{CHECK_AUTO_APPROVAL} for {order_id}", exc)
            return False
        return True

    def order_approved(self, order_id: uuid.UUID) -> bool:
        return self._send(APPLY, queue=self.settings.apply_queue, order_id=str(order_id))

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        """Announce the items on their type's agent queue, when the type's items are
        announced (``WORK_MANAGER_ANNOUNCED_TYPES``): a message no consumer reads stays in
        the broker for good."""
        if not self.settings.announces(order_type):
            return
        for sent, item_id in enumerate(item_ids):
            if not self._send(
                AGENT_TASK.format(type=order_type),
                queue=self.settings.agent_queue(order_type),
                item_id=str(item_id),
            ):  # the broker is down: the rest would fail the same way, one by one
                if len(item_ids) > sent + 1:
                    log.error(
                        "%d more announcements of %s not sent", len(item_ids) - sent - 1, order_type
                    )
                return

    def waiting(self, order_type: str) -> int | None:
        """The messages waiting on the type's agent queue, as the broker counts them (a
        passive declare: 0 for a queue it does not have); ``None`` when it does not say."""
        if not self.settings.announces(order_type):
            return None
        from kombu.exceptions import ChannelError

        try:
            with self.app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
                declared = conn.default_channel.queue_declare(
                    queue=self.settings.agent_queue(order_type), passive=True
                )
            return int(declared.message_count)
        except ChannelError:  # amqp's NotFound, a virtual transport's own: no such queue
            return 0
        except Exception as exc:  # the broker down: re-announce as before (its send logs)
            log.debug("could not count %s's waiting messages: %s", order_type, exc)
            return None


def _not_sent(what: str, exc: Exception) -> None:
    """One line, no traceback: the broker's error is an outage, not a bug of ours."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    log.error(
        "could not send %s (%s: %s); maintenance sends it again later",
        what,
        type(exc).__name__,
        first,
    )
