"""Operator views and actions on items: list by filter, retry a failed item (SPEC §9)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from ..db.models import Item
from ..errors import IllegalStateTransition, InvalidQuery, NotFound
from ..states import ItemState, OrderState
from ..types import Actor
from .context import ServiceContext
from .lifecycle import lock_item, lock_order
from .transitions import move_item, move_order
from .views import item_dict

MAX_LIMIT = 1000


@dataclass(frozen=True)
class ItemFilter:
    """Which items to list; the fields narrow each other."""

    order_id: uuid.UUID | None = None
    state: str | None = None
    type: str | None = None
    agent_id: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if self.order_id is not None:
            conds.append(Item.order_id == self.order_id)
        if self.state is not None:
            if self.state not in {s.value for s in ItemState}:
                message = f"unknown item state {self.state!r}"
                raise InvalidQuery(message, details={"state": self.state})
            conds.append(Item.state == self.state)
        if self.type is not None:
            conds.append(Item.order_type == self.type)
        if self.agent_id is not None:
            conds.append(Item.leased_by_agent_id == self.agent_id)
        return conds


class ItemAdmin:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def list(self, where: ItemFilter, limit: int = 50) -> list[dict[str, Any]]:
        """Items oldest first, at most ``limit`` (1..1000)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})
        stmt = select(Item).where(*where.where()).order_by(Item.created_at, Item.id).limit(limit)
        with self.ctx.db.transaction() as s:
            return [item_dict(i) for i in s.scalars(stmt)]

    def retry(self, item_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """A failed item back to ``queued`` (error, attempts and backoff cleared); a failed
        order it belongs to goes back to ``queued`` with it. Refused while the order has
        other failed items: that order could never be submitted, and ``orders retry``
        takes them all."""
        item = self.ctx.db.run(lambda s: self._retry_tx(s, item_id, actor))
        self.ctx.dispatcher.items_available(item["order_type"], [item_id])
        return item

    @staticmethod
    def _retry_tx(s: Session, item_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        order_id = s.scalar(select(Item.order_id).where(Item.id == item_id))
        if order_id is None:
            raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
        order = lock_order(s, order_id)  # admin paths lock the order first (see lifecycle)
        item = lock_item(s, item_id)  # a failed item: no agent path locks it
        if item.state != ItemState.FAILED:  # retry is failed -> queued, nothing else
            raise IllegalStateTransition(
                f"only a failed item can be retried; this one is {item.state}",
                kind="item",
                from_state=item.state,
                to_state=ItemState.QUEUED,
            )
        others = list(
            s.scalars(
                select(Item.id).where(
                    Item.order_id == order_id,
                    Item.id != item_id,
                    Item.state == ItemState.FAILED.value,
                )
            )
        )
        if others:  # this item alone would reopen an order that can then never be submitted
            raise IllegalStateTransition(
                f"order {order_id} has other failed items; retry the whole order"
                f" (workmanager orders retry {order_id})",
                details={
                    "kind": "item",
                    "from": item.state,
                    "to": ItemState.QUEUED.value,
                    "order_id": str(order_id),
                    "other_failed_items": [str(i) for i in others],
                },
            )
        item.error, item.attempts, item.available_at = None, 0, None
        move_item(s, item, ItemState.QUEUED, actor, event="retried")
        if order.state == OrderState.FAILED:
            order.last_error = None
            move_order(s, order, OrderState.QUEUED, actor, event="retried")
        return item_dict(item)
