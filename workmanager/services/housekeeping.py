"""Operations housekeeping: health with counts, the event tail, pruning old orders, events
and provenance, purging idempotency keys (SPEC §9 ``ops``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.orm import Session

from ..db.models import Event, Item, Order, Provenance
from ..db.session import display_url
from ..errors import InvalidQuery, SchemaOutdated
from ..states import HELD_ITEM_STATES, OrderState
from . import readiness
from .context import ServiceContext
from .idempotency import IdempotencyService
from .views import event_dict

#: Order states ``prune`` deletes: finished for good, kept only as history.
PRUNABLE = (OrderState.COMPLETED.value, OrderState.DEAD_LETTERED.value)
PRUNE_BATCH = 500
MAX_TAIL = 1000

#: Called after each pruned batch with (orders deleted so far, orders to delete).
Progress = Callable[[int, int], None]


@dataclass
class PruneReport:
    cutoff: str
    dry_run: bool
    orders: int = 0
    items: int = 0
    #: audit rows older than the cutoff, of orders that are kept (upstream's ops:prune)
    events: int = 0
    provenance: int = 0

    @property
    def total(self) -> int:
        return self.orders + self.events + self.provenance

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Housekeeping:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- health -----------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Reachability of the database, the broker and (when it holds leases) Redis, and
        counts by state. ``ok`` is false when any component in use is down."""
        components = readiness.check(self.ctx)
        if "redis" not in components:
            components["redis"] = f"not used (lease backend: {self.ctx.settings.lease_backend})"
        counts: dict[str, Any] = {}
        if components["database"] == "ok":
            try:
                counts = self.counts()
            except SchemaOutdated as exc:  # reachable, but ``db upgrade`` has not run
                components["database"] = f"down: {exc.message}; {exc.hint}"
        ok = all(v == "ok" or v.startswith("not used") for v in components.values())
        # which database, so a command run from another directory is seen at once
        report: dict[str, Any] = {
            "ok": ok,
            "database_url": display_url(self.ctx.settings.database_url),
            "components": components,
        }
        report.update(counts)
        return report

    def counts(self) -> dict[str, Any]:
        """Orders and items by state, and held leases (those past their expiry apart)."""
        now = self.ctx.clock()
        held = Item.state.in_([s.value for s in HELD_ITEM_STATES])
        with self.ctx.db.transaction() as s:
            orders = dict(s.execute(select(Order.state, func.count()).group_by(Order.state)).all())
            items = dict(s.execute(select(Item.state, func.count()).group_by(Item.state)).all())
            expired = s.scalar(select(func.count()).where(held, Item.lease_expires_at <= now))
        return {
            "orders": {str(k): int(v) for k, v in sorted(orders.items())},
            "items": {str(k): int(v) for k, v in sorted(items.items())},
            "leases": {
                "held": sum(int(items.get(st.value, 0)) for st in HELD_ITEM_STATES),
                "expired": int(expired or 0),
            },
        }

    # --- events -----------------------------------------------------------------------
    def tail(
        self,
        limit: int = 20,
        after_id: int | None = None,
        order_id: uuid.UUID | None = None,
        item_id: uuid.UUID | None = None,
        event: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events, newest last: the latest ``limit``, or (``after_id``) the next ones; of
        one order, one item, one event name (the filters narrow each other)."""
        if not 1 <= limit <= MAX_TAIL:
            raise InvalidQuery(f"limit must be between 1 and {MAX_TAIL}", details={"limit": limit})
        stmt = select(Event)
        if order_id is not None:
            stmt = stmt.where(Event.order_id == order_id)
        if item_id is not None:
            stmt = stmt.where(Event.item_id == item_id)
        if event is not None:
            stmt = stmt.where(Event.event == event)
        if after_id is not None:
            stmt = stmt.where(Event.id > after_id).order_by(Event.id).limit(limit)
        else:
            stmt = stmt.order_by(Event.id.desc()).limit(limit)
        with self.ctx.db.transaction() as s:
            rows = [event_dict(e) for e in s.scalars(stmt)]
        return rows if after_id is not None else rows[::-1]

    # --- prune and purge --------------------------------------------------------------
    def prune(
        self, older_than: timedelta, dry_run: bool = False, progress: Progress | None = None
    ) -> PruneReport:
        """Delete completed and dead-lettered orders whose last transition is older than
        ``older_than``; their items, parts, events and provenance go with them (foreign-key
        cascade for items and parts, a trigger for the audit rows: migration 0003). Then,
        as upstream's ``ops:prune``, the events and provenance rows written before the
        cutoff of the orders that are kept (an order's state lives on its row, not in its
        events; only its history that old goes)."""
        cutoff = self.ctx.clock() - older_than
        old = Order.state.in_(PRUNABLE), Order.last_transitioned_at <= cutoff
        with self.ctx.db.transaction() as s:
            ids = list(s.scalars(select(Order.id).where(*old).order_by(Order.id)))
        report = PruneReport(cutoff=cutoff.isoformat(), dry_run=dry_run, orders=len(ids))
        for start in range(0, len(ids), PRUNE_BATCH):
            chunk = ids[start : start + PRUNE_BATCH]
            report.items += self.ctx.db.run(partial(self._delete, chunk=chunk, dry_run=dry_run))
            if progress is not None:
                progress(min(start + PRUNE_BATCH, len(ids)), len(ids))
        pruned = select(Order.id).where(*old)  # a dry run: their audit rows go with them
        report.events = self._prune_audit(Event, cutoff, dry_run, pruned)
        report.provenance = self._prune_audit(Provenance, cutoff, dry_run, pruned)
        return report

    def _prune_audit(
        self,
        model: type[Event] | type[Provenance],
        cutoff: datetime,
        dry_run: bool,
        pruned: Select[uuid.UUID],
    ) -> int:
        """Rows of ``model`` created before ``cutoff``: counted (apart from those of the
        orders pruned with them), or deleted in batches of ``PRUNE_BATCH`` (one short
        transaction each, never a table-long lock)."""
        old = model.created_at < cutoff
        if dry_run:
            kept = or_(model.order_id.is_(None), model.order_id.not_in(pruned))
            stmt = select(func.count()).select_from(model).where(old, kept)
            with self.ctx.db.transaction() as s:
                return int(s.scalar(stmt) or 0)
        deleted = 0
        while True:

            def batch(s: Session) -> int:
                ids = list(s.scalars(select(model.id).where(old).limit(PRUNE_BATCH)))
                if ids:
                    s.execute(delete(model).where(model.id.in_(ids)))
                return len(ids)

            n = self.ctx.db.run(batch)
            deleted += n
            if n < PRUNE_BATCH:
                return deleted

    @staticmethod
    def _delete(s: Session, *, chunk: list[uuid.UUID], dry_run: bool) -> int:
        items = int(s.scalar(select(func.count()).where(Item.order_id.in_(chunk))) or 0)
        if not dry_run:
            # the state check again: an order retried since it was listed is kept
            s.execute(delete(Order).where(Order.id.in_(chunk), Order.state.in_(PRUNABLE)))
        return items

    def purge_keys(self, older_than: timedelta) -> int:
        """Delete idempotency keys created longer ago than ``older_than``."""
        return IdempotencyService(self.ctx).purge(older_than=self.ctx.clock() - older_than)
