"""Reclaiming expired leases, in bounded batches, safe with many sweepers at once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..db.models import Item
from ..db.predicates import held
from ..types import Actor
from .context import ServiceContext
from .lifecycle import requeue_or_fail


@dataclass
class SweepResult:
    """Items requeued (by order type) and the number failed (by order type)."""

    requeued: dict[str, list[uuid.UUID]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def reclaimed(self) -> int:
        return sum(len(v) for v in self.requeued.values()) + sum(self.failed.values())

    def merge(self, other: SweepResult) -> None:
        for order_type, ids in other.requeued.items():
            self.requeued[order_type].extend(ids)
        for order_type, n in other.failed.items():
            self.failed[order_type] += n


class Sweeper:
    """Finds held items past their recorded expiry (index ``ix_work_items_lease_expiry``),
    asks the lease backend which are really dead, and requeues or fails those.

    Rows are taken with ``SKIP LOCKED`` on PostgreSQL, so concurrent sweepers split the
    work instead of waiting on each other; cost is proportional to the expired leases.

    When the backend says it may have lost leases (Redis flushed or restarted), the sweep
    first audits every held row, paged by id, so a lease the database shows as held but
    the store no longer has is reclaimed now rather than when its recorded expiry passes.
    That costs one pass over the held rows, once per data loss: the backend records the
    audit only when it has finished, so an audit cut short (a database error) is done
    again by the next sweep.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def sweep(self, batch_size: int | None = None, max_batches: int = 20) -> SweepResult:
        size = batch_size or self.ctx.settings.sweep_batch_size
        total = SweepResult()
        if self.ctx.leases.lost_track():
            total.merge(self._audit(size))
            self.ctx.leases.audited()  # only now: a failed audit is tried again next sweep
        for _ in range(max_batches):
            result, examined = self.ctx.db.run(lambda s: self._batch(s, size))
            total.merge(result)
            if examined < size:
                break
        self._report(total)
        return total

    def _audit(self, size: int) -> SweepResult:
        """Check every held row against the backend, ``size`` rows per transaction.

        A row its holder has locked right now (a heartbeat or submit that the lost store
        lock will make fail) is not skipped: it is checked again in a transaction of its
        own that waits for the holder's, so no lost lease waits for its recorded expiry.
        """
        total, after = SweepResult(), None
        while True:
            page = self.ctx.db.run(partial(self._held_ids, size=size, after=after))
            result, seen = self.ctx.db.run(partial(self._audit_rows, ids=page, wait=False))
            total.merge(result)
            for item_id in [i for i in page if i not in seen]:
                result, _ = self.ctx.db.run(partial(self._audit_rows, ids=[item_id], wait=True))
                total.merge(result)
            if len(page) < size:
                return total
            after = page[-1]

    @staticmethod
    def _held_ids(s: Session, size: int, after: uuid.UUID | None) -> list[uuid.UUID]:
        stmt = select(Item.id).where(held()).order_by(Item.id).limit(size)
        if after is not None:
            stmt = stmt.where(Item.id > after)
        return list(s.scalars(stmt))

    def _audit_rows(
        self, s: Session, ids: list[uuid.UUID], wait: bool
    ) -> tuple[SweepResult, set[uuid.UUID]]:
        stmt = select(Item).where(Item.id.in_(ids), held())
        rows = self._locked(s, stmt, wait=wait)
        return self._reclaim(s, rows), {i.id for i in rows}

    def _batch(self, s: Session, size: int) -> tuple[SweepResult, int]:
        now = self.ctx.clock()
        stmt = (
            select(Item)
            .where(held(), Item.lease_expires_at <= now)
            .order_by(Item.lease_expires_at)
            .limit(size)
        )
        rows = self._locked(s, stmt)
        return self._reclaim(s, rows), len(rows)

    @staticmethod
    def _locked(s: Session, stmt: Select[Item], wait: bool = False) -> list[Item]:
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=not wait)
        return list(s.scalars(stmt))

    def _reclaim(self, s: Session, rows: list[Item]) -> SweepResult:
        now = self.ctx.clock()
        result = SweepResult()
        for item in self.ctx.leases.dead(s, rows, now):
            if requeue_or_fail(
                s, self.ctx.settings, item, Actor.system(), now, event="lease_expired"
            ):
                result.requeued[item.order_type].append(item.id)
            else:
                result.failed[item.order_type] += 1
        return result

    def _report(self, result: SweepResult) -> None:
        for order_type, ids in result.requeued.items():
            self.ctx.metrics.increment("leases_expired_total", len(ids), type=order_type)
            self.ctx.dispatcher.items_available(order_type, ids)
        for order_type, n in result.failed.items():
            self.ctx.metrics.increment("leases_expired_total", n, type=order_type)
            self.ctx.metrics.increment(
                "items_failed_total", n, type=order_type, error_code="max_attempts_exceeded"
            )
