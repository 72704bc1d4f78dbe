"""The dispatcher that turns service announcements into Celery messages (SPEC §8.2)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from celery import Celery

log = logging.getLogger("workmanager.tasks")

CHECK_AUTO_APPROVAL = "workmanager.orders.check_auto_approval"
APPLY = "workmanager.orders.apply"
AGENT_TASK = "workmanager.agents.{type}"
AGENT_QUEUE = "agents.{type}"


class CeleryDispatcher:
    """Sends by task name, so the control plane needs no agent code and vice versa.

    A broker hiccup is logged, never raised: the state change already committed, and the
    sweep / maintenance recover what a lost message would have done.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _send(self, name: str, queue: str | None = None, **kwargs: object) -> None:
        try:
            self.app.send_task(name, kwargs=kwargs, queue=queue)
        except Exception:
            log.exception("could not send %s %s", name, kwargs)

    def order_submitted(self, order_id: uuid.UUID) -> None:
        self._send(CHECK_AUTO_APPROVAL, queue="workmanager", order_id=str(order_id))

    def order_approved(self, order_id: uuid.UUID) -> None:
        self._send(APPLY, queue="workmanager.apply", order_id=str(order_id))

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        for item_id in item_ids:
            self._send(
                AGENT_TASK.format(type=order_type),
                queue=AGENT_QUEUE.format(type=order_type),
                item_id=str(item_id),
            )
