"""The producer API (SPEC §4.3): enqueue an order and get its id back at once."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from workmanager.jsonvalues import MAX_JSON_DEPTH_CEILING, deeper_than, too_deep
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
    for name, value in (("payload", payload), ("meta", meta)):
        # Celery's JSON encoder recurses: answer a value it cannot encode here, not with a
        # RecursionError (the worker applies WORK_MANAGER_MAX_JSON_DEPTH itself).
        if deeper_than(value, MAX_JSON_DEPTH_CEILING):
            raise too_deep(MAX_JSON_DEPTH_CEILING, name)
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
