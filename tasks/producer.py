"""The producer API: enqueue an order and get its id back at once.

A proposal is checked here, before it is sent, when this process knows the order types:
the ``registry`` argument when given, else the types of ``WORK_MANAGER_ORDER_TYPES``,
imported once per process on first use. A process that cannot import them (the variable
unset, or the modules not installed here) sends unchecked, and the worker decides: a
proposal it refuses is recorded as a ``failed`` order under the returned id."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from typing import Any

from celery import Celery

from workmanager.errors import WorkManagerError
from workmanager.jsonvalues import MAX_JSON_DEPTH_CEILING, json_value
from workmanager.registry import Registry
from workmanager.services.proposals import check_priority, check_proposal, order_id_for
from workmanager.services.tokens import checked_tenant
from workmanager.settings import Settings

from .tracing import traced_enqueue

CREATE = "workmanager.orders.create"
QUEUE = "workmanager"

log = logging.getLogger("workmanager.producer")
_lock = threading.Lock()
_loaded: tuple[Registry | None, int] | None = None


@traced_enqueue
def enqueue_order(
    type: str,
    payload: dict[str, Any],
    priority: int = 0,
    meta: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    *,
    app: Celery | None = None,
    registry: Registry | None = None,
    tenant_id: str | None = None,
) -> uuid.UUID:
    """Publish ``workmanager.orders.create``; the order id is chosen here, so the call
    returns without waiting. With a ``dedupe_key`` the id is derived from the key, so a
    repeated key returns the id of the one existing order and never creates a second.

    Raises :class:`UnknownOrderType`, :class:`ValidationFailed` (``details``: path,
    message, validator) or :class:`MalformedJSON` before sending anything when the order
    types are known here (see the module docstring). ``tenant_id``: the tenant the order
    belongs to (its items inherit it; without one, the payload's ``tenant_id`` key).
    A broker that refused or did not answer is :class:`Unavailable` (one line, the URL's
    password masked, a hint): nothing was sent, so the call can be made again."""
    tenant_id = checked_tenant(tenant_id)
    if app is None:
        from .app import app as default_app

        app = default_app
    for name, value in (
        ("type", type),
        ("dedupe_key", dedupe_key),
        ("payload", payload),
        ("meta", meta),
    ):
        # What Celery's JSON encoder cannot write (it recurses, it turns a datetime into
        # text, an integer of 5,000 digits raises), answered here even without the order
        # types (the worker applies WORK_MANAGER_MAX_JSON_DEPTH and the schemas itself).
        json_value(value, name, MAX_JSON_DEPTH_CEILING)
    check_priority(priority)
    known, max_depth = (registry, MAX_JSON_DEPTH_CEILING) if registry else producer_registry()
    if known is not None:
        check_proposal(
            known,
            type,
            payload,
            priority=priority,
            meta=meta,
            dedupe_key=dedupe_key,
            max_depth=max_depth,
        )
    order_id = order_id_for(dedupe_key)
    try:
        app.send_task(
            CREATE,
            kwargs={
                "type": type,
                "payload": payload,
                "priority": priority,
                "meta": meta,
                "dedupe_key": dedupe_key,
                "order_id": str(order_id),
                # Only when set, so a worker of an earlier release still takes the message.
                **({"tenant_id": tenant_id} if tenant_id else {}),
            },
            queue=control_queue(),
        )
    except Exception as exc:  # the broker refused or is not there: nothing was sent
        from kombu.exceptions import OperationalError

        from .broker import broker_unavailable, transport_errors

        if isinstance(exc, (OperationalError, *transport_errors())):
            raise broker_unavailable(str(app.conf.broker_url or ""), exc) from exc
        raise
    return order_id


def producer_registry() -> tuple[Registry | None, int]:
    """The order types this process can check proposals against (``None``: none, the
    worker decides) and the JSON depth limit, loaded from the environment once."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


@functools.cache
def control_queue() -> str:
    """``WORK_MANAGER_CONTROL_QUEUE``, where the control-plane worker listens. Read from
    the settings, not from the Celery app handed in: a producer's own bare app has
    Celery's default queue (``celery``), which no worker consumes."""
    try:
        return Settings.from_env().control_queue
    except WorkManagerError as exc:
        log.warning("enqueue_order sends to the default queue %r: %s", QUEUE, exc)
        return QUEUE


def _load() -> tuple[Registry | None, int]:
    try:
        settings = Settings.from_env()
        if not settings.order_types:
            return None, MAX_JSON_DEPTH_CEILING
        registry = Registry()
        registry.load_modules(settings.order_types)
    except WorkManagerError as exc:
        log.warning("enqueue_order sends proposals unchecked (the worker checks them): %s", exc)
        return None, MAX_JSON_DEPTH_CEILING
    return registry, settings.max_json_depth
