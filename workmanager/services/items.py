"""Operator views and actions on items: list by filter, retry a failed item (SPEC §9)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select

from ..db.models import Item
from ..db.order_store import build_order_store
from ..db.predicates import given
from ..errors import IllegalStateTransition, InvalidQuery, WorkManagerError
from ..reads.expiry import with_live_expiry
from ..states import ItemState
from ..types import Actor
from .context import ServiceContext
from .orders import OrderService
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
        if self.state is not None and self.state not in {s.value for s in ItemState}:
            message = f"unknown item state {self.state!r}"
            raise InvalidQuery(message, details={"state": self.state})
        return given(
            (Item.order_id, self.order_id),
            (Item.state, self.state),
            (Item.order_type, self.type),
            (Item.leased_by_agent_id, self.agent_id),
        )


class ItemAdmin:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: The item's retry, one path per database (db/order_store.py).
        self.store = build_order_store(ctx)

    def list(self, where: ItemFilter, limit: int = 50) -> list[dict[str, Any]]:
        """Items oldest first, at most ``limit`` (1..1000)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})
        stmt = select(Item).where(*where.where()).order_by(Item.created_at, Item.id).limit(limit)
        with self.ctx.db.transaction() as s:
            rows = [item_dict(i) for i in s.scalars(stmt)]
        return with_live_expiry(self.ctx, rows)  # held leases: the lock's expiry

    def retry(self, item_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """A failed item back to ``queued`` (error, attempts and backoff cleared); a failed
        order it belongs to goes back to ``queued`` with it. Refused while the order has
        other failed items: that order could never be submitted, and ``orders retry``
        takes them all."""
        item = self.store.retry_item(item_id, retryable, actor)
        self.ctx.dispatcher.items_available(item["order_type"], [item_id])
        return item

    def retry_many(
        self,
        orders: OrderService,
        actor: Actor,
        *,
        order_id: uuid.UUID | None = None,
        order_type: str | None = None,
        select_all: bool = False,
        limit: int = MAX_LIMIT,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Failed items back to work, chosen by order and/or type (or ``select_all``), at
        most ``limit``, as upstream's ``items:retry``. An order with one failed item has it
        retried (:meth:`retry`); an order with several is retried whole (``orders.retry``:
        one item alone would reopen an order that could never be submitted). One order's
        refusal is reported and the batch goes on."""
        if not select_all and order_id is None and order_type is None:
            raise InvalidQuery(
                "no item selector: name an order or an order type, or select all failed "
                "items explicitly",
                details={"selectors": ["order", "type", "all"]},
            )
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})
        where = ItemFilter(order_id=order_id, state=ItemState.FAILED.value, type=order_type)
        found = self.list(where, limit=limit)
        by_order: dict[str, list[dict[str, Any]]] = {}
        for item in found:
            by_order.setdefault(item["order_id"], []).append(item)
        rows: list[dict[str, Any]] = []
        for oid, group in by_order.items():
            outcome, reason = "retried", None
            if not dry_run:
                outcome, reason = self._retry_group(orders, actor, oid, group)
            for item in group:
                error = (item.get("error") or {}).get("code")
                row = {"id": item["id"], "order_id": oid, "order_type": item["order_type"]}
                row.update(error=error, outcome=outcome)
                if reason:
                    row["reason"] = reason
                rows.append(row)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        return {"action": "retry", "dry_run": dry_run, "counts": counts, "items": rows}

    def _retry_group(
        self, orders: OrderService, actor: Actor, order_id: str, group: Sequence[dict[str, Any]]
    ) -> tuple[str, str | None]:
        try:
            if len(group) == 1:
                self.retry(uuid.UUID(group[0]["id"]), actor)
            else:
                orders.retry(uuid.UUID(order_id), actor)
        except WorkManagerError as exc:
            return "error", f"{exc.code}: {exc.message}"
        return "retried", None


def retryable(item: dict[str, Any], others: list[uuid.UUID]) -> None:
    """Refuse to retry the locked ``item`` (``others``: its order's other failed items)
    unless it is failed and the only failed item of its order: alone, it would reopen an
    order that could then never be submitted."""
    if item["state"] != ItemState.FAILED:  # retry is failed -> queued, nothing else
        raise IllegalStateTransition(
            f"only a failed item can be retried; this one is {item['state']}",
            kind="item",
            from_state=item["state"],
            to_state=ItemState.QUEUED,
        )
    if others:
        order_id = item["order_id"]
        raise IllegalStateTransition(
            f"order {order_id} has other failed items; retry the whole order"
            f" (workmanager orders retry {order_id})",
            details={
                "kind": "item",
                "from": item["state"],
                "to": ItemState.QUEUED.value,
                "order_id": str(order_id),
                "other_failed_items": [str(i) for i in others],
            },
        )
