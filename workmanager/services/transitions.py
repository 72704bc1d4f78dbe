"""Checked state changes of orders and items; each writes exactly one event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..db import pending
from ..db.models import EVENTS_TABLE, Item, Order, utcnow
from ..state_machine import check_item, check_order
from ..states import ItemState, OrderState
from ..types import Actor


def record_event(
    session: Session,
    order_id: Any,
    event: str,
    actor: Actor,
    *,
    item_id: Any = None,
    payload: dict[str, Any] | None = None,
    diff: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Append one event to the audit log (written at commit, see :mod:`..db.pending`)."""
    pending.add(
        session,
        EVENTS_TABLE,
        {
            "order_id": order_id,
            "item_id": item_id,
            "event": event,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "payload": payload,
            "diff": diff,
            "message": message,
            "created_at": utcnow(),
        },
    )


def move_order(
    session: Session,
    order: Order,
    to_state: str,
    actor: Actor,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    diff: dict[str, Any] | None = None,
    message: str | None = None,
    now: datetime | None = None,
) -> None:
    """Move ``order`` to ``to_state`` (checked) and record the event (default: the state)."""
    check_order(order.state, to_state)
    order.state = OrderState(to_state).value
    order.last_transitioned_at = now or utcnow()
    record_event(
        session, order.id, event or to_state, actor, payload=payload, diff=diff, message=message
    )


def move_item(
    session: Session,
    item: Item,
    to_state: str,
    actor: Actor,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Move ``item`` to ``to_state`` (checked) and record the event (default: the state)."""
    check_item(item.state, to_state)
    item.state = ItemState(to_state).value
    item.updated_at = utcnow()
    record_event(
        session,
        item.order_id,
        event or to_state,
        actor,
        item_id=item.id,
        payload=payload,
        message=message,
    )


def clear_lease(item: Item) -> None:
    """Forget the holder; the token stays, so the next grant is still strictly greater."""
    item.leased_by_agent_id = None
    item.lease_expires_at = None


def rework_item(session: Session, item: Item, actor: Actor) -> None:
    """A rejected item goes back to work: result, attempts, backoff and parts state reset."""
    item.result = item.assembled_result = None
    item.attempts, item.available_at, item.parts_state = 0, None, None
    move_item(session, item, ItemState.QUEUED, actor, event="rework")
