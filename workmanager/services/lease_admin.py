"""Ending leases other than by their holder: the sweep and lease administration.

**The sweep** (:class:`Sweeper`) reclaims expired leases in bounded batches, safe with
many sweepers at once. **Lease administration** (:class:`LeaseAdmin`) acts by selector:
reclaim, release or extend held leases now.

Operators pick leases by agent, order, order type and age (``older_than``: the lease was
granted longer ago than that), past their expiry (``expired``), or all of them explicitly;
an empty selector is refused so that a typo never ends every lease in the system, except by
``reclaim``, where it means the expired leases (upstream's ``lease:reclaim``, SPEC §13).
Every action has a dry run that returns what would change and writes nothing.

- **reclaim** ends the lease as the sweep does when one expires (``requeue_or_fail``): the
  attempt stays spent, the item is requeued with backoff or fails when attempts are spent.
  Expired leases are those the backend says are gone (as the sweep asks it: a Redis lease
  extended by a heartbeat that touched only Redis is alive) and get event
  ``lease_expired``; leases ended early by selector get ``lease_reclaimed``.
- **release** ends it as the holder's own release does: the attempt is given back and the
  item is leasable again at once.
- **extend** pushes the recorded expiry (and the backend's hold) out by N seconds.

Rows are locked item first, then order (the agent paths' order; see ``order_steps``), in
batches of ``sweep_batch_size`` per transaction.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from ..db.models import Event, Item
from ..db.predicates import held
from ..errors import InvalidQuery, ValidationFailed, WorkManagerError
from ..lease_tokens import Holder
from ..states import ItemState
from ..types import Actor, Lease
from .context import ServiceContext
from .order_steps import lock_order_ref, maybe_requeue_order
from .retries import requeue_or_fail
from .transitions import clear_lease, move_item, record_event
from .views import iso

REQUEUED, FAILED, RELEASED, EXTENDED, SKIPPED = (
    "requeued",
    "failed",
    "released",
    "extended",
    "skipped",
)


@dataclass(frozen=True)
class LeaseSelector:
    """Which held leases to act on; the fields narrow each other (AND)."""

    agent_id: str | None = None
    order_id: uuid.UUID | None = None
    order_type: str | None = None
    older_than: timedelta | None = None
    all: bool = False
    item_id: uuid.UUID | None = None
    #: only leases past their expiry (and gone from the backend)
    expired: bool = False

    def empty(self) -> bool:
        named = (self.agent_id, self.order_id, self.order_type, self.older_than, self.item_id)
        return not self.all and not self.expired and all(v is None for v in named)

    def require(self) -> None:
        """Refuse an empty selector: acting on every lease must be asked for with ``all``."""
        if self.empty():
            raise InvalidQuery(
                "no lease selector: name an agent, an order, an order type or an age "
                "(older than), or select all leases explicitly",
                details={"selectors": ["agent", "order", "type", "older_than", "expired", "all"]},
            )

    def where(self, now: datetime) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [held()]
        if self.agent_id is not None:
            conds.append(Item.leased_by_agent_id == self.agent_id)
        if self.order_id is not None:
            conds.append(Item.order_id == self.order_id)
        if self.order_type is not None:
            conds.append(Item.order_type == self.order_type)
        if self.item_id is not None:
            conds.append(Item.id == self.item_id)
        if self.older_than is not None:
            conds.append(_granted_at() <= now - self.older_than)
        if self.expired:
            conds.append(Item.lease_expires_at <= now)
        return conds


def _granted_at() -> Any:
    """When the item's current lease was granted: its latest ``leased`` event."""
    return (
        select(func.max(Event.created_at))
        .where(Event.item_id == Item.id, Event.event == ItemState.LEASED.value)
        .correlate(Item)
        .scalar_subquery()
    )


@dataclass
class LeaseAdminResult:
    """What an action did (or, in a dry run, would do) to each selected lease."""

    action: str
    dry_run: bool
    changes: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for change in self.changes:
            out[change["outcome"]] = out.get(change["outcome"], 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "leases": self.changes,
        }


def lease_row(item: Item) -> dict[str, Any]:
    """A held lease as operators see it."""
    return {
        "item_id": str(item.id),
        "order_id": str(item.order_id),
        "order_type": item.order_type,
        "state": item.state,
        "agent_id": item.leased_by_agent_id,
        "lease_token": item.lease_token,
        "lease_expires_at": iso(item.lease_expires_at),
        "attempts": item.attempts,
        "max_attempts": item.max_attempts,
    }


def _lease_of(item: Item, heartbeat_every: int) -> Lease:
    """The held lease as an operator acts on it: without its secret (the token is empty;
    backend calls use :func:`holder_of`)."""
    assert item.lease_expires_at is not None
    return Lease(
        item.id,
        item.order_id,
        item.leased_by_agent_id or "",
        "",
        item.lease_expires_at,
        heartbeat_every,
    )


def holder_of(item: Item) -> Holder:
    """The current holder as the row records it: operators end or extend a lease without
    knowing its secret."""
    return Holder(item.leased_by_agent_id or "", item.lease_token, item.lease_secret_hash)


# (session, item, lease, now) -> (outcome, extra fields); runs inside the batch transaction
_Step = Callable[[Session, Item, Lease, datetime], tuple[str, dict[str, Any]]]
_Preview = Callable[[Item, datetime], tuple[str, dict[str, Any]]]


@dataclass
class _Batch:
    changes: list[dict[str, Any]]
    ended: list[tuple[Item, Holder, str]]  # the holder as it was before the lease ended


class LeaseAdmin:
    """``held``, ``reclaim``, ``release`` and ``extend`` held leases chosen by selector."""

    def __init__(self, ctx: ServiceContext, actor: Actor | None = None) -> None:
        self.ctx = ctx
        self.actor = actor or Actor("user", "operator")

    def held(self, selector: LeaseSelector) -> list[dict[str, Any]]:
        """The held leases the selector matches (no selector needed to look)."""
        with self.ctx.db.transaction() as s:
            stmt = select(Item).where(*selector.where(self.ctx.clock())).order_by(Item.id)
            return [lease_row(i) for i in s.scalars(stmt)]

    def reclaim(self, selector: LeaseSelector, dry_run: bool = False) -> LeaseAdminResult:
        """End the leases now as the sweep ends expired ones (requeue with backoff, or fail
        when attempts are spent). No selector: the expired leases (upstream's
        ``lease:reclaim``)."""
        if selector.empty():
            selector = replace(selector, expired=True)
        event = "lease_expired" if selector.expired else "lease_reclaimed"
        step = partial(self._reclaim, event=event)
        return self._run("reclaim", selector, dry_run, step, _preview_reclaim)

    def release(self, selector: LeaseSelector, dry_run: bool = False) -> LeaseAdminResult:
        """End the leases now and give their attempt back; the items are leasable at once."""
        return self._run("release", selector, dry_run, self._release, _preview_release)

    def extend(
        self, selector: LeaseSelector, seconds: int, dry_run: bool = False
    ) -> LeaseAdminResult:
        """Push each live lease's expiry out by ``seconds``; expired ones are skipped (the
        sweep reclaims them)."""
        if seconds <= 0:
            raise ValidationFailed(
                [{"path": "seconds", "message": "must be positive", "validator": "minimum"}]
            )
        step = partial(self._extend, seconds=seconds)
        return self._run("extend", selector, dry_run, step, partial(_preview_extend, seconds))

    # --- the batch machinery ----------------------------------------------------------
    def _run(
        self,
        action: str,
        selector: LeaseSelector,
        dry_run: bool,
        step: _Step,
        preview: _Preview,
    ) -> LeaseAdminResult:
        selector.require()
        now = self.ctx.clock()
        result = LeaseAdminResult(action, dry_run)
        with self.ctx.db.transaction() as s:
            ids = list(s.scalars(select(Item.id).where(*selector.where(now)).order_by(Item.id)))
        for chunk in _chunks(ids, self.ctx.settings.sweep_batch_size):
            if dry_run:
                look = partial(self._preview, selector=selector, chunk=chunk, now=now)
                batch = self.ctx.db.run(partial(look, preview=preview))
            else:
                act = partial(self._apply, selector=selector, chunk=chunk, now=now)
                batch = self.ctx.db.run(partial(act, step=step))
                self._after_commit(batch, expired=selector.expired)
            result.changes.extend(batch.changes)
        return result

    def _rows(
        self, s: Session, selector: LeaseSelector, chunk: list[uuid.UUID], now: datetime
    ) -> list[Item]:
        stmt = select(Item).where(Item.id.in_(chunk), *selector.where(now)).order_by(Item.id)
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Item)
        rows = list(s.scalars(stmt))
        # past the recorded expiry is not enough: the backend says which leases are gone
        return self.ctx.leases.dead(s, rows, now) if selector.expired else rows

    def _preview(
        self,
        s: Session,
        *,
        selector: LeaseSelector,
        chunk: list[uuid.UUID],
        now: datetime,
        preview: _Preview,
    ) -> _Batch:
        changes = []
        for item in self._rows(s, selector, chunk, now):
            outcome, extra = preview(item, now)
            changes.append({**lease_row(item), "outcome": outcome, **extra})
        return _Batch(changes, [])

    def _apply(
        self,
        s: Session,
        *,
        selector: LeaseSelector,
        chunk: list[uuid.UUID],
        now: datetime,
        step: _Step,
    ) -> _Batch:
        batch = _Batch([], [])
        for item in self._rows(s, selector, chunk, now):
            before, holder = lease_row(item), holder_of(item)  # the step clears the row
            lease = _lease_of(item, self.ctx.settings.heartbeat_every_seconds)
            outcome, extra = step(s, item, lease, now)
            batch.changes.append({**before, "outcome": outcome, **extra})
            if outcome in (REQUEUED, FAILED, RELEASED):
                batch.ended.append((item, holder, outcome))
        return batch

    def _after_commit(self, batch: _Batch, expired: bool = False) -> None:
        requeued: dict[str, list[uuid.UUID]] = {}
        for item, holder, outcome in batch.ended:
            self.ctx.leases.released(item, holder)
            if expired:  # counted as the sweep counts the leases it reclaims
                self.ctx.metrics.increment("leases_expired_total", type=item.order_type)
            else:
                self.ctx.metrics.increment(
                    "leases_released_total",
                    type=item.order_type,
                    agent_id=holder.agent_id,
                    tenant=item.tenant_id,
                )
            if outcome == FAILED:
                self.ctx.metrics.increment(
                    "items_failed_total", type=item.order_type, error_code="max_attempts_exceeded"
                )
            else:
                requeued.setdefault(item.order_type, []).append(item.id)
        for order_type, ids in requeued.items():
            self.ctx.dispatcher.items_available(order_type, ids)

    # --- the steps --------------------------------------------------------------------
    def _reclaim(
        self, s: Session, item: Item, lease: Lease, now: datetime, *, event: str
    ) -> tuple[str, dict[str, Any]]:
        requeued = requeue_or_fail(s, self.ctx.settings, item, self.actor, now, event=event)
        return (REQUEUED if requeued else FAILED), {"available_at": iso(item.available_at)}

    def _release(
        self, s: Session, item: Item, lease: Lease, now: datetime
    ) -> tuple[str, dict[str, Any]]:
        order = lock_order_ref(s, item.order_id)
        clear_lease(item)
        item.attempts, item.available_at = max(item.attempts - 1, 0), None
        move_item(
            s,
            item,
            ItemState.QUEUED,
            self.actor,
            event="lease_released",
            payload={"agent_id": lease.agent_id, "lease_token": item.lease_token},
        )
        maybe_requeue_order(s, order, self.actor, now)
        return RELEASED, {}

    def _extend(
        self, s: Session, item: Item, lease: Lease, now: datetime, *, seconds: int
    ) -> tuple[str, dict[str, Any]]:
        new_expiry = lease.expires_at + timedelta(seconds=seconds)
        ttl = math.ceil((new_expiry - now).total_seconds())
        try:
            self.ctx.leases.extend(item, holder_of(item), now, ttl)
        except WorkManagerError as exc:  # expired, or the backend no longer holds it
            return SKIPPED, {"reason": f"{exc.code}: {exc.message}"}
        lock_order_ref(s, item.order_id)  # agent paths lock the item, then its order
        item.lease_expires_at = new_expiry
        record_event(
            s,
            item.order_id,
            "lease_extended",
            self.actor,
            item_id=item.id,
            payload={"seconds": seconds, "lease_expires_at": iso(new_expiry)},
        )
        return EXTENDED, {"new_lease_expires_at": iso(new_expiry)}


def _preview_reclaim(item: Item, now: datetime) -> tuple[str, dict[str, Any]]:
    return (REQUEUED if item.attempts < item.max_attempts else FAILED), {}


def _preview_release(item: Item, now: datetime) -> tuple[str, dict[str, Any]]:
    return RELEASED, {}


def _preview_extend(seconds: int, item: Item, now: datetime) -> tuple[str, dict[str, Any]]:
    if item.lease_expires_at is None or item.lease_expires_at <= now:
        return SKIPPED, {"reason": "lease_expired: the lease has expired"}
    new_expiry = item.lease_expires_at + timedelta(seconds=seconds)
    return EXTENDED, {"new_lease_expires_at": iso(new_expiry)}


def _chunks(ids: list[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(ids), max(size, 1)):
        yield ids[start : start + size]


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
