"""Planning: a proposed order and the items its type plans for it, built but not stored.

Both order stores' ``create_order`` (the ORM's in :mod:`workmanager.db.orm_orders`, one
statement on PostgreSQL in :mod:`workmanager.db.postgres.control`) take what
:func:`build_order` returns.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from ..checks import guarded
from ..db.models import Item, Order
from ..errors import ValidationFailed
from ..jsonvalues import json_value
from ..order_types import ItemSpec, OrderType
from ..settings import Settings
from ..states import ItemState, OrderState
from ..types import JSON, Actor
from .inputs import require
from .tenancy import payload_tenant
from .views import order_view

#: Orders proposed with a dedupe key get the id uuid5(DEDUPE_NAMESPACE, key), so a producer
#: that enqueues asynchronously knows the id of the (possibly existing) order at once.
DEDUPE_NAMESPACE = uuid.UUID("6f1d3c0e-9a53-4f0e-8d1e-5d6c2b7a9e41")


def order_id_for(dedupe_key: str | None) -> uuid.UUID:
    """The id an order gets: derived from its dedupe key when it has one, else random."""
    return uuid.uuid5(DEDUPE_NAMESPACE, dedupe_key) if dedupe_key else uuid.uuid4()


def build_order(
    settings: Settings,
    order_type: OrderType,
    payload: JSON,
    *,
    priority: int,
    meta: JSON,
    dedupe_key: str | None,
    actor: Actor,
    order_id: uuid.UUID | None,
    now: datetime,
    tenant_id: str | None = None,
) -> tuple[Order, list[Item]]:
    """The new order and its planned items, not yet stored. The order belongs to
    ``tenant_id`` (when none is given, to its payload's ``tenant_id`` key, as items were
    given a tenant before orders had one); its items inherit it."""
    order = Order(
        id=order_id or order_id_for(dedupe_key),
        type=order_type.type,
        state=OrderState.QUEUED.value,
        priority=priority,
        payload=payload,
        meta=meta,
        requested_by_type=actor.type,
        requested_by_id=actor.id,
        dedupe_key=dedupe_key,
        tenant_id=tenant_id or payload_tenant(payload),
        apply_attempts=0,
        created_at=now,
        updated_at=now,
        last_transitioned_at=now,
    )
    # Items are created "at the same time", but listings and checkout order by
    # created_at: one microsecond apart keeps the order plan() gave them.
    specs = guarded(lambda: order_type.plan(order_view(order, [])), "plan")
    items = [
        _item(settings, order, order_type, spec, now + timedelta(microseconds=n))
        for n, spec in enumerate(specs)
    ]
    # An order with no items could never be submitted: it would sit queued forever.
    require(bool(items), "payload", "the order type planned no items for it", "plan")
    return order, items


def _item(
    settings: Settings, order: Order, order_type: OrderType, spec: ItemSpec, now: datetime
) -> Item:
    if not isinstance(spec, ItemSpec):
        raise ValidationFailed(
            [
                {
                    "path": "plan",
                    "validator": "hook_error",
                    "message": f"plan() must return ItemSpec objects, got {spec!r}",
                }
            ],
            "the order type's plan() returned something else than ItemSpec objects",
        )
    json_value(spec.input, "plan.input")
    max_attempts = spec.max_attempts or order_type.max_attempts or settings.default_max_attempts
    return Item(
        id=uuid.uuid4(),
        order_id=order.id,
        type=spec.type or order.type,
        order_type=order.type,
        priority=order.priority,
        tenant_id=order.tenant_id,
        state=ItemState.QUEUED.value,
        input=dict(order.payload) if spec.input is None else dict(spec.input),
        max_attempts=max_attempts,
        parts_required=list(spec.parts_required or []) or None,
        attempts=0,
        lease_token=0,
        created_at=now,
        updated_at=now,
    )
