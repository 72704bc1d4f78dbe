"""The success bodies of the HTTP API, as the server sends them (SPEC §6 table, §13).

These models document; they never filter or re-serialise a response (the routes answer
with ``JSONResponse``). They mirror ``services.views``, ``surface.shapes`` and
``reads.listing``: a key is required when the server always sends it, ``additionalProperties``
is false everywhere except in bodies that are open by nature (payloads, results, meta,
evidence, diffs, errors). ``tests/api/test_openapi_conformance.py`` checks real responses
against them.
"""

from __future__ import annotations

import typing
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..states import ItemState, OrderState

#: A JSON object whose keys belong to the order type or the agent (payload, meta, result…).
Open = dict[str, Any]


class Closed(BaseModel):
    """A response shape: exactly these keys."""

    model_config = ConfigDict(extra="forbid")


def _sparse(schema: dict[str, Any]) -> None:
    """A row of the orders list: any key may be left out by ``fields[...]``."""
    schema.pop("required", None)


# --- rows ------------------------------------------------------------------------------
class Order(Closed):
    """An order as ``order_dict`` shows it."""

    id: uuid.UUID
    type: str
    state: OrderState
    priority: int
    payload: Open
    meta: Open
    requested_by_type: str
    requested_by_id: str | None
    dedupe_key: str | None
    tenant_id: str | None
    last_error: Open | None = Field(description="why the order failed or was rejected")
    diff: Any = Field(description="what apply changed (the order type's answer), or null")
    created_at: datetime
    updated_at: datetime
    last_transitioned_at: datetime
    applied_at: datetime | None
    completed_at: datetime | None


class OrderRef(Closed):
    """The order a repeated ``dedupe_key`` found, shown to a caller without ``view``."""

    id: uuid.UUID
    state: OrderState


class PartState(Closed):
    """The latest part submitted under one key."""

    status: Literal["validated", "rejected"]
    seq: int | None
    checksum: str
    submitted_at: datetime


class Item(Closed):
    """An item as ``item_dict`` shows it."""

    id: uuid.UUID
    order_id: uuid.UUID
    type: str
    order_type: str
    tenant_id: str | None
    state: ItemState
    input: Open
    result: Open | None
    assembled_result: Open | None
    error: Open | None
    attempts: int
    max_attempts: int
    leased_by_agent_id: str | None
    lease_expires_at: datetime | None
    last_heartbeat_at: datetime | None
    available_at: datetime | None
    progress: Open | None = Field(description="the last heartbeat's progress and checkpoint")
    parts_required: list[str]
    parts_state: dict[str, PartState] | None = Field(description="part key → its latest part")
    accepted_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Event(Closed):
    """An event of an order (or of one of its items)."""

    id: int
    order_id: uuid.UUID
    item_id: uuid.UUID | None
    event: str
    actor_type: str
    actor_id: str | None
    payload: Open | None
    diff: Any
    message: str | None
    created_at: datetime


class OrderDetail(Order):
    """An order with its items and its latest events (newest first)."""

    items: list[Item]
    events: list[Event]


class Part(Closed):
    """A part as stored (validated, or rejected with its errors)."""

    id: uuid.UUID
    item_id: uuid.UUID
    part_key: str
    seq: int | None
    status: Literal["validated", "rejected"]
    payload: Open
    evidence: Any = Field(description="as the agent sent it (an object, a list, …), or null")
    notes: str | None
    errors: Open | None = Field(description="{validation: [...]} when the part was rejected")
    checksum: str
    submitted_by_agent_id: str | None
    created_at: datetime


class ListedItem(Item):
    """An item of the orders list (``include=items``)."""

    model_config = ConfigDict(json_schema_extra=_sparse)


class ListedEvent(Event):
    """An event of the orders list (``include=events``)."""

    model_config = ConfigDict(json_schema_extra=_sparse)


class ListedOrder(Order):
    """A row of the orders list: the order, ``items_count``, and what ``include`` asked
    for; ``fields[work_orders|items|events]`` keep only the keys named."""

    model_config = ConfigDict(json_schema_extra=_sparse)
    items_count: int
    items: list[ListedItem]
    events: list[ListedEvent]
    events_count: int
    items_exists: bool
    events_exists: bool


class PageMeta(Closed):
    """Where the page sits."""

    current_page: int
    per_page: int
    total: int
    last_page: int


class LeasedItem(Closed):
    """The item checkout leased, its lease token and when to heartbeat."""

    id: uuid.UUID
    order_id: uuid.UUID
    type: str | None
    input: Open | None
    lease_token: str = Field(description="present it as X-Lease-Token (<fence>.<secret>)")
    lease_expires_at: datetime
    heartbeat_every_seconds: int
    max_attempts: int | None
    current_attempt: int | None


class PartRef(Closed):
    """The part stored."""

    id: uuid.UUID
    part_key: str
    seq: int | None
    status: Literal["validated", "rejected"]


class FinalizedItem(Closed):
    """The item finalize submitted."""

    id: uuid.UUID
    state: ItemState
    assembled_result: Open | None


# --- bodies ----------------------------------------------------------------------------
class OrderCreated(Closed):
    """The order, created, and how many items it was planned into."""

    order: Order
    items_count: int


class OrderFound(Closed):
    """A repeated ``dedupe_key`` with the same type and payload: the existing order (only
    its id and state for a caller without the ``view`` scope)."""

    order: Order | OrderRef


class OrderPage(Closed):
    """One page of orders and where it sits."""

    data: list[ListedOrder]
    meta: PageMeta


class OrderShown(Closed):
    """The order with its items and latest events."""

    order: OrderDetail


class OrderAnswer(Closed):
    """The order after the call."""

    order: Order


class ApprovePending(Closed):
    """Approved; apply runs in the worker (with ``wait``: not settled in time)."""

    order: Order | OrderDetail


class ApproveSettled(Closed):
    """With ``wait``: the order once apply settled it, and what apply changed."""

    order: OrderDetail
    diff: Any


class Checkout(Closed):
    """The item leased, with its lease token."""

    item: LeasedItem


class Heartbeat(Closed):
    """The lease, extended."""

    lease_expires_at: datetime
    heartbeat_every_seconds: int


class Submitted(Closed):
    """The result accepted for review; the item after it, and its order's state."""

    item: Item
    state: ItemState
    order_state: OrderState


class PartStored(Closed):
    """The part stored in its slot, and the item's parts."""

    success: Literal[True]
    part: PartRef
    item_parts_state: dict[str, PartState]
    required_parts: list[str]
    missing_parts: list[str]


class PartList(Closed):
    """The item's parts and the latest part per key."""

    parts: list[Part]
    parts_state: dict[str, PartState]
    required_parts: list[str] = Field(description="when the order type is loaded")
    missing_parts: list[str] = Field(description="when the order type is loaded")

    model_config = ConfigDict(
        json_schema_extra=lambda s: s.__setitem__("required", ["parts", "parts_state"])
    )


class Finalized(Closed):
    """The parts assembled and submitted."""

    success: Literal[True]
    item: FinalizedItem
    order_state: OrderState


class ItemAnswer(Closed):
    """The item after the call."""

    item: Item


class Logs(Closed):
    """The item's events and its order's order-level events."""

    events: list[Event] = Field(description="newest first")


class Recovered(Closed):
    """A retried idempotency key whose first request committed but whose answer was lost
    (the process died in between): what was done, never done again."""

    replayed: Literal[True]
    outcome: Literal["committed"]
    order_id: uuid.UUID | None = None
    item_id: uuid.UUID | None = None
    item: Item | None = None
    order: OrderDetail | None = None

    model_config = ConfigDict(
        json_schema_extra=lambda s: s.__setitem__("required", ["replayed", "outcome"])
    )


class Forgotten(Closed):
    """What an erasure changed (or, in a dry run, would change), per record; never whose."""

    subject: Literal["agent", "user"]
    dry_run: bool
    live_leases: int = Field(description="items the subject holds now (a real run refuses)")
    counts: dict[str, int] = Field(description="record → rows changed (or that would be)")


class Health(Closed):
    """The process answers."""

    status: Literal["ok"]


class ErrorBody(Closed):
    """Why a dependency is down."""

    code: str
    message: str
    details: Any = None


class Readiness(Closed):
    """Each dependency's state; the error too when one is down (503)."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="dependency → ok, or why it is down")
    error: ErrorBody | None = None


def _first_line(model: Any) -> str:
    doc = (getattr(model, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) or "success"


def declare(ok: dict[int, Any], *, idempotent: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the body of each success status, and on a route that
    takes an idempotency key the 200 of a recovered replay (:class:`Recovered`) besides.
    A declaration only: the route still answers with its own ``JSONResponse``."""
    models = dict(ok)
    if idempotent:
        models[200] = models[200] | Recovered if 200 in models else Recovered
    out: dict[int | str, dict[str, Any]] = {}
    for status, model in models.items():
        members = typing.get_args(model) or (model,)
        why = " Or, on a retried key: ".join(_first_line(m) for m in members)
        out[status] = {"model": model, "description": why}
    return out
