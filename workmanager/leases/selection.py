"""The one query that finds eligible items, shared by every backend (SPEC §4.5 order).

Statements are built once per *shape* (which filters are present) with bound parameters
and cached: building a SQLAlchemy statement costs more than running the cached one, and
checkout is the hottest path there is.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, or_, select

from ..db.models import Item
from ..db.predicates import leasable
from .base import CheckoutQuery


@dataclass(frozen=True)
class Shape:
    """Which optional filters a checkout uses (the cache key of its statement)."""

    item: bool = False
    order: bool = False
    type: bool = False
    min_priority: bool = False
    tenant: bool = False
    blocked: bool = False
    exclude: bool = False
    full_tenants: bool = False
    known: bool = False


def shape_of(
    query: CheckoutQuery,
    blocked: Collection[str],
    exclude: Collection[Any],
    full_tenants: Collection[str] = (),
) -> Shape:
    return Shape(
        item=query.item_id is not None,
        order=query.order_id is not None,
        type=query.type is not None,
        min_priority=query.min_priority is not None,
        tenant=query.tenant_id is not None,
        blocked=bool(blocked),
        exclude=bool(exclude),
        full_tenants=bool(full_tenants),
        known=query.known is not None,
    )


def params(
    query: CheckoutQuery,
    now: datetime,
    blocked: Collection[str] = (),
    exclude: Collection[uuid.UUID] = (),
    full_tenants: Collection[str] = (),
) -> dict[str, Any]:
    """The bound values for :func:`eligible` (unused ones are ignored by SQLAlchemy). The
    names are not column names: an UPDATE would take those as values to SET."""
    return {
        "q_now": now,
        "q_item": query.item_id,
        "q_order": query.order_id,
        "q_type": query.type,
        "q_min_priority": query.min_priority,
        "q_tenant": query.tenant_id,
        "q_blocked": list(blocked),
        "q_exclude": list(exclude),
        "q_full_tenants": list(full_tenants),
        "q_known": list(query.known or ()),
    }


@lru_cache(maxsize=256)
def eligible(shape: Shape) -> Select[Item]:
    """Queued items that are due, of orders still being worked on (not failed, say),
    filtered, in checkout order: priority desc, then age."""
    stmt = select(Item).where(leasable(bindparam("q_now")))
    if shape.item:
        stmt = stmt.where(Item.id == bindparam("q_item"))
    if shape.order:
        stmt = stmt.where(Item.order_id == bindparam("q_order"))
    if shape.type:
        stmt = stmt.where(Item.order_type == bindparam("q_type"))
    if shape.min_priority:
        stmt = stmt.where(Item.priority >= bindparam("q_min_priority"))
    if shape.tenant:
        stmt = stmt.where(Item.tenant_id == bindparam("q_tenant"))
    if shape.blocked:
        stmt = stmt.where(Item.order_type.not_in(bindparam("q_blocked", expanding=True)))
    if shape.exclude:
        stmt = stmt.where(Item.id.not_in(bindparam("q_exclude", expanding=True)))
    if shape.known:
        stmt = stmt.where(Item.order_type.in_(bindparam("q_known", expanding=True)))
    if shape.full_tenants:  # tenants at their lease limit; items of no tenant are not limited
        full = Item.tenant_id.not_in(bindparam("q_full_tenants", expanding=True))
        stmt = stmt.where(or_(Item.tenant_id.is_(None), full))
    return stmt.order_by(Item.priority.desc(), Item.created_at.asc(), Item.id.asc())
