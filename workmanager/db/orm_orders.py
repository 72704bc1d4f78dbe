"""The ORM order store (:class:`OrmOrderStore`): the control plane's state changes as
SQLAlchemy transactions.

SQLite's one path (every transaction ``BEGIN IMMEDIATE``, so they are serialized); on
PostgreSQL :class:`~workmanager.db.postgres.control.PostgresOrderStore` runs instead, never
this one. See :class:`workmanager.db.order_store.OrderStore` for what each method locks and
what is atomic. The rules that name an outcome are the services' (``OrderService._ready``,
``orders.retry_target`` and ``refused``, ``executor._not_started`` and ``_not_recorded``)
and :mod:`workmanager.services.apply_claim`'s, shared with the PostgreSQL store; a guard
that matched nothing returns the order as it is (``OrderChange.done`` False), as there.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..diff import Diff
from ..errors import NotFound
from ..services import apply_claim
from ..services.context import ServiceContext
from ..services.order_steps import lock_order
from ..services.parts import REJECTED
from ..services.transitions import move_item, move_order, record_event, rework_item
from ..services.views import order_view
from ..state_machine import can_order, check_item, check_order
from ..states import ItemState, OrderState
from ..types import Actor, AgentInfo, ApplyContext, OrderView
from .models import Item, Order, Part
from .order_store import ApprovalCheck, OrderChange, OrderRow, RetryCheck
from .session import Database


class OrmOrderStore:
    """The control plane's state changes through the ORM (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- propose ----------------------------------------------------------------------
    def create_order(
        self, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> OrderRow | None:
        try:
            self.ctx.db.run(lambda s: self._create_tx(s, order, items, actor, agent))
        except IntegrityError:
            found = find_order(self.ctx.db, order.id, order.dedupe_key)
            if found is None:
                raise
            return found
        return None

    def _create_tx(
        self, s: Session, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> None:
        s.add(order)
        s.flush()
        record_event(
            s, order.id, "proposed", actor, payload={"type": order.type, "priority": order.priority}
        )
        s.add_all(items)
        record_event(s, order.id, "planned", actor, payload={"item_count": len(items)})
        self.ctx.provenance.record(s, "propose", agent, order_id=order.id)

    # --- approval ---------------------------------------------------------------------
    def approve(
        self,
        order_id: uuid.UUID,
        plain: list[str],
        check: ApprovalCheck,
        actor: Actor,
        agent: AgentInfo | None = None,
    ) -> OrderRow | None:
        return self.ctx.db.run(lambda s: self._approve_tx(s, order_id, plain, check, actor, agent))

    def _approve_tx(
        self,
        s: Session,
        order_id: uuid.UUID,
        plain: list[str],
        check: ApprovalCheck,
        actor: Actor,
        agent: AgentInfo | None,
    ) -> OrderRow | None:
        now = self.ctx.clock()
        check_order(OrderState.SUBMITTED, OrderState.APPROVED)
        order: Order | None = None
        if plain:
            order = s.scalars(
                update(Order)
                .where(
                    Order.id == order_id,
                    Order.state == OrderState.SUBMITTED.value,
                    Order.type.in_(plain),
                )
                .values(state=OrderState.APPROVED.value, last_transitioned_at=now, updated_at=now)
                .returning(Order)
                .execution_options(synchronize_session=False, populate_existing=True)
            ).first()
            if order is not None:
                record_event(s, order.id, OrderState.APPROVED, actor)
        if order is None:
            order = lock_order(s, order_id)
            if not check(order_view(order)):  # raises to refuse (the transaction rolls back)
                return None
            move_order(s, order, OrderState.APPROVED, actor, now=now)
        self.ctx.provenance.record(s, "approve", agent, order_id=order.id)
        return OrderRow.of(order)

    # --- reject, rework, unblock, retry -----------------------------------------------
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
        move_order(s, order, to, actor, event="retried", now=now)
        failed = _items(s, order_id, ItemState.FAILED)
        for item in failed:
            item.error, item.attempts, item.available_at = None, 0, None
            move_item(s, item, ItemState.QUEUED, actor, event="retried")
        return OrderChange(OrderRow.of(order), done=True, items=tuple(i.id for i in failed))

    # --- apply ------------------------------------------------------------------------
    def start_apply(
        self, order_id: uuid.UUID, claim: str, now: datetime
    ) -> tuple[OrderView, ApplyContext] | OrderRow:
        return self.ctx.db.run(lambda s: self._start_tx(s, order_id, claim, now))

    def _start_tx(
        self, s: Session, order_id: uuid.UUID, claim: str, now: datetime
    ) -> tuple[OrderView, ApplyContext] | OrderRow:
        order = s.scalars(
            update(Order)
            .where(
                Order.id == order_id,
                Order.state == OrderState.APPROVED.value,
                apply_claim.claimable(now),
            )
            .values(
                apply_attempts=Order.apply_attempts + 1,
                updated_at=now,
                **apply_claim.taken(claim, now, self.ctx.settings),
            )
            .returning(Order)
            .execution_options(synchronize_session=False, populate_existing=True)
        ).first()
        if order is None:
            return _read(s, order_id)
        items = list(
            s.scalars(select(Item).where(Item.order_id == order_id).order_by(Item.created_at))
        )
        tokens = {str(i.id): i.lease_token for i in items}
        ctx = ApplyContext(attempt=order.apply_attempts, lease_tokens=tokens, actor=Actor.system())
        return order_view(order, items), ctx

    def record_apply(
        self, order_id: uuid.UUID, claim: str, diff: Diff, actor: Actor
    ) -> tuple[OrderRow, dict[str, Any] | None]:
        return self.ctx.db.run(lambda s: self._record_tx(s, order_id, claim, diff, actor))

    def _record_tx(
        self, s: Session, order_id: uuid.UUID, claim: str, diff: Diff, actor: Actor
    ) -> tuple[OrderRow, dict[str, Any] | None]:
        """Two statements: the guarded UPDATE of the order (it finds nothing when another
        run recorded it, the order failed, or this run's claim lapsed and was taken), then
        the items' and the events."""
        now = self.ctx.clock()
        data = diff.to_dict()
        check_order(OrderState.APPROVED, OrderState.APPLIED)
        check_order(OrderState.APPLIED, OrderState.COMPLETED)
        order = s.scalars(
            update(Order)
            .where(
                Order.id == order_id,
                Order.state == OrderState.APPROVED.value,
                apply_claim.held_by(claim),
            )
            .values(
                **apply_claim.RELEASED,
                state=OrderState.COMPLETED.value,
                diff=data,
                applied_at=now,
                completed_at=now,
                last_error=None,
                last_transitioned_at=now,
                updated_at=now,
            )
            .returning(Order)
            .execution_options(synchronize_session=False, populate_existing=True)
        ).first()
        if order is None:
            return _read(s, order_id), None
        payload = {"summary": diff.summary, "attempt": order.apply_attempts}
        record_event(s, order.id, OrderState.APPLIED, actor, payload=payload, diff=data)
        check_item(ItemState.SUBMITTED, ItemState.ACCEPTED)
        check_item(ItemState.ACCEPTED, ItemState.COMPLETED)
        accepted = s.scalars(
            update(Item)
            .where(Item.order_id == order_id, Item.state == ItemState.SUBMITTED.value)
            .values(state=ItemState.COMPLETED.value, accepted_at=now, updated_at=now)
            .returning(Item.id)
            .execution_options(synchronize_session=False)
        ).all()
        for item_id in accepted:
            record_event(s, order.id, ItemState.ACCEPTED, actor, item_id=item_id)
            record_event(s, order.id, ItemState.COMPLETED, actor, item_id=item_id)
        record_event(s, order.id, OrderState.COMPLETED, actor)
        return OrderRow.of(order), data

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
        return self.ctx.db.run(lambda s: self._dead_letter_tx(s, cutoff, actor))

    def _dead_letter_tx(self, s: Session, cutoff: datetime, actor: Actor) -> tuple[int, int]:
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
        items = list(
            s.scalars(
                select(Item)
                .where(Item.state == ItemState.FAILED.value, Item.updated_at <= cutoff)
                .order_by(Item.id)
                .with_for_update(skip_locked=True)
            )
        )
        for item in items:
            move_item(s, item, ItemState.DEAD_LETTERED, actor)
        return len(orders), len(items)


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


def find_order(db: Database, order_id: uuid.UUID | None, dedupe_key: str | None) -> OrderRow | None:
    """The order holding ``order_id``, else ``dedupe_key`` (a refused insert's holder)."""
    if order_id is None and dedupe_key is None:
        return None
    with db.transaction() as s:
        order = s.get(Order, order_id) if order_id else None
        if order is None and dedupe_key:
            order = s.scalar(select(Order).where(Order.dedupe_key == dedupe_key))
        return OrderRow.of(order) if order else None


def _read(s: Session, order_id: uuid.UUID) -> OrderRow:
    """The order as it is now (the guard's statement waited for what it found)."""
    order = s.get(Order, order_id, populate_existing=True)
    if order is None:
        raise NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})
    return OrderRow.of(order)
