"""PostgreSQL's order store (:class:`PostgresOrderStore`): propose's insert, auto-approval
and apply's two steps.

On PostgreSQL these statements are the one path of these operations (the
:class:`~workmanager.db.store.OrderStore` port, chosen by ``build_order_store``); the
:class:`~workmanager.db.orm_orders.OrmOrderStore` serves SQLite, the embedded default,
under the same tests, and is never a fallback here. Every auto-approved order passes
through ``check_auto_approval`` and ``apply`` once, on the Celery control worker; each step
is **one statement** on a raw pooled connection (:mod:`workmanager.db.raw`), its own
transaction:

* **create order**: the order, its items, the ``proposed`` and ``planned`` events and the
  provenance row (when an agent proposed it). A known id or dedupe key raises
  ``UniqueViolation`` and stores nothing; the order holding it is then read on the same
  connection and returned (``OrderService.propose`` compares the proposals).
* **auto-approve** (a type with ``auto_approve`` and the default ``can_approve``):
  ``submitted → approved`` guarded by state and type, plus its event. When the guard
  matches nothing, or the type has a ``can_approve`` of its own, the order is locked and
  read with its items in a transaction on the same connection, the caller's check decides
  from that view (nothing to approve, refused; a missing order is :class:`NotFound`), and
  the same statement approves.
* **apply start**: claim the order and count the attempt (``UPDATE … WHERE state =
  'approved' AND <claimable>``, which is the lock and the check at once) and read the order
  with its items for the hooks.
* **apply record**: for the claim holder only, ``approved → completed`` with the diff (the
  claim released), the submitted items ``accepted → completed``, and the events
  ``applied``, per item ``accepted`` and ``completed``, then ``completed`` — in that order,
  as the ORM code writes them.

When an apply step's guard matches nothing, the order is read as it is now, on the same
connection, and returned as an :class:`~workmanager.db.store.OrderRow`: ``ApplyService``
names the outcome from that row (already done, claimed by another run, not approved), with
the same function for both stores; a missing order is :class:`NotFound`.

Each writing statement also returns the ``work_events`` rows it inserted (``json_agg`` in
id order, as text, parsed only while a listener is registered); after the commit they are
announced to :mod:`workmanager.events` as :mod:`workmanager.db.pending` announces the
ORM's, so listeners hear the same events in the same order on both databases. While an
idempotency claim is unmarked (:mod:`workmanager.db.claims`), the write runs in a
transaction that also marks the key (``claims.RAW_MARK``), as the hot submit does.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ... import events
from ...diff import Diff
from ...errors import NotFound
from ...services import apply_claim
from ...services.context import ServiceContext
from ...state_machine import check_item, check_order
from ...states import ItemState, OrderState
from ...types import Actor, AgentInfo, ApplyContext, ItemView, OrderView
from .. import claims
from ..models import PROVENANCE_TABLE, Item, Order
from ..order_store import ORDER_ROW_FIELDS, AutoCheck, OrderRow
from ..raw import AuditColumns, Conn, utc_row
from ..sql import queries


class PostgresOrderStore:
    """The control plane's statements on PostgreSQL (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.raw = ctx.db.raw

    def create_order(
        self, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> OrderRow | None:
        """One statement: the order, its items, the ``proposed`` and ``planned`` events and
        the provenance row (when an agent proposed it). After a ``UniqueViolation`` the
        order holding the id or key is read on the same connection."""
        provenance = self.ctx.provenance.row("propose", agent, order_id=order.id) if agent else None
        values: dict[str, Any] = {
            **{f"o_{c}": getattr(order, c) for c in _NEW_ORDER},
            "payload": Jsonb(order.payload),
            "meta": Jsonb(order.meta),
            "items": Jsonb([_new_item(i) for i in items]),
            "count": len(items),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        sql = _CREATE
        if provenance is not None:
            sql = _CREATE_WITH_PROVENANCE
            values.update(_PROVENANCE.params(provenance))
        refs = _claim_refs(provenance)

        def create(conn: Conn) -> tuple[dict[str, Any] | None, OrderRow | None]:
            try:
                return _write(conn, sql, values, refs)[0], None
            except UniqueViolation:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")  # the key's mark went with it
                found = _one(conn, _FIND_ORDER, {"id": order.id, "key": order.dedupe_key})
                if found is None:
                    raise
                return None, _order(found)

        created, found = self.raw.run(create)
        if created is not None:
            _announce(created)  # the connection is back in the pool
        return found

    def auto_approve(
        self, order_id: uuid.UUID, plain: list[str], check: AutoCheck, actor: Actor
    ) -> OrderRow | None:
        """One guarded statement for a ``plain`` type; otherwise, or when it matched
        nothing, the order locked and read with its items, ``check`` asked, and the same
        statement in that transaction (:meth:`_approve_locked`)."""
        check_order(OrderState.SUBMITTED, OrderState.APPROVED)
        values = {
            "order": order_id,
            "types": plain,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        if plain:
            rows = self.raw.run(lambda conn: _write(conn, _AUTO_APPROVE, values, {}))
            if rows:
                return self._approved(rows[0])
        row = self.raw.run(lambda conn: self._approve_locked(conn, order_id, check, values))
        return None if row is None else self._approved(row)

    def _approve_locked(
        self, conn: Conn, order_id: uuid.UUID, check: AutoCheck, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The order locked ``FOR UPDATE`` (as ``lock_order``), then its items read (as
        ``Order.items``), ``check`` asked of their view, and the approval in the same
        transaction."""
        cur = conn.cursor(row_factory=dict_row)
        items = conn.cursor(row_factory=dict_row)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(_LOCK_ORDER, values, prepare=True)
            items.execute(_ORDER_ITEMS, values, prepare=True)
        row = cur.fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            raise _not_found(order_id)
        view = _order_view(row, [_item_view(i) for i in items.fetchall()])
        if not check(view):  # raises to refuse (rolled back by the connection's reset)
            conn.execute("ROLLBACK")
            return None
        rows = _write(conn, _AUTO_APPROVE, {**values, "types": [view.type]}, {}, begun=True)
        assert rows, "the order is locked by this transaction"
        return rows[0]

    def _approved(self, row: dict[str, Any]) -> OrderRow:
        _announce(row)
        return _order(row)

    def start_apply(
        self, order_id: uuid.UUID, claim: str, now: datetime
    ) -> tuple[OrderView, ApplyContext] | OrderRow:
        """One statement claims the order, counts the attempt and reads it with its items;
        when its guard matched nothing, the order is read as it is now."""
        values = {
            "order": order_id,
            "now": now,
            "claim": claim,
            "claim_expires": now + apply_claim.lifetime(self.ctx.settings),
        }
        found = self.raw.run(
            lambda conn: _write(conn, _START_APPLY, values, {}) or _read(conn, order_id)
        )
        if not isinstance(found, list):
            return found
        first = found[0]
        items = [r for r in found if r["i_id"] is not None]
        view = _order_view(first, [_item_view(r, "i_", first["id"]) for r in items])
        tokens = {str(r["i_id"]): r["i_lease_token"] for r in items}
        ctx = ApplyContext(
            attempt=first["apply_attempts"], lease_tokens=tokens, actor=Actor.system()
        )
        return view, ctx

    def record_apply(
        self, order_id: uuid.UUID, claim: str, diff: Diff, actor: Actor
    ) -> tuple[OrderRow, dict[str, Any] | None]:
        """One statement records it all for the claim holder; when its guard matched
        nothing, the order is read as it is now."""
        check_order(OrderState.APPROVED, OrderState.APPLIED)
        check_order(OrderState.APPLIED, OrderState.COMPLETED)
        check_item(ItemState.SUBMITTED, ItemState.ACCEPTED)
        check_item(ItemState.ACCEPTED, ItemState.COMPLETED)
        data = diff.to_dict()
        values = {
            "order": order_id,
            "claim": claim,
            "now": self.ctx.clock(),
            "diff": Jsonb(data),
            "summary": diff.summary,
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        found = self.raw.run(
            lambda conn: _write(conn, _RECORD_APPLY, values, {}) or _read(conn, order_id)
        )
        if not isinstance(found, list):
            return found, None
        _announce(found[0])
        return _order(found[0]), data


def _write(
    conn: Conn, sql: str, values: dict[str, Any], refs: dict[str, str], *, begun: bool = False
) -> list[dict[str, Any]]:
    """Run one writing statement and commit it: in autocommit (one round trip), or to end
    the transaction ``begun`` on ``conn``. While an idempotency claim is unmarked, the
    key is marked ``committed`` (with ``refs``) in the same transaction, and a key taken
    over meanwhile rolls it all back (:func:`claims.taken_over`), as the ORM's commit
    does (:mod:`workmanager.db.claims`)."""
    cur = conn.cursor(row_factory=dict_row)
    claim = claims.unmarked_claim()
    if claim is None and not begun:
        cur.execute(sql, values, prepare=True)
        return cur.fetchall()
    mark = conn.cursor()
    with conn.pipeline():
        if not begun:
            conn.execute("BEGIN")
        cur.execute(sql, values, prepare=True)
        if claim is None:
            conn.execute("COMMIT")
        else:
            params = claims.raw_mark_params(claim, refs)
            if not refs:  # as the ORM's mark stores it: no refs, no body
                params["claim_refs"] = None
            mark.execute(claims.RAW_MARK, params)
    rows = cur.fetchall()
    if claim is not None:
        if mark.rowcount != 1:
            conn.execute("ROLLBACK")
            raise claims.taken_over()
        conn.execute("COMMIT")
        claim.marked = True
    return rows


def _claim_refs(provenance: dict[str, Any] | None) -> dict[str, str]:
    """What the key's mark stores: the order and item a keyed caller's provenance row
    names, as ``claims._refs`` reads them from the ORM's queued rows."""
    if not provenance or not provenance.get("idempotency_key_hash"):
        return {}
    return {k: str(provenance[k]) for k in ("order_id", "item_id") if provenance.get(k)}


def _one(conn: Conn, sql: str, values: dict[str, Any]) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(sql, values, prepare=True)
    return cur.fetchone()


def _read(conn: Conn, order_id: uuid.UUID) -> OrderRow:
    """The order as it is now (a statement of its own: it sees what the guard's statement
    waited for); :class:`NotFound` when there is none."""
    row = _one(conn, _READ_ORDER, {"order": order_id})
    if row is None:
        raise _not_found(order_id)
    return _order(row)


def _not_found(order_id: uuid.UUID) -> NotFound:
    return NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})


def _announce(row: dict[str, Any]) -> None:
    """After the commit: the listeners hear the events the statement inserted (its
    ``events`` column), as :mod:`workmanager.db.pending` announces the ORM's."""
    text = row.pop("events", None)
    if text is not None and events.listening():
        events.announce_rows(_event_rows(text))


def _event_rows(text: str) -> list[dict[str, Any]]:
    """The ``work_events`` rows of a statement's ``events`` column, typed as the ORM
    queues them (UUIDs, ``created_at`` an aware datetime in UTC)."""
    rows: list[dict[str, Any]] = json.loads(text)
    for row in rows:
        row["order_id"] = uuid.UUID(row["order_id"])
        row["item_id"] = uuid.UUID(row["item_id"]) if row["item_id"] else None
        row["created_at"] = datetime.fromisoformat(row["created_at"]).astimezone(UTC)
    return rows


def _new_item(item: Item) -> dict[str, Any]:
    row = {c: getattr(item, c) for c in _NEW_ITEM}
    row["id"] = str(item.id)
    row["created_at"] = item.created_at.isoformat()
    return row


def _order(row: dict[str, Any]) -> OrderRow:
    """An order row (every column of :class:`OrderRow`), datetimes in UTC."""
    return OrderRow(**utc_row(row))


def _order_view(row: dict[str, Any], items: list[ItemView]) -> OrderView:
    """The hooks' view of an order row, with its items' views."""
    return OrderView(
        id=row["id"],
        type=row["type"],
        state=row["state"],
        priority=row["priority"],
        payload=dict(row["payload"] or {}),
        meta=dict(row["meta"] or {}),
        items=tuple(items),
    )


def _item_view(r: dict[str, Any], prefix: str = "", order_id: uuid.UUID | None = None) -> ItemView:
    """The hooks' view of an item row: its columns named ``<prefix><column>`` (the order's
    id given when the row has no ``order_id`` of its own)."""
    return ItemView(
        id=r[f"{prefix}id"],
        order_id=r[f"{prefix}order_id"] if order_id is None else order_id,
        type=r[f"{prefix}type"],
        order_type=r[f"{prefix}order_type"],
        state=r[f"{prefix}state"],
        input=dict(r[f"{prefix}input"] or {}),
        result=r[f"{prefix}result"],
        assembled_result=r[f"{prefix}assembled_result"],
        attempts=r[f"{prefix}attempts"],
        max_attempts=r[f"{prefix}max_attempts"],
        parts_required=tuple(r[f"{prefix}parts_required"] or ()),
        progress=r[f"{prefix}progress"],
        tenant_id=r[f"{prefix}tenant_id"],
    )


#: The columns an :class:`OrderRow` holds (every column of ``work_orders``).
_ORDER_COLUMNS = ", ".join(ORDER_ROW_FIELDS)
_ITEM_COLUMNS = ", ".join(c.name for c in Item.__table__.columns)
_PROVENANCE = AuditColumns(PROVENANCE_TABLE)
_NEW_ORDER = (
    "id",
    "type",
    "state",
    "priority",
    "requested_by_type",
    "requested_by_id",
    "dedupe_key",
    "tenant_id",
    "created_at",
)
_NEW_ITEM = ("type", "tenant_id", "input", "max_attempts", "parts_required")

#: What each writing statement returns of the events it inserted, in the order written.
_RETURNED_EVENTS = queries.text("returned_events")
_EVENTS_COLUMN = queries.text("events_column")


def _create(provenance: bool) -> str:
    """propose's statement (``create_order``), with the order's provenance row or not."""
    return "\n" + queries.template(
        "create_order",
        returned_events=_RETURNED_EVENTS,
        events_column=_EVENTS_COLUMN,
        provenance=queries.template(
            "create_provenance",
            provenance_names=_PROVENANCE.sql_names,
            provenance_values=_PROVENANCE.sql_values,
        )
        if provenance
        else "",
    )


_CREATE = _create(provenance=False)
_CREATE_WITH_PROVENANCE = _create(provenance=True)
_EVENT_COLUMNS = queries.text("event_columns")

_AUTO_APPROVE = "\n" + queries.template(
    "auto_approve",
    order_columns=_ORDER_COLUMNS,
    event_columns=_EVENT_COLUMNS,
    returned_events=_RETURNED_EVENTS,
    events_column=_EVENTS_COLUMN,
)

#: The order locked as ``lock_order`` locks it, then its items as ``Order.items`` reads them.
_LOCK_ORDER = queries.template("lock_order", order_columns=_ORDER_COLUMNS)
_ORDER_ITEMS = queries.template("order_items", item_columns=_ITEM_COLUMNS)
_READ_ORDER = queries.template("read_order", order_columns=_ORDER_COLUMNS)
#: The order holding a proposal's id, else its dedupe key (as ``orm_orders.find_order``).
_FIND_ORDER = "\n" + queries.template("find_order", order_columns=_ORDER_COLUMNS)

_ITEM_FIELDS = (
    "id",
    "type",
    "order_type",
    "state",
    "input",
    "result",
    "assembled_result",
    "attempts",
    "max_attempts",
    "parts_required",
    "progress",
    "tenant_id",
    "lease_token",
)

_START_APPLY = "\n" + queries.template(
    "start_apply", item_fields=", ".join(f"i.{c} AS i_{c}" for c in _ITEM_FIELDS)
)

# Events are inserted in the order the ORM code writes them (``seq``): applied, then per
# item accepted and completed, then completed.
_RECORD_APPLY = "\n" + queries.template(
    "record_apply",
    order_columns=_ORDER_COLUMNS,
    event_columns=_EVENT_COLUMNS,
    returned_events=_RETURNED_EVENTS,
    events_column=_EVENTS_COLUMN,
)
