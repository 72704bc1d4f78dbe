"""Operator actions on whole orders beyond review: requeue and clone (SPEC §9)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ..db.models import Order
from ..errors import IllegalStateTransition, InvalidQuery, NotFound, WorkManagerError
from ..states import OrderState
from ..types import Actor
from .context import ServiceContext
from .lease_admin import LeaseAdmin, LeaseSelector
from .orders import OrderService, refused
from .views import order_dict

#: The order states ``requeue`` takes; a failed order is put back with ``retry``.
REQUEUEABLE = frozenset({OrderState.REJECTED, OrderState.QUEUED, OrderState.IN_PROGRESS})


class OrderAdmin:
    """``requeue`` and ``clone``; approve, reject and retry live in :class:`OrderService`."""

    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def requeue(self, order_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """Put an order's open work back in the queue, leasable now.

        A ``rejected`` order is reworked: its rejected items go back to ``queued`` with their
        results cleared, and the order to ``queued``. A ``queued`` or ``in_progress`` order
        has its held leases released (their attempt given back) and any retry backoff on
        its queued items cleared. Other states are refused (``retry`` takes failed orders).
        """
        state = self._state(order_id)
        if state not in REQUEUEABLE:
            raise IllegalStateTransition(
                f"order is {state}; requeue takes rejected, queued or in_progress orders "
                "(a failed order is put back with retry)",
                details={"order_id": str(order_id), "state": state},
            )
        if state == OrderState.REJECTED:
            change = self.orders.store.rework(order_id, actor)
        else:
            LeaseAdmin(self.ctx, actor).release(LeaseSelector(order_id=order_id))
            change = self.orders.store.unblock(order_id)
        order = order_dict(refused(change, OrderState.QUEUED))
        if change.items:
            self.ctx.dispatcher.items_available(order["type"], list(change.items))
        return order

    def _state(self, order_id: uuid.UUID) -> str:
        with self.ctx.db.transaction() as s:
            state = s.scalar(select(Order.state).where(Order.id == order_id))
        if state is None:
            raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
        return state

    def clone(self, order_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        """Propose a new order with the same type, payload, priority and meta (plus
        ``meta.cloned_from``); its dedupe key is not copied."""
        with self.ctx.db.transaction() as s:
            source = s.get(Order, order_id)
            if source is None:
                raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
            original = order_dict(source)
        proposal = self.orders.propose(
            original["type"],
            dict(original["payload"] or {}),
            priority=original["priority"],
            meta={**(original["meta"] or {}), "cloned_from": original["id"]},
            requested_by=actor,
        )
        return proposal.order


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
