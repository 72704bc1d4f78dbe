"""Reads: an order with its items and events, item logs, item parts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select

from ..db.models import Event, Item, Order, Part
from ..errors import InvalidQuery, NotFound, ValidationFailed
from ..services.context import ServiceContext
from ..services.parts import REJECTED, VALIDATED, required_and_missing
from ..services.views import event_dict, iso, item_dict, order_dict, part_dict
from ..types import as_id
from .expiry import with_live_expiry

#: What ``GET /items/{id}/parts?status=`` may name.
PART_STATUSES = (VALIDATED, REJECTED)


class Queries:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def order(self, order_id: uuid.UUID | str, events: int = 20) -> dict[str, Any]:
        """The order, its items and its latest ``events`` events (newest first)."""
        order_id = as_id(order_id, "order")
        with self.ctx.db.transaction() as s:
            order = s.get(Order, order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            items = s.scalars(
                select(Item).where(Item.order_id == order_id).order_by(Item.created_at, Item.id)
            )
            latest = s.scalars(
                select(Event)
                .where(Event.order_id == order_id)
                .order_by(Event.id.desc())
                .limit(events)
            )
            view = {
                **order_dict(order),
                "items": [item_dict(i) for i in items],
                "events": [event_dict(e) for e in latest],
            }
        with_live_expiry(self.ctx, view["items"])  # held leases: the lock's expiry
        return view

    def order_state(self, order_id: uuid.UUID | str) -> str:
        """Just the order's state (cheap: no items, no events)."""
        order_id = as_id(order_id, "order")
        return self._order_column(order_id, Order.state)

    def order_type(self, order_id: uuid.UUID | str) -> str:
        """Just the order's type (cheap: no items, no events)."""
        order_id = as_id(order_id, "order")
        return self._order_column(order_id, Order.type)

    def _order_column(self, order_id: uuid.UUID, column: Any) -> str:
        with self.ctx.db.transaction() as s:
            found = s.scalar(select(column).where(Order.id == order_id))
        if found is None:
            raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
        return str(found)

    def item(self, item_id: uuid.UUID | str) -> dict[str, Any]:
        item_id = as_id(item_id, "item")
        with self.ctx.db.transaction() as s:
            item = s.get(Item, item_id)
            if item is None:
                raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
            view = item_dict(item)
        return with_live_expiry(self.ctx, [view])[0]  # a held lease: the lock's expiry

    def events(self, order_id: uuid.UUID | str, newest: int | None = None) -> list[dict[str, Any]]:
        """The events of an order, oldest first: every one, or its ``newest`` (the
        console's order page)."""
        order_id = as_id(order_id, "order")
        with self.ctx.db.transaction() as s:
            if s.get(Order, order_id) is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            of_order = select(Event).where(Event.order_id == order_id)
            if newest is None:
                return [event_dict(e) for e in s.scalars(of_order.order_by(Event.id))]
            rows = s.scalars(of_order.order_by(Event.id.desc()).limit(newest))
            return [event_dict(e) for e in rows][::-1]

    def order_logs(self, order_id: uuid.UUID | str, limit: int = 100) -> list[dict[str, Any]]:
        """An order's events, item events included, newest first."""
        order_id = as_id(order_id, "order")
        if not 1 <= limit <= 100:
            raise InvalidQuery("limit must be between 1 and 100", details={"limit": limit})
        with self.ctx.db.transaction() as s:
            if s.get(Order, order_id) is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            rows = s.scalars(
                select(Event)
                .where(Event.order_id == order_id)
                .order_by(Event.id.desc())
                .limit(limit)
            )
            return [event_dict(e) for e in rows]

    def item_logs(self, item_id: uuid.UUID | str, limit: int = 100) -> list[dict[str, Any]]:
        """The item's events and its order's order-level events, newest first."""
        item_id = as_id(item_id, "item")
        if not 1 <= limit <= 100:
            raise InvalidQuery("limit must be between 1 and 100", details={"limit": limit})
        with self.ctx.db.transaction() as s:
            item = s.get(Item, item_id)
            if item is None:
                raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
            rows = s.scalars(
                select(Event)
                .where(
                    Event.order_id == item.order_id,
                    or_(Event.item_id == item_id, Event.item_id.is_(None)),
                )
                .order_by(Event.id.desc())
                .limit(limit)
            )
            return [event_dict(e) for e in rows]

    def evidence(self, order_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """What an order's agents sent as evidence, oldest first: each whole submission
        (from its ``submitted`` event) and each part that carried some, as ``{item_id,
        source ("result" or "part <key>[#seq]"), evidence, notes, agent_id, at}``."""
        order_id = as_id(order_id, "order")
        with self.ctx.db.transaction() as s:
            events = s.scalars(
                select(Event)
                .where(Event.order_id == order_id, Event.event == "submitted")
                .where(Event.item_id.is_not(None))
                .order_by(Event.id)
            )
            rows = [_submission(e) for e in events if (e.payload or {}).get("evidence")]
            parts = s.scalars(
                select(Part)
                .join(Item, Item.id == Part.item_id)
                .where(Item.order_id == order_id, Part.evidence.is_not(None))
                .order_by(Part.created_at, Part.id)
            )
            rows += [_part_evidence(p) for p in parts]
        return sorted(rows, key=lambda row: str(row["at"]))

    def parts(
        self, item_id: uuid.UUID | str, part_key: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        item_id = as_id(item_id, "item")
        if status is not None and status not in PART_STATUSES:
            why = f"status: one of {', '.join(PART_STATUSES)}, not {status!r}"
            raise InvalidQuery(why, details={"parameter": "status"})
        if part_key is not None and "\x00" in part_key:
            raise InvalidQuery(
                "part_key: must not contain NUL characters", details={"parameter": "part_key"}
            )
        with self.ctx.db.transaction() as s:
            item = s.get(Item, item_id)
            if item is None:
                raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
            stmt = select(Part).where(Part.item_id == item_id)
            if part_key is not None:
                stmt = stmt.where(Part.part_key == part_key)
            if status is not None:
                stmt = stmt.where(Part.status == status)
            parts = [part_dict(p) for p in s.scalars(stmt.order_by(Part.part_key, Part.seq_slot))]
            answer: dict[str, Any] = {"parts": parts, "parts_state": item.parts_state or {}}
            if item.order_type in self.ctx.registry:
                try:
                    required, missing = required_and_missing(
                        s, self.ctx.registry.get(item.order_type), item
                    )
                except ValidationFailed:  # the type's required_parts() raised (logged):
                    return answer  # a read shows the parts without what it would answer
                answer |= {"required_parts": required, "missing_parts": missing}
            return answer


def _submission(event: Event) -> dict[str, Any]:
    payload = dict(event.payload or {})
    return {
        "item_id": str(event.item_id),
        "source": "result",
        "evidence": payload.get("evidence"),
        "notes": payload.get("notes"),
        "agent_id": payload.get("agent_id"),
        "at": iso(event.created_at),
    }


def _part_evidence(part: Part) -> dict[str, Any]:
    seq = "" if part.seq is None else f"#{part.seq}"
    return {
        "item_id": str(part.item_id),
        "source": f"part {part.part_key}{seq} ({part.status})",
        "evidence": part.evidence,
        "notes": part.notes,
        "agent_id": part.submitted_by_agent_id,
        "at": iso(part.created_at),
    }
