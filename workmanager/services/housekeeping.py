"""Housekeeping, the operator's chores (the ``ops`` commands, :class:`Housekeeping`, SPEC
§9): health with counts, the event tail, pruning old orders, events and provenance,
purging idempotency keys. The periodic chores beside it are
:mod:`workmanager.services.maintenance`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, update

from .. import readiness
from ..db.models import Event, Item, Order, Provenance
from ..db.order_store import OrderStore, build_order_store
from ..db.predicates import old_audit
from ..db.session import display_url
from ..errors import InvalidQuery, SchemaOutdated
from ..reads.expiry import lock_ends
from ..states import HELD_ITEM_STATES, SETTLED_ORDER_STATES
from .context import ServiceContext
from .views import event_dict, iso

log = logging.getLogger("workmanager.maintenance")


#: Order states ``prune`` deletes: finished for good, kept only as history.
PRUNABLE = tuple(sorted(SETTLED_ORDER_STATES))
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
                components["database"] = f"down: {readiness.reason(exc)}"
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
        """Orders and items by state, and held leases (those expired apart: with a lock
        store, those whose lock is gone, as every read says, reads/expiry.py; the row's
        expiry lags behind a heartbeat that touched only the lock)."""
        now = self.ctx.clock()
        held = Item.state.in_([s.value for s in HELD_ITEM_STATES])
        with self.ctx.db.reads() as s:
            orders = dict(s.execute(select(Order.state, func.count()).group_by(Order.state)).all())
            items = dict(s.execute(select(Item.state, func.count()).group_by(Item.state)).all())
            ids = list(s.scalars(select(Item.id).where(held))) if self.ctx.leases.lock else []
            expired = s.scalar(select(func.count()).where(held, Item.lease_expires_at <= now))
        ends = lock_ends(self.ctx, ids)
        if ends is not None:
            expired = len(ids) - len(ends)
        return {
            "orders": {str(k): int(v) for k, v in sorted(orders.items())},
            "items": {str(k): int(v) for k, v in sorted(items.items())},
            "leases": {
                "held": sum(int(items.get(st.value, 0)) for st in HELD_ITEM_STATES),
                "expired": int(expired or 0),
            },
        }

    # --- events -----------------------------------------------------------------------
    def last_event_id(self) -> int:
        """The newest event's id (0 when none): where following starts after ``-n 0``."""
        with self.ctx.db.transaction() as s:
            return int(s.scalar(select(func.max(Event.id))) or 0)

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
        if not 0 <= limit <= MAX_TAIL:
            raise InvalidQuery(f"limit must be between 0 and {MAX_TAIL}", details={"limit": limit})
        if limit == 0:  # `tail -n 0 -f`: only what comes next
            return []
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
        cutoff of the completed and dead-lettered orders that are kept, and of no order:
        not those of an order that can still change (``OPEN_ORDER_STATES``: its evidence
        is in its ``submitted`` events; :func:`~workmanager.db.predicates.old_audit`)."""
        cutoff = self.ctx.clock() - older_than
        old = Order.state.in_(PRUNABLE), Order.last_transitioned_at <= cutoff
        with self.ctx.db.transaction() as s:
            ids = list(s.scalars(select(Order.id).where(*old).order_by(Order.id)))
        report = PruneReport(cutoff=iso(cutoff) or "", dry_run=dry_run)
        store = build_order_store(self.ctx)
        for start in range(0, len(ids), PRUNE_BATCH):
            chunk = ids[start : start + PRUNE_BATCH]
            done = self._would_prune(chunk) if dry_run else store.prune(chunk, PRUNABLE)
            report.orders, report.items = report.orders + done[0], report.items + done[1]
            if progress is not None:
                progress(min(start + PRUNE_BATCH, len(ids)), len(ids))
        if dry_run:  # the audit rows of the orders it would prune go with them
            pruned = select(Order.id).where(*old)
            report.events = self._old_audit(Event, cutoff, pruned)
            report.provenance = self._old_audit(Provenance, cutoff, pruned)
        else:
            report.events = _prune_audit(store, "events", cutoff)
            report.provenance = _prune_audit(store, "provenance", cutoff)
        return report

    def _would_prune(self, chunk: list[uuid.UUID]) -> tuple[int, int]:
        with self.ctx.db.transaction() as s:
            items = s.scalar(select(func.count()).where(Item.order_id.in_(chunk)))
        return len(chunk), int(items or 0)

    def _old_audit(
        self, model: type[Event] | type[Provenance], cutoff: datetime, pruned: Select[Any]
    ) -> int:
        """Rows of ``model`` created before ``cutoff``, apart from those of the orders a
        prune would delete (they go with them)."""
        kept = or_(model.order_id.is_(None), model.order_id.not_in(pruned))
        stmt = select(func.count()).select_from(model).where(*old_audit(model, cutoff), kept)
        with self.ctx.db.transaction() as s:
            return int(s.scalar(stmt) or 0)

    def restored(self, gap: int) -> int:
        """After the database was restored from a backup (``workmanager ops restored``):
        every item's fencing token raised by ``gap``, in one statement; how many items.
        The rows forgot the grants made since the backup, so the next grant would hand
        out a fence a holder had already (SPEC §4.4: strictly greater than any before),
        and a lease released since would be live again. Past the gap every older token
        is refused (``lease_conflict``); a held row's lease ends at its expiry (the sweep)."""
        with self.ctx.db.transaction() as s:
            done = s.execute(update(Item).values(lease_token=Item.lease_token + gap))
            count = int(getattr(done, "rowcount", 0) or 0)
        log.warning("fencing tokens of %d item(s) raised by %d (database restored)", count, gap)
        return count


def _prune_audit(store: OrderStore, audit: str, cutoff: datetime) -> int:
    """``audit``'s rows created before ``cutoff`` deleted in batches of ``PRUNE_BATCH``:
    one short transaction each, never a table-long lock."""
    deleted = after = 0
    while True:
        n, after = store.prune_audit(audit, cutoff, PRUNE_BATCH, after)
        deleted += n
        if n < PRUNE_BATCH:
            return deleted
