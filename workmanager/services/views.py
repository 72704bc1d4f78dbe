"""Snapshots of rows for hooks (ItemView/OrderView), JSON shapes for the adapters, and
what the agent API returns: the item after a call, and a stored part."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..db.models import Event, Item, Order
from ..errors import ValidationFailed
from ..types import ItemView, OrderView

if TYPE_CHECKING:
    from ..db.order_store import OrderRow
    from ..db.store import ItemRecord, PartRecord


def item_view(item: ItemRecord) -> ItemView:
    return ItemView(
        id=item.id,
        order_id=item.order_id,
        type=item.type,
        order_type=item.order_type,
        state=item.state,
        input=dict(item.input or {}),
        result=item.result,
        assembled_result=item.assembled_result,
        attempts=item.attempts,
        max_attempts=item.max_attempts,
        parts_required=tuple(item.parts_required or ()),
        progress=item.progress,
        tenant_id=item.tenant_id,
    )


def order_view(order: Order, items: list[Item] | None = None) -> OrderView:
    rows = order.items if items is None else items
    return OrderView(
        id=order.id,
        type=order.type,
        state=order.state,
        priority=order.priority,
        payload=dict(order.payload or {}),
        meta=dict(order.meta or {}),
        items=tuple(item_view(i) for i in rows),
    )


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def order_dict(order: Order | OrderRow) -> dict[str, Any]:
    return {
        "id": str(order.id),
        "type": order.type,
        "state": order.state,
        "priority": order.priority,
        "payload": order.payload,
        "meta": order.meta,
        "requested_by_type": order.requested_by_type,
        "requested_by_id": order.requested_by_id,
        "dedupe_key": order.dedupe_key,
        "tenant_id": order.tenant_id,
        "last_error": order.last_error,
        "diff": order.diff,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "last_transitioned_at": iso(order.last_transitioned_at),
        "applied_at": iso(order.applied_at),
        "completed_at": iso(order.completed_at),
    }


def item_dict(item: ItemRecord) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "order_id": str(item.order_id),
        "type": item.type,
        "order_type": item.order_type,
        "tenant_id": item.tenant_id,
        "state": item.state,
        "input": item.input,
        "result": item.result,
        "assembled_result": item.assembled_result,
        "error": item.error,
        "attempts": item.attempts,
        "max_attempts": item.max_attempts,
        "leased_by_agent_id": item.leased_by_agent_id,
        "lease_expires_at": iso(item.lease_expires_at),
        "last_heartbeat_at": iso(item.last_heartbeat_at),
        "available_at": iso(item.available_at),
        "progress": item.progress,
        "parts_required": item.parts_required or [],
        "parts_state": item.parts_state,
        "accepted_at": iso(item.accepted_at),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
    }


def part_dict(part: PartRecord) -> dict[str, Any]:
    return {
        "id": str(part.id),
        "item_id": str(part.item_id),
        "part_key": part.part_key,
        "seq": part.seq,
        "status": part.status,
        "payload": part.payload,
        "evidence": part.evidence,
        "notes": part.notes,
        "errors": part.errors,
        "checksum": part.checksum,
        "submitted_by_agent_id": part.submitted_by_agent_id,
        "created_at": iso(part.created_at),
    }


def event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "order_id": str(event.order_id),
        "item_id": str(event.item_id) if event.item_id else None,
        "event": event.event,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "payload": event.payload,
        "diff": event.diff,
        "message": event.message,
        "created_at": iso(event.created_at),
    }


@dataclass(frozen=True)
class ItemOutcome:
    """The item after an agent call, and its order's state."""

    item: dict[str, Any]
    order_state: str
    order_submitted: bool = False


@dataclass(frozen=True)
class PartOutcome:
    """A stored part and the item's parts state. ``rejected``: the part failed validation
    and was stored ``rejected``; the agent API raises it once that is committed."""

    part: dict[str, Any]
    parts_state: dict[str, Any]
    required: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rejected: ValidationFailed | None = None
