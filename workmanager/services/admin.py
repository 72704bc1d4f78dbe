"""Operator actions (SPEC §9): on whole orders beyond review (requeue, clone), on items
(list by filter, retry a failed item), and the development helpers (seed orders of a type,
wipe every row: ``dev``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, delete, select

from ..db.models import Base, Item, Order
from ..db.order_store import build_order_store
from ..db.predicates import given
from ..errors import (
    IllegalStateTransition,
    InvalidQuery,
    NotFound,
    ValidationFailed,
    WorkManagerError,
)
from ..reads.expiry import with_live_expiry
from ..reads.leases import LeaseSelector
from ..reads.queries import Queries
from ..states import HELD_ITEM_STATES, ItemState, OrderState
from ..types import JSON, Actor, as_id
from .context import ServiceContext
from .lease_admin import LeaseAdmin
from .orders import OrderService
from .proposals import check_proposal
from .views import item_dict, order_dict

#: The order states ``requeue`` takes; a failed order is put back with ``retry``.
REQUEUEABLE = frozenset({OrderState.REJECTED, OrderState.QUEUED, OrderState.IN_PROGRESS})


class OrderAdmin:
    """``requeue`` and ``clone``; approve, reject and retry live in :class:`OrderService`."""

    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def requeue(self, order_id: uuid.UUID | str, actor: Actor) -> dict[str, Any]:
        """Put an order's open work back in the queue, leasable now.

        A ``rejected`` order is reworked: its rejected items go back to ``queued`` with their
        results cleared, and the order to ``queued``. A ``queued`` or ``in_progress`` order
        has its held leases released (their attempt given back) and any retry backoff on
        its queued items cleared. Other states are refused (``retry`` takes failed orders)."""
        order_id = as_id(order_id, "order")
        state = Queries(self.ctx).order_state(order_id)
        if state not in REQUEUEABLE:
            raise _not_requeueable(order_id, state)
        if state == OrderState.REJECTED:
            change = self.orders.store.rework(order_id, actor)
        else:
            # The order's state checked under its lock first, then its leases released:
            # released first, a refusal came after the holders had lost their leases.
            change = self.orders.store.unblock(order_id)
            if change.done:
                LeaseAdmin(self.ctx, actor).release(LeaseSelector(order_id=order_id))
                change = replace(
                    change, order=self.orders.store.find(order_id, None) or change.order
                )
        if not change.done:  # it moved on (failed, submitted) since it was read above
            raise _not_requeueable(order_id, change.order.state, since=True)
        order = order_dict(change.order)
        if change.items:
            self.ctx.dispatcher.items_available(order["type"], list(change.items))
        return order

    def clone(
        self,
        order_id: uuid.UUID,
        actor: Actor,
        priority: int | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Propose a new order with the same type, payload, priority (or ``priority``)
        and meta (plus ``meta.cloned_from``); its dedupe key is not copied. ``dry_run``:
        the proposal is checked and returned, nothing is created."""
        with self.ctx.db.transaction() as s:
            source = s.get(Order, order_id)
            if source is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            original = order_dict(source)
        priority = original["priority"] if priority is None else priority
        if dry_run:
            check_proposal(
                self.ctx.registry,
                original["type"],
                original["payload"] or {},
                priority=priority,
                max_depth=self.ctx.settings.max_json_depth,
            )
            return {
                **original,
                "priority": priority,
                "cloned_from": original["id"],
                "dry_run": True,
            }
        proposal = self.orders.propose(
            original["type"],
            dict(original["payload"] or {}),
            priority=priority,
            meta={**(original["meta"] or {}), "cloned_from": original["id"]},
            requested_by=actor,
            tenant_id=original["tenant_id"],  # the clone stays in its tenant
        )
        return proposal.order


def _not_requeueable(order_id: uuid.UUID, state: str, since: bool = False) -> Exception:
    """Requeue's refusal; ``since``: the order changed while requeue ran."""
    now = f"order became {state} while requeue ran" if since else f"order is {state}"
    return IllegalStateTransition(
        f"{now}; requeue takes rejected, queued or in_progress orders (a failed order is"
        " put back with retry)",
        details={"order_id": str(order_id), "state": state},
    )


@dataclass(frozen=True)
class OrderSelector:
    """Which orders a batch command takes; the fields narrow each other. Without a state,
    the states the action can take (``requeue``: rejected, queued, in_progress, and
    submitted when asked for)."""

    order_id: uuid.UUID | None = None
    order_type: str | None = None
    state: str | None = None
    all: bool = False

    def require(self) -> None:
        """Refuse an empty selector: acting on every order must be asked for with ``all``."""
        if not self.all and self.order_id is None and self.order_type is None and not self.state:
            raise InvalidQuery(
                "no order selector: name an order, an order type or a state, or select all "
                "orders explicitly",
                details={"selectors": ["order", "type", "state", "all"]},
            )
        if self.state is not None and self.state not in {s.value for s in OrderState}:
            raise InvalidQuery(f"unknown order state {self.state!r}", details={"state": self.state})


@dataclass
class BatchResult:
    """What a batch command did (or, in a dry run, would do) to each selected row."""

    action: str
    dry_run: bool
    rows: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row["outcome"]] = out.get(row["outcome"], 0) + 1
        return out

    def to_dict(self, key: str) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            key: self.rows,
        }


def requeue_many(
    admin: OrderAdmin,
    selector: OrderSelector,
    actor: Actor,
    *,
    requeue_submitted: bool = False,
    limit: int = 100,
    dry_run: bool = False,
) -> BatchResult:
    """``requeue`` each selected order (at most ``limit``, oldest first), as upstream's
    ``orders:requeue``: a submitted order only with ``requeue_submitted`` (rejected with
    rework, so its items go back to work); other states are skipped with the reason. One
    order's refusal (it changed meanwhile) is reported and the batch goes on."""
    selector.require()
    takes = {s.value for s in REQUEUEABLE} | (
        {OrderState.SUBMITTED.value} if requeue_submitted else set()
    )
    stmt = select(Order.id, Order.type, Order.state).order_by(Order.created_at, Order.id)
    if selector.order_id is not None:
        stmt = stmt.where(Order.id == selector.order_id)
    if selector.order_type is not None:
        stmt = stmt.where(Order.type == selector.order_type)
    stmt = stmt.where(Order.state == selector.state) if selector.state else stmt
    if not selector.state and selector.order_id is None:
        stmt = stmt.where(Order.state.in_(takes))
    with admin.ctx.db.transaction() as s:
        found = s.execute(stmt.limit(limit)).all()
    result = BatchResult("requeue", dry_run)
    for order_id, order_type, state in found:
        row: dict[str, Any] = {"id": str(order_id), "type": order_type, "state": state}
        if state not in takes:
            why = "submitted: pass --requeue-submitted" if state == OrderState.SUBMITTED else ""
            row.update(outcome="skipped", reason=why or f"{state} orders are not requeued")
        elif dry_run:
            row["outcome"] = "reworked" if state == OrderState.SUBMITTED else "requeued"
        else:
            try:
                if state == OrderState.SUBMITTED:
                    errors: list[Any] = [
                        {"code": "requeue_requested", "message": "requeued by an operator"}
                    ]
                    admin.orders.reject(order_id, errors, actor, allow_rework=True)
                    row["outcome"] = "reworked"
                else:
                    admin.requeue(order_id, actor)
                    row["outcome"] = "requeued"
            except WorkManagerError as exc:
                row.update(outcome="error", reason=f"{exc.code}: {exc.message}")
        result.rows.append(row)
    return result


MAX_LIMIT = 1000


@dataclass(frozen=True)
class ItemFilter:
    """Which items to list; the fields narrow each other."""

    order_id: uuid.UUID | None = None
    state: str | None = None
    type: str | None = None
    agent_id: str | None = None
    #: only items someone holds a lease on (leased or in progress), as upstream's --leased
    leased: bool = False

    def where(self) -> list[ColumnElement[bool]]:
        if self.state is not None and self.state not in {s.value for s in ItemState}:
            message = f"unknown item state {self.state!r}"
            raise InvalidQuery(message, details={"state": self.state})
        held = [Item.state.in_(sorted(HELD_ITEM_STATES))] if self.leased else []
        return held + given(
            (Item.order_id, self.order_id),
            (Item.state, self.state),
            (Item.order_type, self.type),
            (Item.leased_by_agent_id, self.agent_id),
        )


class ItemAdmin:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: The item's retry, one path per database (db/order_store.py).
        self.store = build_order_store(ctx)

    def list(self, where: ItemFilter, limit: int = 50) -> list[dict[str, Any]]:
        """Items oldest first, at most ``limit`` (1..1000)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})
        stmt = select(Item).where(*where.where()).order_by(Item.created_at, Item.id).limit(limit)
        with self.ctx.db.transaction() as s:
            rows = [item_dict(i) for i in s.scalars(stmt)]
        return with_live_expiry(self.ctx, rows)  # held leases: the lock's expiry

    def retry(self, item_id: uuid.UUID | str, actor: Actor) -> dict[str, Any]:
        """A failed item back to ``queued`` (error, attempts and backoff cleared); a failed
        order it belongs to goes back to ``queued`` with it (and on to ``in_progress`` when
        another of its items is still held). Refused while the order has other failed
        items: that order could never be submitted, and ``orders retry`` takes them all."""
        item_id = as_id(item_id, "item")
        item = self.store.retry_item(item_id, retryable, actor)
        self.ctx.dispatcher.items_available(item["order_type"], [item_id])
        return item

    def retry_many(
        self,
        orders: OrderService,
        actor: Actor,
        *,
        order_id: uuid.UUID | None = None,
        order_type: str | None = None,
        select_all: bool = False,
        limit: int = MAX_LIMIT,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Failed items back to work, chosen by order and/or type (or ``select_all``), at
        most ``limit``, as upstream's ``items:retry``. An order with one failed item has it
        retried (:meth:`retry`); an order with several is retried whole (``orders.retry``:
        one item alone would reopen an order that could never be submitted). One order's
        refusal is reported and the batch goes on."""
        if not select_all and order_id is None and order_type is None:
            raise InvalidQuery(
                "no item selector: name an order or an order type, or select all failed "
                "items explicitly",
                details={"selectors": ["order", "type", "all"]},
            )
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})
        where = ItemFilter(order_id=order_id, state=ItemState.FAILED.value, type=order_type)
        found = self.list(where, limit=limit)
        by_order: dict[str, list[dict[str, Any]]] = {}
        for item in found:
            by_order.setdefault(item["order_id"], []).append(item)
        rows: list[dict[str, Any]] = []
        for oid, group in by_order.items():
            outcome, reason = "retried", None
            if not dry_run:
                outcome, reason = self._retry_group(orders, actor, oid, group)
            for item in group:
                error = (item.get("error") or {}).get("code")
                row = {"id": item["id"], "order_id": oid, "order_type": item["order_type"]}
                row.update(error=error, outcome=outcome)
                if reason:
                    row["reason"] = reason
                rows.append(row)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        return {"action": "retry", "dry_run": dry_run, "counts": counts, "items": rows}

    def _retry_group(
        self, orders: OrderService, actor: Actor, order_id: str, group: Sequence[dict[str, Any]]
    ) -> tuple[str, str | None]:
        try:
            if len(group) == 1:
                self.retry(uuid.UUID(group[0]["id"]), actor)
            else:
                orders.retry(uuid.UUID(order_id), actor)
        except WorkManagerError as exc:
            return "error", f"{exc.code}: {exc.message}"
        return "retried", None


def retryable(item: dict[str, Any], others: list[uuid.UUID]) -> None:
    """Refuse to retry the locked ``item`` (``others``: its order's other failed items)
    unless it is failed and the only failed item of its order: alone, it would reopen an
    order that could then never be submitted."""
    if item["state"] != ItemState.FAILED:  # retry is failed -> queued, nothing else
        raise IllegalStateTransition(
            f"only a failed item can be retried; this one is {item['state']}",
            kind="item",
            from_state=item["state"],
            to_state=ItemState.QUEUED,
        )
    if others:
        order_id = item["order_id"]
        raise IllegalStateTransition(
            f"order {order_id} has other failed items; retry the whole order"
            f" (workmanager orders retry {order_id})",
            details={
                "kind": "item",
                "from": item["state"],
                "to": ItemState.QUEUED.value,
                "order_id": str(order_id),
                "other_failed_items": [str(i) for i in others],
            },
        )


MAX_SEED = 100_000


class DevTools:
    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def seed(
        self,
        type: str,
        count: int,
        payload: JSON | None = None,
        priority: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[uuid.UUID]:
        """Propose ``count`` orders of ``type`` with ``payload`` (validated like any other),
        each marked ``meta.seed = n``. ``progress`` is called after each order."""
        if not 1 <= count <= MAX_SEED:
            raise ValidationFailed.at("count", f"must be 1..{MAX_SEED}", "range")
        actor = Actor("user", "dev-seed")
        ids = []
        for n in range(count):
            proposal = self.orders.propose(
                type, dict(payload or {}), priority=priority, meta={"seed": n}, requested_by=actor
            )
            ids.append(uuid.UUID(proposal.order["id"]))
            if progress is not None:
                progress(n + 1)
        return ids

    def reset(self) -> dict[str, Any]:
        """Delete every row of every workmanager table (the schema stays). Returns the rows
        deleted per table."""
        deleted: dict[str, int] = {}
        with self.ctx.db.transaction() as s:
            for table in reversed(Base.metadata.sorted_tables):
                result = s.execute(delete(table))
                deleted[table.name] = int(getattr(result, "rowcount", 0) or 0)
        return deleted
