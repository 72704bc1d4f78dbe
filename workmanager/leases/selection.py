"""The one query that finds eligible items, shared by every backend (SPEC §4.5 order)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, exists, or_, select

from ..db.models import Item, Order
from ..db.predicates import queued
from ..states import LEASABLE_ORDER_STATES
from .base import CheckoutQuery


def eligible(
    query: CheckoutQuery,
    now: datetime,
    *,
    blocked_types: Collection[str] = (),
    exclude_ids: Collection[uuid.UUID] = (),
) -> Select[Item]:
    """Queued items that are due, of orders still being worked on (not failed, say),
    filtered, in checkout order: priority desc, then age."""
    stmt = select(Item).where(
        queued(),
        or_(Item.available_at.is_(None), Item.available_at <= now),
        exists().where(
            Order.id == Item.order_id, Order.state.in_([s.value for s in LEASABLE_ORDER_STATES])
        ),
    )
    if query.item_id is not None:
        stmt = stmt.where(Item.id == query.item_id)
    if query.order_id is not None:
        stmt = stmt.where(Item.order_id == query.order_id)
    if query.type is not None:
        stmt = stmt.where(Item.order_type == query.type)
    if query.min_priority is not None:
        stmt = stmt.where(Item.priority >= query.min_priority)
    if query.tenant_id is not None:
        stmt = stmt.where(Item.tenant_id == query.tenant_id)
    if blocked_types:
        stmt = stmt.where(Item.order_type.not_in(list(blocked_types)))
    if exclude_ids:
        stmt = stmt.where(Item.id.not_in(list(exclude_ids)))
    return stmt.order_by(Item.priority.desc(), Item.created_at.asc(), Item.id.asc())
