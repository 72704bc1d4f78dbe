"""Order-level consequences of item changes, shared by the agent API and the sweep.

Locking discipline (PostgreSQL): agent paths lock the item row first and the order row
second; admin paths (approve, reject, retry, apply) lock the order and then touch only
items in states agents do not hold. So no two paths wait on each other in opposite order.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Item, Order
from ..errors import NotFound
from ..settings import Settings
from ..states import HELD_ITEM_STATES, SUBMITTED_ITEM_STATES, ItemState, OrderState
from ..types import Actor
from .transitions import clear_lease, move_item, move_order


def lock_order(session: Session, order_id: uuid.UUID) -> Order:
    order = session.get(Order, order_id, with_for_update=True, populate_existing=True)
    if order is None:
        raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
    return order


def lock_item(session: Session, item_id: uuid.UUID) -> Item:
    item = session.get(Item, item_id, with_for_update=True, populate_existing=True)
    if item is None:
        raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
    return item


def item_states(session: Session, order_id: uuid.UUID) -> list[str]:
    return list(session.scalars(select(Item.state).where(Item.order_id == order_id)))


def maybe_submit_order(session: Session, order: Order, actor: Actor, now: datetime) -> bool:
    """Move an in-progress order to ``submitted`` once every item is submitted."""
    if order.state != OrderState.IN_PROGRESS:
        return False
    states = item_states(session, order.id)
    if not states or any(s not in SUBMITTED_ITEM_STATES for s in states):
        return False
    move_order(session, order, OrderState.SUBMITTED, actor, now=now)
    order.submitted_at = now
    return True


def maybe_requeue_order(session: Session, order: Order, actor: Actor, now: datetime) -> None:
    """An in-progress order with no held item goes back to ``queued``."""
    if order.state != OrderState.IN_PROGRESS:
        return
    if not any(s in HELD_ITEM_STATES for s in item_states(session, order.id)):
        move_order(session, order, OrderState.QUEUED, actor, event="requeued", now=now)


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before a reclaimed item is leasable again: ``base·2^(attempt-1) + U(0, jitter)``."""
    base = settings.retry_backoff_seconds * 2.0 ** max(attempt - 1, 0)
    return float(base + random.uniform(0, settings.retry_jitter_seconds))


def requeue_or_fail(
    session: Session,
    settings: Settings,
    item: Item,
    actor: Actor,
    now: datetime,
    *,
    event: str,
    error: dict[str, Any] | None = None,
    retryable: bool = True,
) -> bool:
    """End a held lease: requeue the item with backoff, or fail it (and its order).

    Returns True when requeued. The item's attempts were counted at grant time; when they
    are spent (or ``retryable`` is false) the item fails.
    """
    clear_lease(item)
    payload: dict[str, Any] = {"attempts": item.attempts, "max_attempts": item.max_attempts}
    order = lock_order(session, item.order_id)
    if retryable and item.attempts < item.max_attempts:
        item.available_at = now + timedelta(seconds=backoff(settings, item.attempts))
        if error is not None:
            item.error = error
        move_item(
            session,
            item,
            ItemState.QUEUED,
            actor,
            event=event,
            payload={**payload, "outcome": "requeued", "error": error},
        )
        maybe_requeue_order(session, order, actor, now)
        return True
    reason = error or {
        "code": "max_attempts_exceeded",
        "message": f"attempts spent ({item.attempts}/{item.max_attempts})",
    }
    item.error = reason
    move_item(
        session,
        item,
        ItemState.FAILED,
        actor,
        event=event,
        payload={**payload, "outcome": "failed", "error": reason},
    )
    if order.state in (OrderState.QUEUED, OrderState.IN_PROGRESS):
        order.last_error = {"item_id": str(item.id), **reason}
        move_order(
            session,
            order,
            OrderState.FAILED,
            actor,
            now=now,
            payload={"item_id": str(item.id), "error": reason},
        )
    return False
