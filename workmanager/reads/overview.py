"""Reads for the review console: the review queue, what each item's agents did, and the
dashboard's figures. Plain queries, portable across SQLite and PostgreSQL; no rule lives
here (the console acts only through :mod:`.operations` and :mod:`.admin`).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from ..db.models import Event, Item, Order, Provenance
from ..db.predicates import count_rows
from ..diff import Diff
from ..errors import NotFound
from ..jsonvalues import json_value
from ..services.context import ServiceContext
from ..services.views import iso, order_view
from ..states import ItemState, OrderState
from ..usercode import USER_CODE_FAILURES
from .expiry import HELD, lock_ends
from .queries import Queries

log = logging.getLogger("workmanager.console")

#: Provenance actions by which an agent produced (part of) a result.
PRODUCING_ACTIONS = ("submit", "finalize", "submit-part")
#: The most provenance rows and events one order page shows.
PROVENANCE_SHOWN, EVENTS_SHOWN = 2_000, 500
#: Item states shown as the queue on the dashboard (the rest are finished).
OPEN_ITEM_STATES = (
    ItemState.QUEUED.value,
    ItemState.LEASED.value,
    ItemState.IN_PROGRESS.value,
    ItemState.SUBMITTED.value,
    ItemState.FAILED.value,
)


class Overview:
    """review_queue · producers · submissions · provenance · dashboard."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- the review queue -------------------------------------------------------------
    def review_queue(self, limit: int = 100, tenant: str | None = None) -> dict[str, Any]:
        """Orders waiting for a person (``submitted``), oldest submission first, with
        their item counts and the agents and models that produced their results; only
        ``tenant``'s for a token bound to one (services/tokens.py)."""
        waiting = and_(Order.state == OrderState.SUBMITTED.value, *_of_tenant(Order, tenant))
        since = func.coalesce(Order.submitted_at, Order.created_at)
        count = (
            select(func.count(Item.id))
            .where(Item.order_id == Order.id)
            .correlate(Order)
            .scalar_subquery()
        )
        stmt = select(Order, count).where(waiting).order_by(since, Order.id).limit(limit)
        with self.ctx.db.transaction() as s:
            rows = s.execute(stmt).all()
            total = count_rows(s, Order, waiting)
        now = self.ctx.clock()
        producers = self.producers([order.id for order, _ in rows])
        data = []
        for order, items in rows:
            submitted = order.submitted_at or order.created_at
            data.append(
                {
                    "id": str(order.id),
                    "type": order.type,
                    "priority": order.priority,
                    "submitted_at": iso(submitted),
                    "age_seconds": max(0.0, (now - submitted).total_seconds()),
                    "items_count": int(items),
                    "producers": producers.get(order.id, []),
                }
            )
        return {"data": data, "total": total}

    def producers(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
        """Per order, the distinct (agent, version, model) that submitted results."""
        if not order_ids:
            return {}
        stmt = (
            select(
                Provenance.order_id,
                Provenance.agent_id,
                Provenance.agent_version,
                Provenance.model_name,
            )
            .where(
                Provenance.order_id.in_(order_ids),
                Provenance.action.in_(PRODUCING_ACTIONS),
            )
            .distinct()
        )
        out: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
        with self.ctx.db.transaction() as s:
            for order_id, agent_id, version, model in s.execute(stmt):
                if order_id is None:
                    continue
                out[order_id].append({"agent_id": agent_id, "version": version, "model": model})
        for rows in out.values():
            rows.sort(key=lambda r: (r["agent_id"] or "", r["model"] or ""))
        return dict(out)

    # --- one order --------------------------------------------------------------------
    def provenance(
        self, order_id: uuid.UUID, item_ids: Sequence[uuid.UUID]
    ) -> dict[str, list[dict[str, Any]]]:
        """The provenance rows of the order's items ``item_ids`` and its order-level rows,
        by item id (``""`` for the order's), oldest first: who did what, with which
        version and model, under which request id. (The order's first 500 rows, whatever
        their item, left an item past them with none on its page.)"""
        of_items = or_(Provenance.item_id.in_(item_ids), Provenance.item_id.is_(None))
        stmt = (
            select(Provenance)
            .where(Provenance.order_id == order_id, Provenance.action != "heartbeat", of_items)
            .order_by(Provenance.id)
            .limit(PROVENANCE_SHOWN)
        )
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        with self.ctx.db.transaction() as s:
            for row in s.scalars(stmt):
                out[str(row.item_id) if row.item_id else ""].append(
                    {
                        "action": row.action,
                        "agent_id": row.agent_id,
                        "agent_name": row.agent_name,
                        "agent_version": row.agent_version,
                        "model_name": row.model_name,
                        "runtime": row.runtime,
                        "request_id": row.request_id,
                        "principal": row.principal,
                        "created_at": iso(row.created_at),
                    }
                )
        return dict(out)

    def submissions(
        self, order_id: uuid.UUID, item_ids: Sequence[uuid.UUID]
    ) -> dict[str, dict[str, Any]]:
        """Per item id of ``item_ids``, the latest submission's evidence, notes and agent
        (from its ``submitted`` event)."""
        stmt = (
            select(Event)
            .where(
                Event.order_id == order_id,
                Event.event == ItemState.SUBMITTED.value,
                Event.item_id.in_(item_ids),
            )
            .order_by(Event.id)
        )
        out: dict[str, dict[str, Any]] = {}
        with self.ctx.db.transaction() as s:
            for event in s.scalars(stmt):
                if event.item_id is not None:
                    payload = dict(event.payload or {})
                    out[str(event.item_id)] = {
                        "agent_id": payload.get("agent_id"),
                        "evidence": payload.get("evidence"),
                        "notes": payload.get("notes"),
                        "at": iso(event.created_at),
                    }
        return out

    def timeline(self, order_id: uuid.UUID) -> tuple[list[dict[str, Any]], int]:
        """The order's newest :data:`EVENTS_SHOWN` events, oldest first, and how many it
        has (an order of 10,000 items has some 30,000: its page printed them all)."""
        rows = Queries(self.ctx).events(order_id, newest=EVENTS_SHOWN)
        if len(rows) < EVENTS_SHOWN:
            return rows, len(rows)
        with self.ctx.db.transaction() as s:
            return rows, count_rows(s, Event, Event.order_id == order_id)

    def preview(self, order_id: uuid.UUID) -> dict[str, Any] | None:
        """The type's :meth:`~workmanager.OrderType.preview` of a submitted order, as a
        diff dict; ``None`` when the order is not waiting or the type gives none; an
        ``{"error": ...}`` when the hook raised (logged, never a failed page)."""
        with self.ctx.db.transaction() as s:
            order = s.get(Order, order_id)
            if order is None or order.state != OrderState.SUBMITTED.value:
                return None
            view = order_view(order)
        if view.type not in self.ctx.registry:
            return None
        try:
            diff = self.ctx.registry.get(view.type).preview(view)
            if diff is not None and not isinstance(diff, Diff):
                raise TypeError(f"preview() returned {type(diff).__name__}, not a Diff or None")
            # shown as JSON on the order page: a diff nested past what JSON pages take
            # made the page a 500
            return None if diff is None else json_value(diff.to_dict(), "preview()")
        except USER_CODE_FAILURES as exc:
            log.warning("preview of order %s raised", order_id, exc_info=True)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def item_order(self, item_id: uuid.UUID) -> uuid.UUID:
        with self.ctx.db.transaction() as s:
            order_id = s.scalar(select(Item.order_id).where(Item.id == item_id))
        if order_id is None:
            raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
        return order_id

    # --- the dashboard ----------------------------------------------------------------
    def dashboard(
        self, window: timedelta = timedelta(hours=1), tenant: str | None = None
    ) -> dict[str, Any]:
        """Queue depth and leases by type and state, leases expiring within a minute,
        throughput and apply failures over ``window``, agents seen within it; counted
        within ``tenant`` for a token bound to one."""
        now = self.ctx.clock()
        since = now - window
        orders = select(Order.state, func.count()).where(*_of_tenant(Order, tenant))
        with self.ctx.db.transaction() as s:
            return {
                "now": iso(now),
                "window_seconds": int(window.total_seconds()),
                "items": self._items_by_type(s, tenant),
                "orders": {
                    str(state): int(n) for state, n in s.execute(orders.group_by(Order.state))
                },
                "expiring": self._expiring(s, now, tenant, self.ctx),
                "throughput": self._throughput(s, since, tenant),
                "agents": self._agents(s, since, tenant),
            }

    @staticmethod
    def _items_by_type(s: Any, tenant: str | None) -> list[dict[str, Any]]:
        stmt = (
            select(Item.order_type, Item.state, func.count())
            .where(Item.state.in_(OPEN_ITEM_STATES), *_of_tenant(Item, tenant))
            .group_by(Item.order_type, Item.state)
        )
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for order_type, state, n in s.execute(stmt):
            table[order_type][state] = int(n)
        return [
            {"type": t, **{state: table[t].get(state, 0) for state in OPEN_ITEM_STATES}}
            for t in sorted(table)
        ]

    @staticmethod
    def _expiring(
        s: Any,
        now: datetime,
        tenant: str | None,
        ctx: ServiceContext,
        within: timedelta = timedelta(minutes=1),
        limit: int = 20,
    ) -> list[Any]:
        """Held leases with at most ``within`` left, soonest first. Without a lock store
        the row's expiry is the lease's. With one (Redis, memory) a heartbeat may extend
        only the lock (db/store.py ``lock_only_beat``), so the row's recorded expiry can be
        behind, never ahead: the rows due by it are the candidates, and the lock's TTL is
        the time left (no lock: the lease is gone, 0 until the sweep reclaims it). Best
        effort with a lock store: the candidates are the rows due soonest by their lagging
        figure (ten times the list), so with more held leases than that a lease due sooner
        by its lock can be left out until the sweep has refreshed the rows."""
        stmt = (
            select(Item)
            .where(
                Item.state.in_(HELD),
                Item.lease_expires_at <= now + within,
                *_of_tenant(Item, tenant),
            )
            .order_by(Item.lease_expires_at)
            .limit(limit if ctx.leases.lock is None else 10 * limit)
        )
        rows = list(s.scalars(stmt))
        left = {i.id: ((i.lease_expires_at or now) - now).total_seconds() for i in rows}
        ends = lock_ends(ctx, [i.id for i in rows])
        if ends is not None:  # the lock's figures (reads/expiry.py), a gone lock's 0
            left = {
                i.id: max((ends[i.id] - now).total_seconds(), 0) if i.id in ends else 0
                for i in rows
            }
            rows = [i for i in rows if left[i.id] <= within.total_seconds()]
            rows.sort(key=lambda i: left[i.id])
        return [
            {
                "id": str(i.id),
                "order_id": str(i.order_id),
                "type": i.order_type,
                "state": i.state,
                "agent_id": i.leased_by_agent_id,
                "expires_in_seconds": round(left[i.id]),
            }
            for i in rows[:limit]
        ]

    @staticmethod
    def _throughput(s: Any, since: datetime, tenant: str | None) -> dict[str, int]:
        done = (OrderState.COMPLETED.value, OrderState.APPLIED.value)
        finished_items = (
            ItemState.SUBMITTED.value,
            ItemState.ACCEPTED.value,
            ItemState.COMPLETED.value,
        )
        failures = dict(
            s.execute(
                select(Event.event, func.count())
                .where(
                    Event.created_at >= since,
                    Event.event.in_(("apply_failed", "apply_retrying")),
                    *_orders_of_tenant(Event.order_id, tenant),
                )
                .group_by(Event.event)
            ).all()
        )
        return {
            "orders_completed": count_rows(
                s,
                Order,
                Order.state.in_(done),
                Order.last_transitioned_at >= since,
                *_of_tenant(Order, tenant),
            ),
            "items_submitted": count_rows(
                s,
                Item,
                Item.state.in_(finished_items),
                Item.updated_at >= since,
                *_of_tenant(Item, tenant),
            ),
            "apply_failed": int(failures.get("apply_failed", 0)),
            "apply_retrying": int(failures.get("apply_retrying", 0)),
        }

    @staticmethod
    def _agents(s: Any, since: datetime, tenant: str | None) -> list[dict[str, Any]]:
        stmt = (
            select(
                Provenance.agent_id,
                Provenance.agent_version,
                Provenance.model_name,
                func.max(Provenance.created_at),
                func.count(),
            )
            .where(
                Provenance.created_at >= since,
                Provenance.agent_id.is_not(None),
                Provenance.action.not_in(("approve", "reject")),  # people reviewing
                *_orders_of_tenant(Provenance.order_id, tenant),
            )
            .group_by(Provenance.agent_id, Provenance.agent_version, Provenance.model_name)
            .order_by(func.max(Provenance.created_at).desc())
            .limit(50)
        )
        return [
            {
                "agent_id": agent,
                "version": version,
                "model": model,
                "last_seen": iso(last),
                "actions": int(n),
            }
            for agent, version, model, last, n in s.execute(stmt)
        ]


def _of_tenant(table: type[Order] | type[Item], tenant: str | None) -> list[ColumnElement[bool]]:
    """The rows of ``tenant`` only (none: every row)."""
    return [] if tenant is None else [table.tenant_id == tenant]


def _orders_of_tenant(column: Any, tenant: str | None) -> list[ColumnElement[bool]]:
    """Rows (events, provenance) whose order is ``tenant``'s (none: every row)."""
    if tenant is None:
        return []
    return [column.in_(select(Order.id).where(Order.tenant_id == tenant))]
