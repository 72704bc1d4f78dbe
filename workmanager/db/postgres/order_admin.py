"""PostgreSQL's admin changes of an order (:class:`PostgresOrderAdmin`, a part of
:class:`~workmanager.db.postgres.control.PostgresOrderStore`): reject and rework, requeue's
unblock, retry (of an order or of an item), a failed apply, dead-lettering, pruning,
maintenance's touches.

Each is **one statement** in autocommit (``queries.sql``'s block of admin changes), its
guard the UPDATE's ``WHERE`` and so the order's lock, except the retries, whose rules read
the items: ``BEGIN`` with the order (then the item) locked and the items read (one round
trip), the caller's rule decides in Python, then the statement and ``COMMIT`` (one round
trip). A guard that matched nothing writes nothing; the order is read as it is now on the
same connection and returned (:class:`~workmanager.db.order_store.OrderChange` with
``done`` False), so the service names the error from it with the function SQLite's store
uses — no second path. What each locks and keeps atomic:
:class:`~workmanager.db.order_store.OrderStore`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...errors import NotFound
from ...lease_tokens import Holder
from ...leases.selection import Shape
from ...services.context import ServiceContext
from ...services.views import item_dict
from ...state_machine import check_item, check_order, settled_after_retry
from ...states import HELD_ITEM_STATES, OPEN_ORDER_STATES, ItemState, OrderState
from ...types import Actor, AgentInfo
from ..models import EVENTS_TABLE, PROVENANCE_TABLE
from ..order_store import LATE_QUEUED, ItemRetryCheck, OrderChange, OrderRow, RetryCheck
from ..raw import Conn, RawPostgres
from ..sql import queries
from ..store import drop_holds
from . import order_rows as rows
from .sql import ITEM_COLUMNS_SQL, LOCK_ITEM, eligible_where
from .values import item_of_row


class PostgresOrderAdmin:
    """The admin changes' statements (see the module's docstring)."""

    ctx: ServiceContext
    raw: RawPostgres

    def reject(
        self,
        order_id: uuid.UUID,
        errors: list[Any],
        actor: Actor,
        rework: bool,
        agent: AgentInfo | None,
    ) -> OrderChange:
        check_order(OrderState.SUBMITTED, OrderState.REJECTED)
        check_item(ItemState.SUBMITTED, ItemState.REJECTED)
        to = OrderState.QUEUED if rework else OrderState.REJECTED
        provenance = self.ctx.provenance.row("reject", agent, order_id=order_id) if agent else None
        values = {
            "from": OrderState.SUBMITTED.value,
            "item_from": ItemState.SUBMITTED.value,
            "to": to.value,
            "item_to": ItemState.QUEUED.value if rework else ItemState.REJECTED.value,
            "error": Jsonb({"code": "rejected", "errors": errors}),
            "payload": Jsonb({"errors": errors, "allow_rework": rework}),
            "reject": True,
            "rework": rework,
        }
        sql = _REJECT
        if provenance is not None:
            sql = _REJECT_WITH_PROVENANCE
            values.update(rows.PROVENANCE.params(provenance))
        return self._change(sql, order_id, actor, values, rows.claim_refs(provenance))

    def rework(self, order_id: uuid.UUID, actor: Actor) -> OrderChange:
        check_order(OrderState.REJECTED, OrderState.QUEUED)
        check_item(ItemState.REJECTED, ItemState.QUEUED)
        values = {
            "from": OrderState.REJECTED.value,
            "item_from": ItemState.REJECTED.value,
            "to": OrderState.QUEUED.value,
            "item_to": ItemState.QUEUED.value,
            "error": None,
            "payload": None,
            "reject": False,
            "rework": True,
        }
        return self._change(_REJECT, order_id, actor, values, {})

    def unblock(self, order_id: uuid.UUID) -> OrderChange:
        values = {"order": order_id, "now": self.ctx.clock()}
        found = self.raw.run(lambda conn: rows.write(conn, _UNBLOCK, values, {}))
        if not found:
            raise rows.not_found(order_id)
        done = found[0].pop("done")  # moved on (failed, submitted) since requeue looked
        return dataclasses.replace(_changed(found[0]), done=done)

    def retry(self, order_id: uuid.UUID, check: RetryCheck, actor: Actor) -> OrderChange:
        values = {
            "order": order_id,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }

        def retry(conn: Conn) -> dict[str, Any]:
            row, items = rows.locked(conn, order_id)
            try:
                to = check(rows.order(dict(row)), [i["state"] for i in items])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            then = settled_after_retry(to, [i["state"] for i in items])
            found = rows.write(conn, _RETRY, {**values, "to": to, "then": then}, {}, begun=True)
            assert found, "the order is locked by this transaction"
            return found[0]

        return _changed(self.raw.run(retry))

    def retry_item(self, item_id: uuid.UUID, check: ItemRetryCheck, actor: Actor) -> dict[str, Any]:
        values = {
            "item": item_id,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }

        def retry(conn: Conn) -> dict[str, Any]:
            order = conn.cursor(row_factory=dict_row)
            item = conn.cursor(row_factory=dict_row)
            others = conn.cursor()
            with conn.pipeline():
                conn.execute("BEGIN")
                order.execute(_LOCK_ITEM_ORDER, values, prepare=True)
                item.execute(LOCK_ITEM, {"id": item_id}, prepare=True)
                others.execute(_OTHER_ITEMS, values, prepare=True)
            found = item.fetchone()
            siblings = others.fetchall()
            try:
                if found is None:
                    raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
                check(item_dict(item_of_row(found)), [i for i, s in siblings if s == "failed"])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            then = settled_after_retry(OrderState.QUEUED, [s for _, s in siblings])
            written = rows.write(conn, _RETRY_ITEM, {**values, "then": then}, {}, begun=True)
            assert written, "the item is locked by this transaction"
            return written[0]

        row = self.raw.run(retry)
        rows.announce(row)
        return item_dict(item_of_row(row))

    def fail_apply(
        self, order_id: uuid.UUID, claim: str, error: dict[str, Any], final: bool, actor: Actor
    ) -> OrderChange:
        check_order(OrderState.APPROVED, OrderState.FAILED)
        values = {
            "claim": claim,
            "final": final,
            "error": Jsonb({"code": "apply_failed", **error}),
            "info": Jsonb(error),
        }
        return self._change(_FAIL_APPLY, order_id, actor, values, {})

    def dead_letter(self, cutoff: datetime, actor: Actor) -> tuple[int, int]:
        check_order(OrderState.FAILED, OrderState.DEAD_LETTERED)
        for state in (ItemState.FAILED, ItemState.QUEUED, *HELD_ITEM_STATES):
            check_item(state, ItemState.DEAD_LETTERED)
        now = self.ctx.clock()
        values = {
            "cutoff": cutoff,
            "now": now,
            "recent": now - LATE_QUEUED,
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        (row,) = self.raw.run(lambda conn: rows.write(conn, _DEAD_LETTER, values, {}))
        rows.announce(row)
        ended = [
            (uuid.UUID(e["id"]), e["type"], Holder(e["agent"] or "", e["token"], e["secret"]))
            for e in row["ended"]
        ]
        drop_holds(self.ctx.leases.lock, ended)  # the leases ended with their order
        return int(row["orders"]), int(row["items"])

    def touch_queued(
        self, order_id: uuid.UUID | None, before: datetime | None, now: datetime, limit: int
    ) -> list[tuple[uuid.UUID, str]]:
        values = {"q_order": order_id, "before": before, "now": now, "limit": limit}
        sql = _TOUCH_ORDER if order_id is not None else _TOUCH_UNTOUCHED
        found = self.raw.run(lambda conn: rows.write(conn, sql, values, {}))
        return [(r["id"], r["order_type"]) for r in found]

    def claim_stuck_applies(self, cutoff: datetime, now: datetime) -> list[uuid.UUID]:
        return self._claim_stale(_STUCK_APPLIES, {"cutoff": cutoff, "now": now})

    def claim_stuck_auto_approvals(
        self, cutoff: datetime, now: datetime, types: list[str]
    ) -> list[uuid.UUID]:
        values = {"cutoff": cutoff, "now": now, "types": types}
        return self._claim_stale(_STUCK_AUTO_APPROVALS, values)

    def _claim_stale(self, sql: str, values: dict[str, Any]) -> list[uuid.UUID]:
        return [r["id"] for r in self.raw.run(lambda conn: rows.write(conn, sql, values, {}))]

    def prune(self, order_ids: list[uuid.UUID], states: Sequence[str]) -> tuple[int, int]:
        values = {"ids": order_ids, "states": list(states)}
        (row,) = self.raw.run(lambda conn: rows.write(conn, _PRUNE_ORDERS, values, {}))
        return int(row["orders"]), int(row["items"])

    def prune_audit(
        self, audit: str, cutoff: datetime, limit: int, after: int = 0
    ) -> tuple[int, int]:
        values = {"cutoff": cutoff, "limit": limit, "open": sorted(OPEN_ORDER_STATES)}
        values["after"] = after
        (row,) = self.raw.run(lambda conn: rows.write(conn, _PRUNE_AUDIT[audit], values, {}))
        return int(row["deleted"]), int(row["last"])

    def _change(
        self,
        sql: str,
        order_id: uuid.UUID,
        actor: Actor,
        values: dict[str, Any],
        refs: dict[str, str],
    ) -> OrderChange:
        """One guarded statement; when it matched nothing, the order as it is now."""
        values = {
            **values,
            "order": order_id,
            "now": self.ctx.clock(),
            "actor_type": actor.type,
            "actor_id": actor.id,
        }
        found = self.raw.run(
            lambda conn: rows.write(conn, sql, values, refs) or rows.read(conn, order_id)
        )
        if isinstance(found, OrderRow):
            return OrderChange(found, done=False)
        return _changed(found[0])


def _changed(row: dict[str, Any]) -> OrderChange:
    """The change a statement made (its order row, with the ids of the items it put back
    in the queue), its events announced (after the commit)."""
    rows.announce(row)
    items = tuple(row.pop("item_ids", None) or ())
    return OrderChange(rows.order(row), done=True, items=items)


_REJECT = rows.statement("reject_order", provenance=False)
_REJECT_WITH_PROVENANCE = rows.statement("reject_order", provenance=True)
_UNBLOCK = rows.statement("unblock_order")
_RETRY = rows.statement("retry_order")
_FAIL_APPLY = rows.statement("fail_apply")
_LOCK_ITEM_ORDER = queries.template("lock_item_order", order_columns=rows.ORDER_COLUMNS)
_OTHER_ITEMS = queries.text("other_items")
_RETRY_ITEM = "\n" + queries.template(
    "retry_item",
    item_columns=ITEM_COLUMNS_SQL,
    event_columns=rows.EVENT_COLUMNS,
    returned_events=rows.RETURNED_EVENTS,
    events_column=rows.EVENTS_COLUMN,
)
_DEAD_LETTER = rows.statement("dead_letter")
_PRUNE_ORDERS = rows.statement("prune_orders")
#: One batch of an audit table's old rows, by ``prune_audit``'s name for it.
_PRUNE_AUDIT = {
    audit: queries.template("prune_audit", table=table)
    for audit, table in (("events", EVENTS_TABLE.name), ("provenance", PROVENANCE_TABLE.name))
}


def _touch(where: str) -> str:
    return "\n" + queries.template("touch_queued", eligible=where)


_TOUCH_ORDER = _touch(eligible_where(Shape(order=True)))
_TOUCH_UNTOUCHED = _touch(eligible_where(Shape()) + " AND " + queries.text("untouched_since"))
_STUCK_APPLIES = "\n" + queries.template("claim_stale", stale=queries.text("apply_claimable"))
_STUCK_AUTO_APPROVALS = "\n" + queries.template(
    "claim_stale", stale=queries.text("stale_auto_approvals")
)
