"""What the PostgreSQL store's statements take and give: parameters built from values
(the lease as presented, the provenance row, the view a guard compares), the rows turned
back into items, the event rows announced, and an idempotency key's mark in a statement's
transaction. The SQL texts are :mod:`.sql`'s."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from ... import events
from ...errors import NotFound
from ...leases.base import CheckoutQuery
from ...provenance.default import DefaultEnricher
from ...services.inputs import as_presented
from ...types import AgentInfo, ItemView, Lease
from .. import claims
from ..models import utcnow
from ..raw import Conn, utc_row
from ..store import ItemRow
from .sql import PROVENANCE


def query_params(query: CheckoutQuery) -> dict[str, Any]:
    """The values of the filters' placeholders."""
    return {
        "q_item": query.item_id,
        "q_order": query.order_id,
        "q_type": query.type,
        "q_min_priority": query.min_priority,
        "q_tenant": query.tenant_id,
        "q_known": list(query.known or ()),
    }


def provenance_params(ctx: Any, action: str, agent: AgentInfo) -> dict[str, Any]:
    """The provenance row of ``action`` by ``agent``, as the statements' parameters.

    With the default enricher, a row is a function of the action, the agent's fields and
    the anonymising switch, bar its ``created_at``: an agent making thousands of calls
    under one identity (a consumer, a script) gets the row built once per action and
    copied with a fresh ``created_at`` (~16 µs a call inside a cycle, measured). An agent
    with ``extra`` fields, a custom enricher (it may add anything), or a new request id
    each call (HTTP) is built every time."""
    enricher = ctx.provenance.enricher
    if type(enricher) is not DefaultEnricher or agent.extra:
        return PROVENANCE.params(ctx.provenance.row(action, agent))
    key = (enricher.anonymize, action, *(getattr(agent, f) for f in _AGENT_FIELDS))
    try:
        params = _ROWS.get(key)
    except TypeError:  # a Python caller's field that is not hashable (nor a string)
        return PROVENANCE.params(ctx.provenance.row(action, agent))
    if params is None:
        params = PROVENANCE.params(ctx.provenance.row(action, agent))
        if len(_ROWS) >= _ROWS_KEPT:
            _ROWS.clear()
        _ROWS[key] = params
    return {**params, "p_created_at": utcnow()}


#: With a lock store the lock's TTL is the expiry: no floor on the row's.
_NO_FLOOR = datetime.min.replace(tzinfo=UTC)


def lease_params(ctx: Any, lease: Lease, agent: AgentInfo, now: Any, action: str) -> dict[str, Any]:
    """What every statement on a presented lease takes (heartbeat, submit, release): the
    row (``item``), the guard's ``token`` and ``agent`` (the lease as ``agent``
    presents it), the clock, the actor, and the provenance row of ``action``."""
    presented = as_presented(lease, agent)
    return {
        "item": lease.item_id,
        "token": presented.fence,
        "secret_hash": presented.secret_hash,
        "agent": presented.agent_id,
        "now": now,
        # the row's expiry counts only where the row is the lock (see queries.sql current)
        "expiry_floor": now if ctx.leases.lock is None else _NO_FLOOR,
        "actor_type": agent.actor.type,
        "actor_id": agent.actor.id,
        **provenance_params(ctx, action, agent),
    }


def view_guard(view: ItemView) -> dict[str, Any]:
    """``submit_guard``'s values: the row as ``view`` shows it (what the hooks saw)."""
    return {
        "v_input": Jsonb(view.input),
        "v_state": view.state,
        "v_attempts": view.attempts,
        "v_progress": jsonb_or_none(view.progress),
        "v_result": jsonb_or_none(view.result),
        "v_assembled": jsonb_or_none(view.assembled_result),
    }


def jsonb_or_none(value: Any) -> Jsonb | None:
    """``value`` as jsonb, SQL NULL for ``None``."""
    return None if value is None else Jsonb(value)


def order_step(row: dict[str, Any]) -> tuple[str, bool]:
    """Take the order's step out of a row a lease-ending statement returned
    (:func:`_then_order`): its state after the step, and whether it moved."""
    order_state, became = row.pop("order_state"), bool(row.pop("order_became"))
    if order_state is None:  # items go with their order (a cascade): not seen in practice
        order_id = str(row["order_id"])
        raise NotFound(f"order {order_id} not found", details={"order_id": order_id})
    return order_state, became


#: Every field of :class:`AgentInfo` but ``extra`` (a row is only reused without it).
_AGENT_FIELDS = tuple(f.name for f in dataclasses.fields(AgentInfo) if f.name != "extra")


#: Provenance parameters built with the default enricher, by what they are made of.
_ROWS: dict[tuple[Any, ...], dict[str, Any]] = {}


_ROWS_KEPT = 1024


def item_of_row(row: dict[str, Any]) -> ItemRow:
    """An item row (a statement's, every column; other keys are ignored) as the read-only
    helpers take it, datetimes in UTC as the ORM gives them. Not an ORM instance: building
    one costs more than this whole call's Python, and nothing here is flushed."""
    utc_row(row)
    return ItemRow._make([row[name] for name in ItemRow._fields])


def announce_written(row: dict[str, Any]) -> None:
    """Take a committed statement's event rows (:data:`WRITTEN`) out of ``row`` and
    announce them to the listeners (:mod:`workmanager.events`), typed as the ORM reads
    them."""
    written = row.pop("written_events", None)
    if not written or not events.listening():
        return
    typed = []
    for event in written:
        event = dict(event)
        for key in ("order_id", "item_id"):
            if event.get(key) is not None:
                event[key] = uuid.UUID(event[key])
        if event.get("created_at") is not None:
            event["created_at"] = datetime.fromisoformat(event["created_at"])
        typed.append(event)
    events.announce_rows(typed)


def mark(
    conn: Conn, claim: claims.ActiveClaim | None, order_id: uuid.UUID, item_id: uuid.UUID
) -> None:
    """Mark the active idempotency key ``committed`` in this transaction (before its
    COMMIT), as the ORM path's transactions do; a key taken over meanwhile rolls back."""
    if claim is None:
        return
    check_mark(conn, send_mark(conn, claim, order_id, item_id))


def send_mark(
    conn: Conn, claim: claims.ActiveClaim, order_id: uuid.UUID, item_id: uuid.UUID
) -> Any:
    """Send the key's mark (in a pipeline, it goes with the statement before it); its
    cursor, for :func:`check_mark` once the results are in."""
    refs = {"order_id": str(order_id), "item_id": str(item_id)}
    return conn.execute(claims.RAW_MARK, claims.raw_mark_params(claim, refs))


def check_mark(conn: Conn, done: Any) -> None:
    """The key's mark (``done``: its statement's cursor) found its claim's row; else another
    request took the key over meanwhile: the whole transaction rolls back and
    :func:`claims.taken_over` is raised, as the ORM's commit does."""
    if done.rowcount != 1:
        conn.execute("ROLLBACK")
        raise claims.taken_over()


def marked(claim: claims.ActiveClaim | None) -> None:
    """The key ``mark`` marked is committed now."""
    if claim is not None:
        claim.marked = True
