"""The ORM order store's admin changes (:class:`OrmOrderAdmin`, a part of
:class:`~workmanager.db.orm_orders.OrmOrderStore`): reject and rework, requeue's unblock,
retry (of an order or of an item), a failed apply, dead-lettering, pruning, maintenance's
touches.

SQLite's one path (each a ``BEGIN IMMEDIATE`` transaction); PostgreSQL runs
:mod:`workmanager.db.postgres.order_admin` instead. The order is locked first; a guard that
does not hold writes nothing and returns the order as it is (``OrderChange.done`` False),
as PostgreSQL's statements do. Items are taken by id, the order PostgreSQL writes their
events in. What each locks and keeps atomic: :class:`~workmanager.db.order_store.OrderStore`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..lease_tokens import Holder
from ..leases.selection import Shape, eligible
from ..services import apply
from ..services.context import ServiceContext
from ..services.parts import REJECTED
from ..services.transitions import move_item, move_order, record_event, rework_item
from ..services.views import item_dict
from ..state_machine import can_order, settled_after_retry
from ..states import HELD_ITEM_STATES, ItemState, OrderState
from ..types import Actor, AgentInfo
from .models import Event, Item, Order, Part, Provenance
from .order_store import LATE_QUEUED, ItemRetryCheck, OrderChange, OrderRow, RetryCheck
from .orm_steps import lock_item, lock_order
from .predicates import old_audit
from .store import drop_holds, holder_of


class OrmOrderAdmin:
    """The admin changes through the ORM (see the module's docstring)."""

    ctx: ServiceContext

    def reject(
        self,
        order_id: uuid.UUID,
        errors: list[Any],
        actor: Actor,
        rework: bool,
        agent: AgentInfo | None,
    ) -> OrderChange:
        return self.ctx.db.run(lambda s: self._reject_tx(s, order_id, errors, actor, rework, agent))

    def _reject_tx(
        self,
        s: Session,
        order_id: uuid.UUID,
        errors: list[Any],
        actor: Actor,
        rework: bool,
        agent: AgentInfo | None,
    ) -> OrderChange:
        now = self.ctx.clock()
        order = lock_order(s, order_id)
        if not can_order(order.state, OrderState.REJECTED):
            return OrderChange(OrderRow.of(order), done=False)
        payload = {"errors": errors, "allow_rework": rework}
        move_order(s, order, OrderState.REJECTED, actor, now=now, payload=payload)
        order.last_error = {"code": "rejected", "errors": errors}
        items = _items(s, order_id, ItemState.SUBMITTED)
        for item in items:
            move_item(s, item, ItemState.REJECTED, actor)
        for part in s.scalars(select(Part).where(Part.item_id.in_([i.id for i in items]))):
            part.status = REJECTED
        self.ctx.provenance.record(s, "reject", agent, order_id=order.id)
        if not rework:
            return OrderChange(OrderRow.of(order), done=True)
        return _rework(s, order, items, actor, now)

    def rework(self, order_id: uuid.UUID, actor: Actor) -> OrderChange:
        return self.ctx.db.run(lambda s: self._rework_tx(s, order_id, actor))

    def _rework_tx(self, s: Session, order_id: uuid.UUID, actor: Actor) -> OrderChange:
        order = lock_order(s, order_id)
        if order.state != OrderState.REJECTED:
            return OrderChange(OrderRow.of(order), done=False)
        order.last_error = None
        items = _items(s, order_id, ItemState.REJECTED)
        return _rework(s, order, items, actor, self.ctx.clock())

    def unblock(self, order_id: uuid.UUID) -> OrderChange:
        return self.ctx.db.run(lambda s: self._unblock_tx(s, order_id))

    def _unblock_tx(self, s: Session, order_id: uuid.UUID) -> OrderChange:
        order = lock_order(s, order_id)
        if order.state not in (OrderState.QUEUED, OrderState.IN_PROGRESS):  # moved on since
            return OrderChange(OrderRow.of(order), done=False)
        queued = Item.order_id == order_id, Item.state == ItemState.QUEUED.value
        ids = tuple(s.scalars(select(Item.id).where(*queued).order_by(Item.id)))
        s.execute(update(Item).where(*queued).values(available_at=None))
        return OrderChange(OrderRow.of(order), done=True, items=ids)

    def retry(self, order_id: uuid.UUID, check: RetryCheck, actor: Actor) -> OrderChange:
        return self.ctx.db.run(lambda s: self._retry_tx(s, order_id, check, actor))

    def _retry_tx(
        self, s: Session, order_id: uuid.UUID, check: RetryCheck, actor: Actor
    ) -> OrderChange:
        now = self.ctx.clock()
        order = lock_order(s, order_id)
        states = list(s.scalars(select(Item.state).where(Item.order_id == order_id)))
        to = check(OrderRow.of(order), states)  # raises to refuse
        order.last_error = None
        if to == OrderState.SUBMITTED:
            order.apply_attempts = 0
            move_order(s, order, to, actor, event="retried", now=now)
            return OrderChange(OrderRow.of(order), done=True)
        then = settled_after_retry(to, states)
        move_order(s, order, to, actor, event="retried", now=now)
        failed = _items(s, order_id, ItemState.FAILED)
        for item in failed:
            item.error, item.attempts, item.available_at = None, 0, None
            move_item(s, item, ItemState.QUEUED, actor, event="retried")
        if then != to:  # an item still held: as on a first lease
            move_order(s, order, then, actor, now=now)
        return OrderChange(OrderRow.of(order), done=True, items=tuple(i.id for i in failed))

    def retry_item(self, item_id: uuid.UUID, check: ItemRetryCheck, actor: Actor) -> dict[str, Any]:
        return self.ctx.db.run(lambda s: self._retry_item_tx(s, item_id, check, actor))

    def _retry_item_tx(
        self, s: Session, item_id: uuid.UUID, check: ItemRetryCheck, actor: Actor
    ) -> dict[str, Any]:
        order_id = s.scalar(select(Item.order_id).where(Item.id == item_id))
        if order_id is None:
            raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
        order = lock_order(s, order_id)  # admin paths lock the order first (see orm_steps)
        item = lock_item(s, item_id)  # a failed item: no agent path locks it
        others = _items(s, order_id, ItemState.FAILED)
        check(item_dict(item), [i.id for i in others if i.id != item_id])  # raises to refuse
        item.error, item.attempts, item.available_at = None, 0, None
        move_item(s, item, ItemState.QUEUED, actor, event="retried")
        if order.state == OrderState.FAILED:
            order.last_error = None
            now = self.ctx.clock()
            states = s.scalars(select(Item.state).where(Item.order_id == order_id)).all()
            then = settled_after_retry(OrderState.QUEUED, states)
            move_order(s, order, OrderState.QUEUED, actor, event="retried", now=now)
            if then != OrderState.QUEUED:  # an item still held: as on a first lease
                move_order(s, order, then, actor, now=now)
        return item_dict(item)

    def fail_apply(
        self, order_id: uuid.UUID, claim: str, error: dict[str, Any], final: bool, actor: Actor
    ) -> OrderChange:
        return self.ctx.db.run(lambda s: self._fail_tx(s, order_id, claim, error, final, actor))

    def _fail_tx(
        self,
        s: Session,
        order_id: uuid.UUID,
        claim: str,
        error: dict[str, Any],
        final: bool,
        actor: Actor,
    ) -> OrderChange:
        order = lock_order(s, order_id)
        if order.state != OrderState.APPROVED or order.apply_claim != claim:
            return OrderChange(OrderRow.of(order), done=False)
        order.apply_claim = order.apply_claim_expires_at = None
        order.last_error = {"code": "apply_failed", **error}
        now = self.ctx.clock()
        if final:
            failed = OrderState.FAILED
            move_order(s, order, failed, actor, event="apply_failed", payload=error, now=now)
        else:
            record_event(s, order.id, "apply_retrying", actor, payload=error)
        return OrderChange(OrderRow.of(order), done=True)

    # --- maintenance ------------------------------------------------------------------
    def dead_letter(self, cutoff: datetime, actor: Actor) -> tuple[int, int]:
        ended: list[tuple[uuid.UUID, str, Holder]] = []
        counts = self.ctx.db.run(lambda s: self._dead_letter_tx(s, cutoff, actor, ended))
        drop_holds(self.ctx.leases.lock, ended)  # the leases ended with their order
        return counts

    def _dead_letter_tx(
        self, s: Session, cutoff: datetime, actor: Actor, ended: list[tuple[uuid.UUID, str, Holder]]
    ) -> tuple[int, int]:
        ended.clear()  # a retried transaction starts again
        now = self.ctx.clock()
        orders = list(
            s.scalars(
                select(Order)
                .where(Order.state == OrderState.FAILED.value, Order.last_transitioned_at <= cutoff)
                .order_by(Order.id)
                .with_for_update(skip_locked=True)
            )
        )
        for order in orders:
            move_order(s, order, OrderState.DEAD_LETTERED, actor, now=now)
        # with their order (queries.sql, dead_letter): every item not done dead, leases
        # ended; of orders dead before, the failed and held items a lock held back then
        dead = select(Order.id).where(Order.state == OrderState.DEAD_LETTERED.value)
        late = [s.value for s in (ItemState.FAILED, *HELD_ITEM_STATES)]
        now_dead = and_(
            Item.order_id.in_([o.id for o in orders]),
            Item.state.in_([*late, ItemState.QUEUED.value]),
        )
        held_back = and_(Item.state.in_(late), Item.order_id.in_(dead))
        recently = dead.where(Order.last_transitioned_at >= now - LATE_QUEUED)
        queued_since = and_(Item.state == ItemState.QUEUED.value, Item.order_id.in_(recently))
        items = list(
            s.scalars(
                select(Item)
                .where(or_(now_dead, held_back, queued_since))
                .order_by(Item.id)
                .with_for_update(skip_locked=True)
            )
        )
        for item in items:
            if item.state in HELD_ITEM_STATES:
                ended.append((item.id, item.order_type, holder_of(item)))
                held = {"agent_id": item.leased_by_agent_id, "lease_token": item.lease_token}
                payload = {**held, "reason": "order_dead_lettered"}
                record_event(
                    s, item.order_id, "lease_released", actor, item_id=item.id, payload=payload
                )
                item.leased_by_agent_id = item.lease_expires_at = None
            move_item(s, item, ItemState.DEAD_LETTERED, actor)
        return len(orders), len(items)

    def touch_queued(
        self, order_id: uuid.UUID | None, before: datetime | None, now: datetime, limit: int
    ) -> list[tuple[uuid.UUID, str]]:
        # the checkout's eligibility (leases/selection.py), its columns and order replaced
        shape = Shape(order=order_id is not None)
        stmt = eligible(shape).with_only_columns(Item.id, Item.order_type).order_by(None)
        if order_id is None:
            stmt = stmt.where(Item.updated_at <= before)
        params = {"q_now": now, "q_order": order_id}
        with self.ctx.db.transaction() as s:
            picked = s.execute(stmt.order_by(Item.updated_at).limit(limit), params)
            found = [(r.id, r.order_type) for r in picked]
            if found:
                s.execute(
                    update(Item)
                    .where(Item.id.in_([i for i, _ in found]))
                    .values(updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return found

    def claim_stuck_applies(self, cutoff: datetime, now: datetime) -> list[uuid.UUID]:
        stuck = Order.state == OrderState.APPROVED.value, apply.claimable(now)
        return self._claim_stale(cutoff, now, *stuck)

    def claim_stuck_auto_approvals(
        self, cutoff: datetime, now: datetime, types: list[str]
    ) -> list[uuid.UUID]:
        refused = exists().where(
            Event.order_id == Order.id,
            Event.event == "auto_approval_refused",
            Event.created_at >= Order.last_transitioned_at,
        )
        stuck = Order.state == OrderState.SUBMITTED.value, Order.type.in_(types), ~refused
        return self._claim_stale(cutoff, now, *stuck)

    def _claim_stale(
        self, cutoff: datetime, now: datetime, *conditions: ColumnElement[bool]
    ) -> list[uuid.UUID]:
        with self.ctx.db.transaction() as s:
            ids = list(
                s.scalars(
                    select(Order.id)
                    .where(*conditions, Order.updated_at <= cutoff)
                    .order_by(Order.updated_at)
                    .limit(1000)
                    .with_for_update(skip_locked=True)
                )
            )
            if ids:
                s.execute(
                    update(Order)
                    .where(Order.id.in_(ids))
                    .values(updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return ids

    def prune(self, order_ids: list[uuid.UUID], states: Sequence[str]) -> tuple[int, int]:
        return self.ctx.db.run(lambda s: self._prune_tx(s, order_ids, states))

    def _prune_tx(
        self, s: Session, order_ids: list[uuid.UUID], states: Sequence[str]
    ) -> tuple[int, int]:
        ids = list(
            s.scalars(select(Order.id).where(Order.id.in_(order_ids), Order.state.in_(states)))
        )
        if not ids:
            return 0, 0
        items = int(s.scalar(select(func.count()).where(Item.order_id.in_(ids))) or 0)
        s.execute(delete(Order).where(Order.id.in_(ids)))
        return len(ids), items

    def prune_audit(
        self, audit: str, cutoff: datetime, limit: int, after: int = 0
    ) -> tuple[int, int]:
        model = AUDIT_MODELS[audit]
        old = [model.id > after, *old_audit(model, cutoff)]

        def batch(s: Session) -> tuple[int, int]:
            ids = list(s.scalars(select(model.id).where(*old).order_by(model.id).limit(limit)))
            if ids:
                s.execute(delete(model).where(model.id.in_(ids)))
            return len(ids), max(ids, default=0)

        return self.ctx.db.run(batch)


#: The audit tables ``prune_audit`` takes, by name.
AUDIT_MODELS: dict[str, type[Event] | type[Provenance]] = {
    "events": Event,
    "provenance": Provenance,
}


def _items(s: Session, order_id: uuid.UUID, state: str) -> list[Item]:
    """The order's items in ``state``, by id (the order the PostgreSQL store writes their
    events in)."""
    return list(
        s.scalars(
            select(Item).where(Item.order_id == order_id, Item.state == state).order_by(Item.id)
        )
    )


def _rework(
    s: Session, order: Order, items: list[Item], actor: Actor, now: datetime
) -> OrderChange:
    """Rejected ``items`` back to work (``rework_item``), then the order ``queued``."""
    for item in items:
        rework_item(s, item, actor)
    move_order(s, order, OrderState.QUEUED, actor, event="rework", now=now)
    return OrderChange(OrderRow.of(order), done=True, items=tuple(i.id for i in items))
