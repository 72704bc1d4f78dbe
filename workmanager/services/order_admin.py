"""Operator actions on whole orders beyond review: requeue and clone (SPEC §9)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..db.models import Item, Order
from ..errors import IllegalStateTransition, NotFound
from ..states import ItemState, OrderState
from ..types import Actor
from .admin import LeaseAdmin, LeaseSelector
from .context import ServiceContext
from .lifecycle import lock_order
from .orders import OrderService
from .transitions import move_order, rework_item
from .views import order_dict

#: The order states ``requeue`` takes; a failed order is put back with ``retry``.
REQUEUEABLE = frozenset({OrderState.REJECTED, OrderState.QUEUED, OrderState.IN_PROGRESS})


class OrderAdmin:
    """``requeue`` and ``clone``; approve, reject and retry live in :class:`OrderService`."""

    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def requeue(self, order_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """Put an order's open work back in the queue, leasable now.

        A ``rejected`` order is reworked: its rejected items go back to ``queued`` with their
        results cleared, and the order to ``queued``. A ``queued`` or ``in_progress`` order
        has its held leases released (their attempt given back) and any retry backoff on
        its queued items cleared. Other states are refused (``retry`` takes failed orders).
        """
        state = self._state(order_id)
        if state not in REQUEUEABLE:
            raise IllegalStateTransition(
                f"order is {state}; requeue takes rejected, queued or in_progress orders "
                "(a failed order is put back with retry)",
                details={"order_id": str(order_id), "state": state},
            )
        if state == OrderState.REJECTED:
            order, ids = self.ctx.db.run(lambda s: self._rework_tx(s, order_id, actor))
        else:
            LeaseAdmin(self.ctx, actor).release(LeaseSelector(order_id=order_id))
            order, ids = self.ctx.db.run(lambda s: self._unblock_tx(s, order_id))
        if ids:
            self.ctx.dispatcher.items_available(order["type"], ids)
        return order

    def _state(self, order_id: uuid.UUID) -> str:
        with self.ctx.db.transaction() as s:
            state = s.scalar(select(Order.state).where(Order.id == order_id))
        if state is None:
            raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
        return state

    @staticmethod
    def _rework_tx(
        s: Session, order_id: uuid.UUID, actor: Actor
    ) -> tuple[dict[str, Any], list[uuid.UUID]]:
        order = lock_order(s, order_id)
        rejected = list(
            s.scalars(
                select(Item).where(
                    Item.order_id == order_id, Item.state == ItemState.REJECTED.value
                )
            )
        )
        for item in rejected:
            rework_item(s, item, actor)
        order.last_error = None
        move_order(s, order, OrderState.QUEUED, actor, event="rework")
        return order_dict(order), [i.id for i in rejected]

    @staticmethod
    def _unblock_tx(s: Session, order_id: uuid.UUID) -> tuple[dict[str, Any], list[uuid.UUID]]:
        order = lock_order(s, order_id)
        queued = Item.order_id == order_id, Item.state == ItemState.QUEUED.value
        ids = list(s.scalars(select(Item.id).where(*queued)))
        s.execute(update(Item).where(*queued).values(available_at=None))
        return order_dict(order), ids

    def clone(self, order_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """Propose a new order with the same type, payload, priority and meta (plus
        ``meta.cloned_from``); its dedupe key is not copied."""
        with self.ctx.db.transaction() as s:
            source = s.get(Order, order_id)
            if source is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            original = order_dict(source)
        proposal = self.orders.propose(
            original["type"],
            dict(original["payload"] or {}),
            priority=original["priority"],
            meta={**(original["meta"] or {}), "cloned_from": original["id"]},
            requested_by=actor,
        )
        return proposal.order
