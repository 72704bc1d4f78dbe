"""What the workers record of a proposal they refused because its dedupe key (or id)
names another proposal's order: nothing is created, so the refusal goes into that
order's history, where the producer holding its id looks."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select

from ..db.models import Event
from ..db.order_store import OrderStore
from ..errors import WorkManagerError
from ..jsonvalues import canonical
from ..types import Actor
from .context import ServiceContext
from .tokens import checked_tenant, order_tenant


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
