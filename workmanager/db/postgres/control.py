"""PostgreSQL's order store (:class:`PostgresOrderStore`): propose's insert (and a refused
proposal's record: insert, drop), approval, apply's two steps and an event alone here; the
admin changes (reject, rework, unblock, the retries, a failed apply, dead-lettering,
pruning) in :mod:`.order_admin`, the helpers both use in :mod:`.order_rows`.

On PostgreSQL these statements are the one path of these operations (the
:class:`~workmanager.db.order_store.OrderStore` port, chosen by ``build_order_store``); the
:class:`~workmanager.db.orm_orders.OrmOrderStore` serves SQLite, the embedded default,
under the same tests, and is never a fallback here. Every auto-approved order passes
through ``check_auto_approval`` and ``apply`` once, on the Celery control worker; each step
is **one statement** on a raw pooled connection (:mod:`workmanager.db.raw`), its own
transaction:

* **create order**: the order, its items, the ``proposed`` and ``planned`` events and the
  provenance row (when an agent proposed it). A known id or dedupe key raises
  ``UniqueViolation`` and stores nothing; the order holding it is then read on the same
  connection and returned (``OrderService.propose`` compares the proposals).
* **approve** (by hand, or automatic): ``submitted → approved`` guarded by state and a
  ``plain`` type (the default ``can_approve``), plus its event and the agent's provenance.
  When the guard matches nothing, or the type has a ``can_approve`` of its own, the order
  is locked and read with its items in a transaction on the same connection, the caller's
  check decides from that view (nothing to approve, refused; a missing order is
  :class:`NotFound`), and the same statement approves.
* **apply start**: claim the order and count the attempt (``UPDATE … WHERE state =
  'approved' AND <claimable>``, which is the lock and the check at once) and read the order
  with its items for the hooks.
* **apply record**: for the claim holder only, ``approved → completed`` with the diff (the
  claim released), the submitted items ``accepted → completed``, and the events
  ``applied``, per item ``accepted`` and ``completed``, then ``completed`` — in that order,
  as the ORM code writes them.

When an apply step's guard matches nothing, the order is read as it is now, on the same
connection, and returned as an :class:`~workmanager.db.order_store.OrderRow`: ``ApplyService``
names the outcome from that row (already done, claimed by another run, not approved), with
the same function for both stores; a missing order is :class:`NotFound`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from ...diff import Diff
from ...errors import NotFound
from ...services import apply
from ...services.context import ServiceContext
from ...state_machine import check_item, check_order
from ...states import ItemState, OrderState
from ...types import Actor, AgentInfo, ApplyContext, OrderView
from ..models import Item, Order
from ..order_store import ApprovalCheck, DropCheck, OrderRow, inserted_or_held
from ..raw import Conn
from ..sql import queries
from . import order_rows as rows
from .guarded import one
from .order_admin import PostgresOrderAdmin


class PostgresOrderStore(PostgresOrderAdmin):
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
            values.update(rows.PROVENANCE.params(provenance))
        refs = rows.claim_refs(provenance)

        def create(conn: Conn) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            return inserted_or_held(
                lambda: rows.write(conn, sql, values, refs)[0],
                lambda: _holder(conn, _FIND_ORDER, {"id": order.id, "key": order.dedupe_key}),
                UniqueViolation,
            )

        created, found = self.raw.run(create)
        if created is not None:
            rows.announce(created)  # the connection is back in the pool
        return None if found is None else rows.order(found)

    def refuse(self, order: Order, actor: Actor) -> tuple[OrderRow, bool]:
        """One statement: the record and its event. After a ``UniqueViolation`` the order
        holding the id is read on the same connection."""
        error = dict(order.last_error or {})
        values: dict[str, Any] = {
            **{f"o_{c}": getattr(order, c) for c in _REFUSED},
            "o_payload": Jsonb(order.payload),
            "o_meta": Jsonb(order.meta),
            "o_last_error": Jsonb(order.last_error),
            "now": self.ctx.clock(),
            "payload": Jsonb({"code": error.get("code"), "details": error.get("details")}),
            "message": error.get("message"),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }

        def refuse(conn: Conn) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            return inserted_or_held(
                lambda: rows.write(conn, _REFUSE, values, {})[0],
                lambda: _holder(conn, rows.READ_ORDER, {"order": order.id}),
                UniqueViolation,
            )

        made, held = self.raw.run(refuse)
        row = made if made is not None else held
        assert row is not None
        rows.announce(row)
        return rows.order(row), made is not None

    def drop_refused(self, order_id: uuid.UUID, check: DropCheck) -> bool:
        """``BEGIN``, the order locked and its items read (one round trip), ``check``
        asked, then the delete and ``COMMIT`` (one round trip)."""

        def drop(conn: Conn) -> bool:
            try:
                row, items = rows.locked(conn, order_id)
            except NotFound:
                return False
            if not check(rows.order(row), [i["state"] for i in items]):
                conn.execute("ROLLBACK")
                return False
            return bool(rows.write(conn, _DROP, {"order": order_id}, {}, begun=True))

        return self.raw.run(drop)

    def record_event(
        self, order_id: uuid.UUID, event: str, actor: Actor, payload: dict[str, Any]
    ) -> None:
        values = {
            "order": order_id,
            "event": event,
            "payload": Jsonb(payload),
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        (row,) = self.raw.run(lambda conn: rows.write(conn, _RECORD_EVENT, values, {}))
        rows.announce(row)

    def approve(
        self,
        order_id: uuid.UUID,
        plain: list[str],
        check: ApprovalCheck,
        actor: Actor,
        agent: AgentInfo | None = None,
    ) -> OrderRow | None:
        """One guarded statement for a ``plain`` type; otherwise, or when it matched
        nothing, the order locked and read with its items, ``check`` asked, and the same
        statement in that transaction (:meth:`_approve_locked`)."""
        check_order(OrderState.SUBMITTED, OrderState.APPROVED)
        provenance = self.ctx.provenance.row("approve", agent, order_id=order_id) if agent else None
        values = {
            "order": order_id,
            "types": plain,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        sql = _APPROVE
        if provenance is not None:
            sql = _APPROVE_WITH_PROVENANCE
            values.update(rows.PROVENANCE.params(provenance))
        refs = rows.claim_refs(provenance)
        if plain:
            found = self.raw.run(lambda conn: rows.write(conn, sql, values, refs))
            if found:
                return self._approved(found[0])
        row = self.raw.run(
            lambda conn: self._approve_locked(conn, order_id, check, sql, values, refs)
        )
        return None if row is None else self._approved(row)

    def _approve_locked(
        self,
        conn: Conn,
        order_id: uuid.UUID,
        check: ApprovalCheck,
        sql: str,
        values: dict[str, Any],
        refs: dict[str, str],
    ) -> dict[str, Any] | None:
        """The order locked and its items read (:func:`rows.locked`), ``check`` asked of
        their view, and the approval in the same transaction."""
        row, items = rows.locked(conn, order_id)
        view = rows.order_view(row, [rows.item_view(i) for i in items])
        if not check(view):  # raises to refuse (rolled back by the connection's reset)
            conn.execute("ROLLBACK")
            return None
        found = rows.write(conn, sql, {**values, "types": [view.type]}, refs, begun=True)
        assert found, "the order is locked by this transaction"
        return found[0]

    @staticmethod
    def _approved(row: dict[str, Any]) -> OrderRow:
        rows.announce(row)
        return rows.order(row)

    def find(self, order_id: uuid.UUID | None, dedupe_key: str | None) -> OrderRow | None:
        if order_id is None and dedupe_key is None:
            return None
        values = {"id": order_id, "key": dedupe_key}
        found = self.raw.run(lambda conn: one(conn, _FIND_ORDER, values))
        return None if found is None else rows.order(found)

    def start_apply(
        self, order_id: uuid.UUID, claim: str, now: datetime
    ) -> tuple[OrderView, ApplyContext] | OrderRow:
        """One statement claims the order, counts the attempt and reads it with its items;
        when its guard matched nothing, the order is read as it is now."""
        values = {
            "order": order_id,
            "now": now,
            "claim": claim,
            "claim_expires": now + apply.lifetime(self.ctx.settings),
        }
        found = self.raw.run(
            lambda conn: rows.write(conn, _START_APPLY, values, {}) or rows.read(conn, order_id)
        )
        if not isinstance(found, list):
            return found
        first = found[0]
        items = [r for r in found if r["i_id"] is not None]
        view = rows.order_view(first, [rows.item_view(r, "i_", first["id"]) for r in items])
        tokens = {str(r["i_id"]): r["i_lease_token"] for r in items}
        ctx = ApplyContext(
            attempt=first["apply_attempts"],
            lease_tokens=tokens,
            actor=Actor.system(),
            failures=apply.failures(first["last_error"]),
        )
        return view, ctx

    def renew_apply(self, order_id: uuid.UUID, claim: str, expires: datetime) -> bool:
        values = {"order": order_id, "claim": claim, "claim_expires": expires}
        return self.raw.run(lambda conn: one(conn, _RENEW_APPLY, values)) is not None

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
            lambda conn: rows.write(conn, _RECORD_APPLY, values, {}) or rows.read(conn, order_id)
        )
        if not isinstance(found, list):
            return found, None
        rows.announce(found[0])
        return rows.order(found[0]), data


def _new_item(item: Item) -> dict[str, Any]:
    row = {c: getattr(item, c) for c in _NEW_ITEM}
    row["id"] = str(item.id)
    row["created_at"] = item.created_at.isoformat()
    return row


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
_REFUSED = ("id", "type", "priority", "requested_by_type", "requested_by_id", "tenant_id")
_REFUSE = rows.statement("refuse_order")
_DROP = queries.text("drop_order")
_RECORD_EVENT = rows.statement("record_event")

#: propose's statement (``create_order``), with the order's provenance row or not.
_CREATE = rows.statement("create_order", provenance=False)
_CREATE_WITH_PROVENANCE = rows.statement("create_order", provenance=True)
_APPROVE = rows.statement("approve", provenance=False)
_APPROVE_WITH_PROVENANCE = rows.statement("approve", provenance=True)
#: The order holding a proposal's id, else its dedupe key (as ``orm_orders.find_order``).
_FIND_ORDER = "\n" + queries.template("find_order", order_columns=rows.ORDER_COLUMNS)

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
    "start_apply",
    item_fields=", ".join(f"i.{c} AS i_{c}" for c in _ITEM_FIELDS),
    claimable=queries.text("apply_claimable"),
)

_RENEW_APPLY = queries.text("renew_apply")

# Events are inserted in the order the ORM code writes them (``seq``): applied, then per
# item accepted and completed, then completed.
_RECORD_APPLY = rows.statement("record_apply")


def _holder(conn: Conn, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """After a unique violation: the transaction rolled back (an idempotency key's mark
    with it), the row that holds the id or key, read on the same connection."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute("ROLLBACK")
    return one(conn, sql, params)
