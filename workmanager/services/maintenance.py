"""Maintenance: dead-letter old failures, flag stale orders, purge keys, recover applies."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..db.models import Event, Item, Order
from ..db.predicates import queued
from ..states import LEASABLE_ORDER_STATES, ItemState, OrderState
from ..types import Actor
from . import apply_claim
from .context import ServiceContext
from .idempotency import IdempotencyService
from .transitions import move_item, move_order

log = logging.getLogger("workmanager.maintenance")


@dataclass
class MaintenanceReport:
    dead_lettered_orders: int = 0
    dead_lettered_items: int = 0
    stale_orders: list[str] = field(default_factory=list)
    purged_keys: int = 0
    recovered_applies: list[uuid.UUID] = field(default_factory=list)
    recovered_auto_approvals: list[uuid.UUID] = field(default_factory=list)
    reannounced_items: int = 0


class Maintenance:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def run(
        self,
        *,
        dead_letter: bool = True,
        check_stale: bool = True,
        purge_keys: bool = True,
        recover_applies: bool = True,
    ) -> MaintenanceReport:
        report = MaintenanceReport()
        if dead_letter:
            report.dead_lettered_orders, report.dead_lettered_items = self.ctx.db.run(
                self._dead_letter
            )
        if check_stale and self.ctx.settings.enable_alerts:
            report.stale_orders = self.stale_orders()
        if purge_keys:
            report.purged_keys = IdempotencyService(self.ctx).purge()
        if recover_applies:
            report.recovered_applies = self.stuck_applies()
            for order_id in report.recovered_applies:
                self.ctx.dispatcher.order_approved(order_id)
            report.recovered_auto_approvals = self.stuck_auto_approvals()
            for order_id in report.recovered_auto_approvals:
                self.ctx.dispatcher.order_submitted(order_id)
            after = self.ctx.settings.reannounce_after_seconds
            if after:
                report.reannounced_items = self.announce_queued(older_than=after)
        self.report_gauges()
        return report

    def _dead_letter(self, s: Session) -> tuple[int, int]:
        cutoff = self.ctx.clock() - timedelta(hours=self.ctx.settings.dead_letter_after_hours)
        actor = Actor.system()
        orders = list(
            s.scalars(
                select(Order)
                .where(
                    Order.state == OrderState.FAILED.value,
                    Order.last_transitioned_at <= cutoff,
                )
                .with_for_update(skip_locked=True)
            )
        )
        for order in orders:
            move_order(s, order, OrderState.DEAD_LETTERED, actor)
        items = list(
            s.scalars(
                select(Item)
                .where(
                    Item.state == ItemState.FAILED.value,
                    Item.updated_at <= cutoff,
                )
                .with_for_update(skip_locked=True)
            )
        )
        for item in items:
            move_item(s, item, ItemState.DEAD_LETTERED, actor)
        return len(orders), len(items)

    def stale_orders(self) -> list[str]:
        """Orders queued or in progress for longer than ``STALE_ORDER_HOURS``: logged."""
        cutoff = self.ctx.clock() - timedelta(hours=self.ctx.settings.stale_order_hours)
        with self.ctx.db.transaction() as s:
            ids = [
                str(i)
                for i in s.scalars(
                    select(Order.id)
                    .where(
                        Order.state.in_([OrderState.QUEUED.value, OrderState.IN_PROGRESS.value]),
                        Order.last_transitioned_at <= cutoff,
                    )
                    .limit(1000)
                )
            ]
        if ids:
            log.warning("%d stale order(s), e.g. %s", len(ids), ", ".join(ids[:5]))
        self.ctx.metrics.gauge("stale_orders", len(ids))
        return ids

    def announce_queued(
        self, order_id: uuid.UUID | None = None, *, older_than: float = 0, limit: int = 1000
    ) -> int:
        """Announce queued, due items of leasable orders again (their message may be lost).

        With ``order_id``, that order's items; otherwise items nothing touched for
        ``older_than`` seconds, oldest first, at most ``limit``. Each announced item's
        ``updated_at`` is touched, so one item is re-announced at most once per window.
        Duplicates are harmless: a consumer leases the item or skips it.
        """
        now = self.ctx.clock()
        stmt = select(Item.id, Item.order_type).where(
            queued(),
            or_(Item.available_at.is_(None), Item.available_at <= now),
            exists().where(
                Order.id == Item.order_id, Order.state.in_([s.value for s in LEASABLE_ORDER_STATES])
            ),
        )
        if order_id is not None:
            stmt = stmt.where(Item.order_id == order_id)
        else:
            stmt = stmt.where(Item.updated_at <= now - timedelta(seconds=older_than))
        with self.ctx.db.transaction() as s:
            rows = s.execute(stmt.order_by(Item.updated_at).limit(limit)).all()
            if rows:
                s.execute(
                    update(Item)
                    .where(Item.id.in_([r.id for r in rows]))
                    .values(updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        by_type: dict[str, list[uuid.UUID]] = {}
        for row in rows:
            by_type.setdefault(row.order_type, []).append(row.id)
        for order_type, ids in by_type.items():
            self.ctx.dispatcher.items_available(order_type, ids)
        return len(rows)

    def stuck_applies(self) -> list[uuid.UUID]:
        """Orders ``approved`` with no apply activity for ``APPLY_RECOVERY_SECONDS`` and no
        live apply claim.

        Each apply attempt claims the order for ``APPLY_RECOVERY_SECONDS`` and touches it
        (``updated_at``) when it starts and when it fails, so an order untouched that long
        whose claim has lapsed (or that was never claimed) has no apply running: its worker
        died, or its message was lost. Set the setting above the longest apply you run. The
        orders returned are touched too, so each is sent again once per window, not on
        every run.
        """
        return self._claim_stale(
            Order.state == OrderState.APPROVED.value, apply_claim.claimable(self.ctx.clock())
        )

    def stuck_auto_approvals(self) -> list[uuid.UUID]:
        """Orders of auto-approving types left ``submitted`` for ``APPLY_RECOVERY_SECONDS``
        with no check run since (their ``check_auto_approval`` message was lost): announced
        again, once per window. An order whose check refused (event
        ``auto_approval_refused``) waits for a person instead."""
        auto = [t.type for t in self.ctx.registry if t.auto_approve]
        if not auto:
            return []
        return self._claim_stale(
            Order.state == OrderState.SUBMITTED.value,
            Order.type.in_(auto),
            ~exists().where(
                Event.order_id == Order.id,
                Event.event == "auto_approval_refused",
                Event.created_at >= Order.last_transitioned_at,
            ),
        )

    def _claim_stale(self, *conditions: ColumnElement[bool]) -> list[uuid.UUID]:
        """Up to 1,000 orders matching ``conditions`` untouched for ``APPLY_RECOVERY_SECONDS``,
        touched now in the same transaction: the next run (or a concurrent one: the rows
        are locked, and skipped by another run) leaves them alone for a window."""
        now = self.ctx.clock()
        cutoff = now - timedelta(seconds=self.ctx.settings.apply_recovery_seconds)
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

    def report_gauges(self) -> None:
        """``queue_depth`` and ``leases_active`` per order type."""
        with self.ctx.db.transaction() as s:
            rows = s.execute(
                select(Item.order_type, Item.state, func.count())
                .where(Item.state.in_(["queued", "leased", "in_progress"]))
                .group_by(Item.order_type, Item.state)
            ).all()
        depth: dict[str, int] = {t: 0 for t in self.ctx.registry.names()}
        active: dict[str, int] = dict(depth)
        for order_type, state, n in rows:
            target = depth if state == "queued" else active
            target[order_type] = target.get(order_type, 0) + n
        for order_type, n in depth.items():
            self.ctx.metrics.gauge("queue_depth", n, type=order_type)
        for order_type, n in active.items():
            self.ctx.metrics.gauge("leases_active", n, type=order_type)
