"""The order's steps as its items move, and the locks they take (both are the ORM store's
building blocks; PostgreSQL's statements do the same in ``db/sql/functions.sql``).

Locking discipline (PostgreSQL): agent paths lock the item row first and the order row
second; admin paths (approve, reject, retry, apply) lock the order and then touch only
items in states agents do not hold. So no two paths wait on each other in opposite order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..services.transitions import (
    ORDER_FAILS_FROM,
    clear_lease,
    decide_ending,
    move_item,
    record_event,
)
from ..settings import Settings
from ..state_machine import check_order
from ..states import HELD_ITEM_STATES, SUBMITTED_ITEM_STATES, ItemState, OrderState
from ..types import Actor
from .models import Item, Order
from .predicates import held, item_state_in, queued

HELD = [s.value for s in HELD_ITEM_STATES]


@dataclass
class OrderRef:
    """What agent paths need of a locked order: its id, type and state (no JSON columns)."""

    id: uuid.UUID
    type: str
    state: str


def lock_order_ref(session: Session, order_id: uuid.UUID) -> OrderRef:
    """Lock the order row (``FOR NO KEY UPDATE``: it does not block the key-share locks that
    foreign keys of new event rows take) and read only its id, type and state."""
    row = session.execute(
        select(Order.id, Order.type, Order.state)
        .where(Order.id == order_id)
        .with_for_update(key_share=True)
    ).first()
    if row is None:
        raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
    return OrderRef(row.id, row.type, row.state)


def move_order_ref(
    session: Session,
    order: OrderRef,
    to_state: str,
    actor: Actor,
    now: datetime,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    """The Core twin of ``transitions.move_order`` for a locked :class:`OrderRef`: checked,
    one UPDATE of the columns that change, one event."""
    check_order(order.state, to_state)
    state = OrderState(to_state).value
    session.execute(
        update(Order)
        .where(Order.id == order.id)
        .values(state=state, last_transitioned_at=now, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    order.state = state
    record_event(session, order.id, event or state, actor, payload=payload)


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


def maybe_submit_order(session: Session, order: OrderRef, actor: Actor, now: datetime) -> bool:
    """Move an in-progress order to ``submitted`` once every item is submitted.

    One conditional UPDATE (the check and the change together). The caller holds the
    order's lock, so a sibling item submitted concurrently has committed before this
    statement's snapshot and counts.
    """
    if order.state != OrderState.IN_PROGRESS:
        return False
    check_order(order.state, OrderState.SUBMITTED)
    open_items = exists().where(
        Item.order_id == order.id, ~item_state_in(s.value for s in SUBMITTED_ITEM_STATES)
    )
    state = OrderState.SUBMITTED.value
    changed = session.execute(
        update(Order)
        .where(Order.id == order.id, ~open_items)
        .values(state=state, last_transitioned_at=now, updated_at=now, submitted_at=now)
        .returning(Order.id)
        .execution_options(synchronize_session=False)
    ).first()
    if changed is None:
        return False
    order.state = state
    record_event(session, order.id, state, actor)
    return True


def maybe_requeue_order(session: Session, order: OrderRef, actor: Actor, now: datetime) -> None:
    """An in-progress order with no held item goes back to ``queued``."""
    if order.state == OrderState.IN_PROGRESS and not _holds_any(session, order.id):
        move_order_ref(session, order, OrderState.QUEUED, actor, now, event="requeued")


def _holds_any(session: Session, order_id: uuid.UUID) -> bool:
    """Whether an item of the order is held, counting a grant committing right now.

    Checkout does not lock the order (that would serialize every checkout of one order),
    so a sibling may be in the middle of ``queued → leased`` and a snapshot read would
    still see it queued. So the items this transaction sees as queued are read again ``FOR
    SHARE`` by id: that waits for a grant's row lock (its UPDATE holds ``NO KEY UPDATE``)
    and then returns the row as committed. Only queued rows are locked: held rows belong
    to agents whose submit may be waiting for this transaction's order lock. Held and
    queued rows are read in one query (one snapshot): a grant committing between two
    reads would be in neither.
    """
    # An ORM select autoflushes first, so pending item changes of this transaction count.
    rows = session.execute(
        select(Item.id, Item.state).where(Item.order_id == order_id, or_(held(), queued()))
    ).all()
    if any(state in HELD for _, state in rows):
        return True
    if session.get_bind().dialect.name != "postgresql":
        return False  # SQLite transactions are serialized: nothing is in flight
    queued_ids = [item_id for item_id, state in rows if state == ItemState.QUEUED.value]
    if not queued_ids:
        return False
    now_states = session.scalars(
        select(Item.state).where(Item.id.in_(queued_ids)).with_for_update(read=True)
    )
    return any(state in HELD for state in now_states)


def start_order(session: Session, order_id: uuid.UUID, actor: Actor, now: datetime) -> None:
    """``queued → in_progress`` on an order's first lease: one conditional UPDATE, which
    locks the order row only when it changes it (see :func:`_holds_any` for the race with
    a sibling's release this leaves, and how that side closes it)."""
    check_order(OrderState.QUEUED, OrderState.IN_PROGRESS)
    state = OrderState.IN_PROGRESS.value
    changed = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.state == OrderState.QUEUED.value)
        .values(state=state, last_transitioned_at=now, updated_at=now)
        .returning(Order.id)
        .execution_options(synchronize_session=False)
    ).first()
    if changed is not None:
        record_event(session, order_id, state, actor)


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
    """End a held lease as :func:`decide_ending` says: requeue the item with backoff, or
    fail it (and its order). Returns True when requeued."""
    clear_lease(item)
    end = decide_ending(
        settings, item.attempts, item.max_attempts, now, error=error, retryable=retryable
    )
    if end.available_at is not None:
        item.available_at = end.available_at
    if end.error is not None:
        item.error = end.error
    move_item(session, item, end.state, actor, event=event, payload=end.payload)
    if end.requeued:
        # The order stays as it is (SPEC §3.1: expiry and fail change only the item; only
        # a release by the holder sends the order back to queued).
        return True
    order = lock_order_ref(session, item.order_id)
    if order.state in ORDER_FAILS_FROM:
        move_order_ref(
            session,
            order,
            OrderState.FAILED,
            actor,
            now,
            payload=end.order_payload(item.id),
            last_error=end.order_error(item.id),
        )
    return False
