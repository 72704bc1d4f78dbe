"""The ORM order store (:class:`OrmOrderStore`): the control plane's state changes as
SQLAlchemy transactions — propose's insert (and a refused proposal's record), approval,
apply and an event alone here, the admin changes in :mod:`.orm_order_admin`.

SQLite's one path (every transaction ``BEGIN IMMEDIATE``, so they are serialized); on
PostgreSQL :class:`~workmanager.db.postgres.control.PostgresOrderStore` runs instead, never
this one. See :class:`workmanager.db.order_store.OrderStore` for what each method locks and
what is atomic. The rules that name an outcome are the services' (``OrderService._ready``,
``transitions.retry_target`` and ``refused``, ``executor._not_started`` and ``_not_recorded``)
and :mod:`workmanager.services.apply`'s, shared with the PostgreSQL store; a guard
that matched nothing returns the order as it is (``OrderChange.done`` False), as there.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..diff import Diff
from ..errors import NotFound
from ..services import apply
from ..services.context import ServiceContext
from ..services.transitions import move_order, record_event
from ..services.views import order_view
from ..state_machine import check_item, check_order
from ..states import ItemState, OrderState
from ..types import Actor, AgentInfo, ApplyContext, OrderView
from .models import Item, Order
from .order_store import ApprovalCheck, DropCheck, OrderRow, inserted_or_held
from .orm_order_admin import OrmOrderAdmin
from .orm_steps import lock_order
from .session import Database


class OrmOrderStore(OrmOrderAdmin):
    """The control plane's state changes through the ORM (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- propose ----------------------------------------------------------------------
    def create_order(
        self, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> OrderRow | None:
        return inserted_or_held(
            lambda: self.ctx.db.run(lambda s: self._create_tx(s, order, items, actor, agent)),
            lambda: find_order(self.ctx.db, order.id, order.dedupe_key),
            IntegrityError,
        )[1]

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

    def refuse(self, order: Order, actor: Actor) -> tuple[OrderRow, bool]:
        made, held = inserted_or_held(
            lambda: self.ctx.db.run(lambda s: self._refuse_tx(s, order, actor)),
            lambda: find_order(self.ctx.db, order.id, None),
            IntegrityError,
        )
        if made is not None:
            return made, True
        assert held is not None  # inserted_or_held gives one or the other
        return held, False

    def _refuse_tx(self, s: Session, order: Order, actor: Actor) -> OrderRow:
        s.add(order)
        s.flush()
        error = dict(order.last_error or {})
        payload = {"code": error.get("code"), "details": error.get("details")}
        event, message = "proposal_refused", error.get("message")
        record_event(s, order.id, event, actor, payload=payload, message=message)
        return OrderRow.of(order)

    def drop_refused(self, order_id: uuid.UUID, check: DropCheck) -> bool:
        return self.ctx.db.run(lambda s: self._drop_tx(s, order_id, check))

    def _drop_tx(self, s: Session, order_id: uuid.UUID, check: DropCheck) -> bool:
        order = s.get(Order, order_id, with_for_update=True, populate_existing=True)
        if order is None:
            return False
        states = list(s.scalars(select(Item.state).where(Item.order_id == order_id)))
        if not check(OrderRow.of(order), states):
            return False
        s.execute(delete(Order).where(Order.id == order_id))
        return True

    def record_event(
        self, order_id: uuid.UUID, event: str, actor: Actor, payload: dict[str, Any]
    ) -> None:
        with self.ctx.db.transaction() as s:
            record_event(s, order_id, event, actor, payload=payload)

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

    def find(self, order_id: uuid.UUID | None, dedupe_key: str | None) -> OrderRow | None:
        return find_order(self.ctx.db, order_id, dedupe_key)

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
                apply.claimable(now),
            )
            .values(
                apply_attempts=Order.apply_attempts + 1,
                updated_at=now,
                **apply.taken(claim, now, self.ctx.settings),
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
        ctx = ApplyContext(
            attempt=order.apply_attempts,
            lease_tokens=tokens,
            actor=Actor.system(),
            failures=apply.failures(order.last_error),
        )
        return order_view(order, items), ctx

    def renew_apply(self, order_id: uuid.UUID, claim: str, expires: datetime) -> bool:
        def tx(s: Session) -> bool:
            renewed = s.execute(
                update(Order)
                .where(
                    Order.id == order_id,
                    Order.state == OrderState.APPROVED.value,
                    apply.held_by(claim),
                )
                .values(apply_claim_expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(renewed, "rowcount", 0))

        return self.ctx.db.run(tx)

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
                apply.held_by(claim),
            )
            .values(
                **apply.RELEASED,
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
