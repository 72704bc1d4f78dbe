"""The producer API (SPEC §4.3): enqueue an order and get its id back at once."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from workmanager.services.planning import order_id_for

CREATE = "workmanager.orders.create"
QUEUE = "workmanager"


def enqueue_order(
    type: str,
    payload: dict[str, Any],
    priority: int = 0,
    meta: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    *,
    app: Celery | None = None,
) -> uuid.UUID:
    """Publish ``workmanager.orders.create``; the order id is chosen here, so the call
    returns without waiting. With a ``dedupe_key`` the id is derived from the key, so a
    repeated key returns the id of the one existing order and never creates a second."""
    if app is None:
        from .app import app as default_app

        app = default_app
    order_id = order_id_for(dedupe_key)
    app.send_task(
        CREATE,
        kwargs={
            "type": type,
            "payload": payload,
            "priority": priority,
            "meta": meta,
            "dedupe_key": dedupe_key,
            "order_id": str(order_id),
        },
        queue=QUEUE,
    )
    return order_id
