"""PostgreSQL hot path of the control plane: plain auto-approval and apply's two steps.

Every auto-approved order passes through ``check_auto_approval`` and ``apply`` once, on the
Celery control worker; through the ORM they cost more Python than their round trips. Here
each is **one statement** on a raw pooled connection (:mod:`workmanager.db.raw`), in its
own transaction:

* **auto-approve** (a type with ``auto_approve`` and the default ``can_approve``):
  ``submitted → approved`` guarded by state and type, plus its event.
* **apply start**: claim the order and count the attempt (``UPDATE … WHERE state =
  'approved' AND <claimable>``, which is the lock and the check at once) and read the order
  with its items for the hooks.
* **apply record**: for the claim holder only, ``approved → completed`` with the diff (the
  claim released), the submitted items
  ``accepted → completed``, and the events ``applied``, per item ``accepted`` and
  ``completed``, then ``completed`` — in that order, as the general path writes them.

Each returns ``None`` when its guard matched nothing; the caller's general path then reads
the order and decides (already done, refused, not found), so every outcome but the common
one keeps a single implementation. ``tests/integration/test_hotpath.py`` compares the rows
both paths leave.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..db.models import PROVENANCE_TABLE, Item, Order
from ..db.raw import AuditColumns, Conn, utc_row
from ..diff import Diff
from ..state_machine import check_item, check_order
from ..states import ItemState, OrderState
from ..types import Actor, ApplyContext, ItemView, OrderView
from . import apply_claim
from .context import ServiceContext
from .views import order_dict


def control_hot_path(ctx: ServiceContext) -> ControlHotPath | None:
    if not ctx.db.is_postgres:
        return None
    return ControlHotPath(ctx)


class ControlHotPath:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.raw = ctx.db.raw

    def create_order(
        self,
        order: Order,
        items: list[Item],
        actor: Actor,
        provenance: dict[str, Any] | None,
    ) -> None:
        """Insert a built order, its items, the ``proposed`` and ``planned`` events and the
        provenance row (when an agent proposed it). A known id or dedupe key raises
        ``UniqueViolation`` and stores nothing."""
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
        self.raw.run(lambda conn: conn.execute(sql, values, prepare=True))

    def auto_approve(
        self, order_id: uuid.UUID, types: list[str], actor: Actor
    ) -> dict[str, Any] | None:
        """The order as :func:`order_dict` shows it, approved; ``None`` if the guard (state
        ``submitted``, type in ``types``) did not hold."""
        check_order(OrderState.SUBMITTED, OrderState.APPROVED)
        values = {
            "order": order_id,
            "types": types,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        row = self.raw.run(lambda conn: _one(conn, _AUTO_APPROVE, values))
        return None if row is None else order_dict(_order(row))

    def start_apply(self, order_id: uuid.UUID, claim: str) -> tuple[OrderView, ApplyContext] | None:
        """Claim an approved order for this run and count the attempt; ``None`` if it is
        not approved or another run holds a live claim (the general path says which)."""
        now = self.ctx.clock()
        values = {
            "order": order_id,
            "now": now,
            "claim": claim,
            "claim_expires": now + apply_claim.lifetime(self.ctx.settings),
        }
        rows = self.raw.run(lambda conn: _all(conn, _START_APPLY, values))
        if not rows:
            return None
        first = rows[0]
        items = [r for r in rows if r["i_id"] is not None]
        view = OrderView(
            id=first["id"],
            type=first["type"],
            state=first["state"],
            priority=first["priority"],
            payload=dict(first["payload"] or {}),
            meta=dict(first["meta"] or {}),
            items=tuple(_item_view(r) for r in items),
        )
        tokens = {str(r["i_id"]): r["i_lease_token"] for r in items}
        ctx = ApplyContext(
            attempt=first["apply_attempts"], lease_tokens=tokens, actor=Actor.system()
        )
        return view, ctx

    def record_apply(
        self, order_id: uuid.UUID, claim: str, diff: Diff, actor: Actor
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(order dict, stored diff) once recorded; ``None`` if the order was no longer
        approved (another run recorded it, or it failed) or ``claim`` is no longer its."""
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
        row = self.raw.run(lambda conn: _one(conn, _RECORD_APPLY, values))
        return None if row is None else (order_dict(_order(row)), data)


def _new_item(item: Item) -> dict[str, Any]:
    row = {c: getattr(item, c) for c in _NEW_ITEM}
    row["id"] = str(item.id)
    row["created_at"] = item.created_at.isoformat()
    return row


def _one(conn: Conn, sql: str, values: dict[str, Any]) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(sql, values, prepare=True)
    return cur.fetchone()


def _all(conn: Conn, sql: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(sql, values, prepare=True)
    return cur.fetchall()


def _order(row: dict[str, Any]) -> Order:
    """An order row as ``order_dict`` reads it (attributes only), datetimes in UTC."""
    return cast(Order, SimpleNamespace(**utc_row(row)))


def _item_view(r: dict[str, Any]) -> ItemView:
    return ItemView(
        id=r["i_id"],
        order_id=r["id"],
        type=r["i_type"],
        order_type=r["i_order_type"],
        state=r["i_state"],
        input=dict(r["i_input"] or {}),
        result=r["i_result"],
        assembled_result=r["i_assembled_result"],
        attempts=r["i_attempts"],
        max_attempts=r["i_max_attempts"],
        parts_required=tuple(r["i_parts_required"] or ()),
        progress=r["i_progress"],
    )


_ORDER_COLUMNS = ", ".join(c.name for c in Order.__table__.columns)
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
_CREATE = """
WITH o AS (
  INSERT INTO work_orders (id, type, state, priority, payload, meta, requested_by_type,
         requested_by_id, dedupe_key, tenant_id, apply_attempts, created_at, updated_at,
         last_transitioned_at)
  VALUES (%(o_id)s, %(o_type)s, %(o_state)s, %(o_priority)s, %(payload)s, %(meta)s,
          %(o_requested_by_type)s, %(o_requested_by_id)s, %(o_dedupe_key)s, %(o_tenant_id)s, 0,
          %(o_created_at)s, %(o_created_at)s, %(o_created_at)s)
  RETURNING id, type, state, priority, created_at
), items AS (
  INSERT INTO work_items (id, order_id, type, order_type, priority, tenant_id, state, input,
         max_attempts, parts_required, attempts, lease_token, created_at, updated_at)
  SELECT x.id, o.id, x.type, o.type, o.priority, x.tenant_id, 'queued', x.input,
         x.max_attempts, x.parts_required, 0, 0, x.created_at, x.created_at
    FROM o, jsonb_to_recordset(%(items)s::jsonb) AS x (id uuid, type text, tenant_id text,
         input jsonb, max_attempts int, parts_required jsonb, created_at timestamptz)
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT id, NULL::uuid, e.event, %(actor_type)s, %(actor_id)s, e.payload, created_at
    FROM o, LATERAL (VALUES
      (1, 'proposed', jsonb_build_object('type', o.type, 'priority', o.priority)),
      (2, 'planned', jsonb_build_object('item_count', %(count)s::int))
    ) AS e (seq, event, payload)
   ORDER BY e.seq
)"""
_CREATE_WITH_PROVENANCE = (
    _CREATE
    + f""", provenance AS (
  INSERT INTO work_provenance (order_id, {_PROVENANCE.sql_names})
  SELECT id, {_PROVENANCE.sql_values} FROM o
)"""
)
_CREATE += "\nSELECT 1"
_CREATE_WITH_PROVENANCE += "\nSELECT 1"
_EVENT_COLUMNS = "order_id, item_id, event, actor_type, actor_id, payload, diff, created_at"

_AUTO_APPROVE = f"""
WITH o AS (
  UPDATE work_orders SET state = 'approved', last_transitioned_at = %(now)s,
         updated_at = %(now)s
   WHERE id = %(order)s AND state = 'submitted' AND type = ANY(%(types)s::text[])
  RETURNING {_ORDER_COLUMNS}
), events AS (
  INSERT INTO work_events ({_EVENT_COLUMNS})
  SELECT id, NULL, 'approved', %(actor_type)s, %(actor_id)s, NULL, NULL, %(now)s FROM o
)
SELECT * FROM o"""

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
    "lease_token",
)

_START_APPLY = f"""
WITH o AS (
  UPDATE work_orders SET apply_attempts = apply_attempts + 1, updated_at = %(now)s,
         {apply_claim.TAKE_SQL}
   WHERE id = %(order)s AND state = 'approved' AND {apply_claim.CLAIMABLE_SQL}
  RETURNING id, type, state, priority, payload, meta, apply_attempts
)
SELECT o.*, {", ".join(f"i.{c} AS i_{c}" for c in _ITEM_FIELDS)}
  FROM o LEFT JOIN work_items i ON i.order_id = o.id
 ORDER BY i.created_at"""

# Events are inserted in the order the general path writes them (``seq``): applied, then
# per item accepted and completed, then completed.
_RECORD_APPLY = f"""
WITH o AS (
  UPDATE work_orders SET state = 'completed', diff = %(diff)s, applied_at = %(now)s,
         completed_at = %(now)s, last_error = NULL, last_transitioned_at = %(now)s,
         updated_at = %(now)s, {apply_claim.RELEASE_SQL}
   WHERE id = %(order)s AND state = 'approved' AND {apply_claim.HELD_SQL}
  RETURNING {_ORDER_COLUMNS}
), items AS (
  UPDATE work_items SET state = 'completed', accepted_at = %(now)s, updated_at = %(now)s
   WHERE order_id = %(order)s AND state = 'submitted' AND EXISTS (SELECT 1 FROM o)
  RETURNING id
), events AS (
  INSERT INTO work_events ({_EVENT_COLUMNS})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, payload, diff, %(now)s
    FROM (
      SELECT 0 AS seq, o.id AS order_id, NULL::uuid AS item_id, 'applied' AS event,
             jsonb_build_object('summary', %(summary)s::text, 'attempt', o.apply_attempts)
               AS payload,
             %(diff)s::jsonb AS diff
        FROM o
      UNION ALL
      SELECT 1 + k.k * 2 + x.n, %(order)s::uuid, k.id, x.event, NULL::jsonb, NULL::jsonb
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM items) AS k
       CROSS JOIN (VALUES (0, 'accepted'), (1, 'completed')) AS x (n, event)
      UNION ALL
      SELECT 1000000000, o.id, NULL, 'completed', NULL, NULL FROM o
    ) AS ordered
   ORDER BY seq
)
SELECT * FROM o"""
