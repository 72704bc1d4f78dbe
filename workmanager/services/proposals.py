"""What a proposal must be, checked before anything is stored, and the record of one the
worker refused. ``OrderService.propose`` and the producer API (``tasks.enqueue_order``,
when its process has the order types loaded) run the same :func:`check_proposal`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from ..checks import guarded
from ..db.models import Item, Order
from ..errors import WorkManagerError
from ..jsonvalues import json_value
from ..order_types import OrderType
from ..registry import Registry
from ..schema import validate
from ..states import OrderState
from ..types import JSON, Actor
from .inputs import require
from .transitions import record_event

#: The event a refused proposal's record carries.
REFUSED_EVENT = "proposal_refused"


def check_proposal(
    registry: Registry,
    type: str,
    payload: Any,
    *,
    priority: Any = 0,
    meta: Any = None,
    dedupe_key: Any = None,
    max_depth: int,
) -> OrderType:
    """The order type of a valid proposal; else :class:`UnknownOrderType`,
    :class:`ValidationFailed` (with ``details``) or :class:`MalformedJSON`."""
    order_type = registry.get(type)
    require(isinstance(payload, dict), "payload", "must be an object")
    require(meta is None or isinstance(meta, dict), "meta", "must be an object")
    require(
        isinstance(priority, int) and not isinstance(priority, bool),
        "priority",
        "must be an integer",
    )
    require(
        dedupe_key is None or (isinstance(dedupe_key, str) and 0 < len(dedupe_key) <= 191),
        "dedupe_key",
        "must be a string of 1 to 191 characters",
    )
    json_value({"payload": payload, "meta": meta, "dedupe_key": dedupe_key}, "$", max_depth)
    validate(guarded(order_type.schema, "payload"), payload, "payload")
    return order_type


def is_refused(order: dict[str, Any]) -> bool:
    """Whether ``order`` (an order dict) is the record of a refused proposal."""
    error = order.get("last_error") or {}
    return order.get("state") == OrderState.FAILED.value and bool(error.get("refused"))


def refused_order(
    order_id: uuid.UUID,
    type: str,
    payload: Any,
    priority: Any,
    meta: Any,
    actor: Actor,
    error: WorkManagerError,
    max_depth: int,
) -> Order:
    """The ``failed`` order that records a refused proposal under the id its producer got.

    It does not hold the dedupe key (the column stays empty): a corrected proposal under
    the same key replaces it (:func:`drop_refused`). Values that cannot be stored are
    left out; the error says what was wrong with them."""
    return Order(
        id=order_id,
        type=str(type)[:191],
        state=OrderState.FAILED.value,
        priority=priority if _storable_int(priority) else 0,
        payload=payload if _storable(payload, max_depth) else {},
        meta=meta if _storable(meta, max_depth) else {},
        requested_by_type=actor.type,
        requested_by_id=actor.id,
        last_error={**error.to_dict(), "refused": True},
    )


def insert_refused(s: Session, order: Order, actor: Actor) -> None:
    s.add(order)
    s.flush()
    error = dict(order.last_error or {})
    record_event(
        s,
        order.id,
        REFUSED_EVENT,
        actor,
        payload={"code": error.get("code"), "details": error.get("details")},
        message=error.get("message"),
    )


def drop_refused(s: Session, order_id: uuid.UUID) -> bool:
    """Delete the record of a refused proposal (a failed order with no items, marked
    refused) so a corrected proposal can take its id; False when it is not one."""
    order = s.get(Order, order_id, with_for_update=True)
    if order is None or not is_refused({"state": order.state, "last_error": order.last_error}):
        return False
    if s.scalar(select(exists().where(Item.order_id == order_id))):
        return False
    s.execute(delete(Order).where(Order.id == order_id))
    return True


def _storable(value: JSON, max_depth: int) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        json_value(value, "$", max_depth)
    except WorkManagerError:
        return False
    return True


def _storable_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
