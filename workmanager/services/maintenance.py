"""Maintenance, the control plane's periodic chores (beat, :class:`Maintenance`):
dead-letter old failures, flag stale orders, purge idempotency keys, re-announce lost
work, recover applies. The operator's chores beside it are
:mod:`workmanager.services.housekeeping`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from .. import deployment
from ..db.models import Item, Order
from ..db.order_store import build_order_store
from ..db.predicates import count_rows, held, leasable, waiting
from ..ratelimit.database import purge_full
from ..saying import some
from ..states import OrderState
from ..types import Actor
from .context import ServiceContext
from .idempotency import IdempotencyService

log = logging.getLogger("workmanager.maintenance")
Sender = Callable[[uuid.UUID], bool | None]  # one order's message; False: not taken
RECOVERY = {"step": "recover_applies"}


@dataclass
class MaintenanceReport:
    """What :meth:`Maintenance.run` did; each figure names the step that fills it."""

    dead_lettered_orders: int = field(default=0, metadata={"step": "dead_letter"})
    dead_lettered_items: int = field(default=0, metadata={"step": "dead_letter"})
    #: how many orders are stale, and the ids of the first 1,000
    stale_total: int = field(default=0, metadata={"step": "check_stale"})
    stale_orders: list[str] = field(default_factory=list, metadata={"step": "check_stale"})
    purged_keys: int = field(default=0, metadata={"step": "purge_keys"})
    #: rate-limit buckets on the database untouched long enough to be full again
    purged_rate_buckets: int = field(default=0, metadata={"step": "purge_keys"})
    recovered_applies: list[uuid.UUID] = field(default_factory=list, metadata=RECOVERY)
    recovered_auto_approvals: list[uuid.UUID] = field(default_factory=list, metadata=RECOVERY)
    reannounced_items: int = field(default=0, metadata={"step": "recover_applies"})
    #: orders to recover whose message the broker did not take (sent again next window)
    not_sent: list[uuid.UUID] = field(default_factory=list, metadata=RECOVERY)

    def of_steps(self, *steps: str) -> dict[str, Any]:
        """The figures of the steps that ran (``dead_letter``, ``check_stale``,
        ``purge_keys``, ``recover_applies``): a step not run reports nothing, not zero."""
        figures = asdict(self)
        return {f.name: figures[f.name] for f in fields(self) if f.metadata["step"] in steps}


class Maintenance:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: Dead-lettering and the touches, one path per database (db/order_store.py).
        self.store = build_order_store(ctx)
        #: the types whose gauges this process last reported above zero
        self._gauged: set[str] = set()

    def run(
        self,
        *,
        dead_letter: bool = True,
        check_stale: bool = True,
        purge_keys: bool = True,
        recover_applies: bool = True,
    ) -> MaintenanceReport:
        # its recoveries and dead-lettering judge ages and claims by this process's clock
        deployment.check(self.ctx.db, self.ctx.settings, first=False)
        report = MaintenanceReport()
        if dead_letter:
            report.dead_lettered_orders, report.dead_lettered_items = self._dead_letter()
            if report.dead_lettered_orders:
                log.warning(
                    "%d failed order(s) dead-lettered; which: `workmanager orders list"
                    " --state dead_lettered --sort -last_transitioned_at`",
                    report.dead_lettered_orders,
                )
        if check_stale and self.ctx.settings.enable_alerts:
            report.stale_total, report.stale_orders = self.stale_orders()
        if purge_keys:
            report.purged_keys = IdempotencyService(self.ctx).purge()
            report.purged_rate_buckets = purge_full(self.ctx.db)
        if recover_applies:
            send = self.ctx.dispatcher
            report.recovered_applies = self._sent(self.stuck_applies(), send.order_approved, report)
            stuck = self.stuck_auto_approvals()
            report.recovered_auto_approvals = self._sent(stuck, send.order_submitted, report)
            after = self.ctx.settings.reannounce_after_seconds
            if after and self.ctx.settings.announced_types:
                report.reannounced_items = self.announce_queued(older_than=after)
        self.report_gauges()
        # when it last ran, for the alert that beat or the control worker stopped
        # (deploy/prometheus/alerts.yml, WorkManagerMaintenanceStalled)
        self.ctx.metrics.gauge(
            "maintenance_last_run_timestamp_seconds", self.ctx.clock().timestamp()
        )
        return report

    @staticmethod
    def _sent(ids: list[uuid.UUID], send: Sender, report: MaintenanceReport) -> list[uuid.UUID]:
        """The orders of ``ids`` whose message the broker took; the others go to the
        report's ``not_sent`` (a run with the broker down reported them recovered). They
        were touched, so they are sent again after ``APPLY_RECOVERY_SECONDS``."""
        sent: list[uuid.UUID] = []
        for order_id in ids:
            (report.not_sent if send(order_id) is False else sent).append(order_id)
        return sent

    def _dead_letter(self) -> tuple[int, int]:
        """Failed orders older than ``DEAD_LETTER_AFTER_HOURS``, and their items, dead."""
        cutoff = self.ctx.clock() - timedelta(hours=self.ctx.settings.dead_letter_after_hours)
        return self.store.dead_letter(cutoff, Actor.system())

    def stale_orders(self) -> tuple[int, list[str]]:
        """Orders queued or in progress for longer than ``STALE_ORDER_HOURS``: how many
        (logged, and the ``stale_orders`` gauge) and the ids of the first 1,000."""
        cutoff = self.ctx.clock() - timedelta(hours=self.ctx.settings.stale_order_hours)
        stale = (
            Order.state.in_([OrderState.QUEUED.value, OrderState.IN_PROGRESS.value]),
            Order.last_transitioned_at <= cutoff,
        )
        with self.ctx.db.transaction() as s:
            ids = [str(i) for i in s.scalars(select(Order.id).where(*stale).limit(1000))]
            total = len(ids) if len(ids) < 1000 else count_rows(s, Order, *stale)
        if ids:
            log.warning("%d stale order(s), e.g. %s", total, some(ids, at_most=5))
        self.ctx.metrics.gauge("stale_orders", total)
        return total, ids

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
        before = None if order_id is not None else now - timedelta(seconds=older_than)
        rows = self.store.touch_queued(order_id, before, now, limit)
        by_type: dict[str, list[uuid.UUID]] = {}
        for item_id, order_type in rows:
            by_type.setdefault(order_type, []).append(item_id)
        sent = 0
        for order_type, ids in by_type.items():
            # an announcement unread for every queued item of the type (its consumers
            # stopped): copies would only pile up, one per item and window. Fewer than
            # the queued items, one may be lost: the stale ones are announced again
            waiting = None if order_id is not None else self.ctx.dispatcher.waiting(order_type)
            if waiting is not None and waiting >= self._leasable(order_type, now):
                continue
            self.ctx.dispatcher.items_available(order_type, ids)
            sent += len(ids)
        return sent

    def _leasable(self, order_type: str, now: datetime) -> int:
        """The items of ``order_type`` a checkout may take now: what an announcement is
        for (not the queued items of a failed order, never announced)."""
        with self.ctx.db.transaction() as s:
            return count_rows(s, Item, Item.order_type == order_type, leasable(now))

    def stuck_applies(self) -> list[uuid.UUID]:
        """Orders ``approved`` with no apply activity for ``APPLY_RECOVERY_SECONDS`` and no
        live apply claim.

        Each apply attempt claims the order for ``APPLY_RECOVERY_SECONDS`` and touches it
        (``updated_at``) when it starts and when it fails, so an order untouched that long
        whose claim has lapsed (or that was never claimed) has no apply running: its worker
        died, or its message was lost (a running body's claim is renewed while it runs). The
        orders returned are touched too, so each is sent again once per window, not on
        every run.
        """
        now = self.ctx.clock()
        return self.store.claim_stuck_applies(self._stale_cutoff(now), now)

    def stuck_auto_approvals(self) -> list[uuid.UUID]:
        """Orders of auto-approving types left ``submitted`` for ``APPLY_RECOVERY_SECONDS``
        with no check run since (their ``check_auto_approval`` message was lost): announced
        again, once per window. An order whose check refused (event
        ``auto_approval_refused``) waits for a person instead."""
        auto = [t.type for t in self.ctx.registry if t.auto_approve]
        if not auto:
            return []
        now = self.ctx.clock()
        return self.store.claim_stuck_auto_approvals(self._stale_cutoff(now), now, auto)

    def _stale_cutoff(self, now: datetime) -> datetime:
        """Orders untouched since then are stale (``APPLY_RECOVERY_SECONDS``); the store
        touches those it returns, so the next run (or a concurrent one: the rows are
        locked, and skipped by another run) leaves them alone for a window."""
        return now - timedelta(seconds=self.ctx.settings.apply_recovery_seconds)

    def report_gauges(self) -> None:
        """``queue_depth`` (items a checkout will take: not the queued ones of a failed
        order, until it is retried or dead-lettered) and ``leases_active`` per type: 0 for
        each registered type without any, and once for a type this process last reported
        above 0 that has none now (no longer registered, its orders deleted: a gauge keeps
        its last value, and the queue-depth alert fired for ever)."""
        counted = select(Item.order_type, func.count()).group_by(Item.order_type)
        with self.ctx.db.transaction() as s:
            queued = s.execute(counted.where(waiting())).all()
            holding = s.execute(counted.where(held())).all()
        depth: dict[str, int] = {t: 0 for t in (*self.ctx.registry.names(), *self._gauged)}
        active: dict[str, int] = dict(depth)
        for target, rows in ((depth, queued), (active, holding)):
            for order_type, n in rows:
                target[order_type] = target.get(order_type, 0) + n
        self._gauged = {t for t, n in (*depth.items(), *active.items()) if n}
        for order_type, n in depth.items():
            self.ctx.metrics.gauge("queue_depth", n, type=order_type)
        for order_type, n in active.items():
            self.ctx.metrics.gauge("leases_active", n, type=order_type)
