"""The record of a refused proposal. A proposal the worker refused is recorded as a failed
order marked refused, under the id its producer got (:func:`refused_order`), its text kept
readable whatever it was (:func:`refusal_actor`, :func:`refusal_tenant`); a corrected
proposal replaces it (:func:`droppable`). One refused because its dedupe key (or id) names
another proposal's order creates nothing, so the refusal goes into that order's history,
where the producer holding its id looks (:func:`note_reused_key`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from ..db.models import Event, Order
from ..db.order_store import OrderRow, OrderStore
from ..errors import ValidationFailed, WorkManagerError
from ..jsonvalues import canonical, json_value, readable
from ..settings import Settings
from ..states import OrderState
from ..types import JSON, Actor
from .context import ServiceContext
from .proposals import storable_int
from .tokens import checked_tenant, order_tenant, payload_tenant


def is_refused(order: dict[str, Any]) -> bool:
    """Whether ``order`` (an order dict) is the record of a refused proposal: failed and
    marked refused, or so and dead-lettered since by maintenance (its dedupe key and id
    still go to the corrected proposal, as the refusal's hint says)."""
    error = order.get("last_error") or {}
    return order.get("state") in _REFUSED_STATES and bool(error.get("refused"))


_REFUSED_STATES = (OrderState.FAILED.value, OrderState.DEAD_LETTERED.value)


def replaceable(order: dict[str, Any], tenant: str | None) -> bool:
    """Whether the corrected proposal of ``tenant`` takes the refused record ``order``
    (an order dict) and its id: its own tenant's, or one filed under none (an operator's,
    whose tenant could not be one). Another tenant's proposal under the same key deleted
    the record and took the id, which the producer's tenant then lost."""
    return is_refused(order) and order.get("tenant_id") in (None, tenant)


def refused_order(
    order_id: uuid.UUID,
    type: str,
    payload: Any,
    priority: Any,
    meta: Any,
    actor: Actor,
    error: WorkManagerError,
    settings: Settings,
) -> Order:
    """The ``failed`` order that records a refused proposal under the id its producer got.

    It does not hold the dedupe key (the column stays empty): a corrected proposal under
    the same key replaces it (:func:`drop_refused`). Values that cannot be stored are
    left out, and so are a payload and meta larger than ``max_order_bytes`` (a Celery
    message has no body limit: an 80 MB proposal refused is not stored either); the
    error says what was wrong with them; text that cannot be (a NUL, a lone surrogate in
    the type, the requester or the error's message) is kept readable
    (:func:`~workmanager.jsonvalues.readable`), cut to its column."""
    max_depth = settings.max_json_depth
    payload = payload if _storable(payload, max_depth) else {}
    meta = meta if _storable(meta, max_depth) else {}
    if len(canonical(payload)) + len(canonical(meta)) > settings.max_order_bytes:
        payload, meta = {}, {}
    return Order(
        id=order_id,
        type=readable(str(type))[:191],
        state=OrderState.FAILED.value,
        priority=priority if storable_int(priority) else 0,
        payload=payload,
        meta=meta,
        requested_by_type=actor.type,
        requested_by_id=actor.id,
        last_error=readable({**error.to_dict(), "refused": True}),
    )


def refusal_actor(actor: Actor) -> Actor:
    """Who a refused proposal's record names (the order and its event): the requester's
    id kept readable and cut to its column, so the record is stored whatever it was."""
    if actor.id is None:
        return actor
    return Actor(actor.type, readable(str(actor.id))[:191] or actor.type)


def refusal_tenant(tenant_id: Any, payload: Any = None) -> str | None:
    """The tenant a refused proposal's record goes into: the one it was proposed into
    (named, else its payload's ``tenant_id``, as an order's), when that can be one (else
    none: an operator's token sees it)."""
    try:
        return checked_tenant(tenant_id) if tenant_id is not None else payload_tenant(payload)
    except WorkManagerError:
        return None


def planning_lost() -> ValidationFailed:
    """The refusal of an order whose planning ended its process on a second delivery."""
    return ValidationFailed.at(
        "$",
        "the worker's process ended while planning this order, whose message had already"
        " been delivered again once (a crash, a kill, a time or memory limit; possibly the"
        " order type's plan() or another hook); it is not tried again",
        "process_lost",
        "the worker's process ended while planning this order, a second delivery: see the"
        " control worker's log for how; fix the cause, then propose the order again",
    )


def droppable(tenant: str | None) -> Callable[[OrderRow, list[str]], bool]:
    """Whether the locked order is a refused proposal's record (failed, marked refused,
    no items) that the corrected proposal of ``tenant`` replaces (the order store's
    ``drop_refused``). Only its own tenant's: another tenant's proposal under the same key
    deleted the record and took its order id, which its producer's tenant then lost."""

    def check(order: OrderRow, item_states: list[str]) -> bool:
        found = {"state": order.state, "last_error": order.last_error, "tenant_id": order.tenant_id}
        return replaceable(found, tenant) and not item_states

    return check


def _storable(value: JSON, max_depth: int) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        json_value(value, "$", max_depth)
    except WorkManagerError:
        return False
    return True


def note_reused_key(
    ctx: ServiceContext,
    store: OrderStore,
    order_id: uuid.UUID,
    dedupe_key: Any,
    error: WorkManagerError,
    proposal: dict[str, Any],
) -> bool:
    """A proposal sent to the workers under a dedupe key (or id) that names another
    proposal's order: nothing is created, so the refusal is written into that order's
    history (event ``proposal_refused``, code ``dedupe_key_reused``, the refused
    payload's digest), where the producer holding that id finds why its proposal was
    not made (``orders show``). Only in the order ``order_id`` names (the producer's
    id; no event for an order that does not exist), of the proposal's own tenant (a
    key used in another tenant shows nothing of it), once per message (``task_id``:
    a redelivery writes nothing more). Whether it was written."""
    key = dedupe_key if isinstance(dedupe_key, str) else None
    row = store.find(order_id, key)
    if row is None or row.id != order_id:
        return False
    try:
        tenant = order_tenant(checked_tenant(proposal.get("tenant_id")), proposal["payload"])
    except WorkManagerError:
        return False
    if row.tenant_id != tenant:
        return False
    task_id = proposal.get("task_id")
    if task_id is not None and task_id in _refusals_noted(ctx, row.id):
        return False
    payload = proposal.get("payload")
    digest = hashlib.sha256(canonical(payload)).hexdigest() if _is_json(payload) else None
    requested_by: Actor = proposal["requested_by"]
    store.record_event(
        row.id,
        "proposal_refused",
        Actor.system(),
        {
            "code": error.code,
            "message": error.message,
            "type": str(proposal.get("type"))[:191],
            "payload_sha256": digest,
            "requested_by": f"{requested_by.type}:{requested_by.id}",
            "task_id": task_id,
        },
    )
    return True


def _refusals_noted(ctx: ServiceContext, order_id: uuid.UUID) -> set[Any]:
    """The task ids of the refusals already written into ``order_id``'s history."""
    with ctx.db.transaction() as s:
        rows = s.scalars(
            select(Event.payload).where(
                Event.order_id == order_id, Event.event == "proposal_refused"
            )
        )
        return {(p or {}).get("task_id") for p in rows}


def _is_json(value: Any) -> bool:
    try:
        canonical(value)
    except (TypeError, ValueError):
        return False
    return True
