"""Operations housekeeping: health with counts, the event tail, pruning old orders, purging
idempotency keys (SPEC §9 ``ops``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..db.models import Event, Item, Order
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
        self, limit: int = 20, after_id: int | None = None, order_id: uuid.UUID | None = None
    ) -> list[dict[str, Any]]:
        """Events, newest last: the latest ``limit``, or (``after_id``) the next ones."""
        if not 1 <= limit <= MAX_TAIL:
            raise InvalidQuery(f"limit must be between 1 and {MAX_TAIL}", details={"limit": limit})
        stmt = select(Event)
        if order_id is not None:
            stmt = stmt.where(Event.order_id == order_id)
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
        cascade for items and parts, a trigger for the audit rows: migration 0003)."""
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
        return report

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
