"""Ending leases other than by their holder: the sweep and lease administration.

**The sweep** (:class:`Sweeper`) reclaims expired leases in bounded batches, safe with many
sweepers at once. **Lease administration** (:class:`LeaseAdmin`): reclaim, release, extend.

Operators pick leases by agent, order, order type, age (``older_than``: granted longer
ago), expiry (``expired``), or all explicitly; an empty selector is refused (a typo never
ends every lease) except by ``reclaim``, where it means the expired leases (SPEC §13).
Every action has a dry run that returns what would change and writes nothing.

- **reclaim** ends the lease as the sweep does when one expires: the attempt stays spent,
  the item is requeued with backoff or fails when attempts are spent. Expired leases are
  those the lock store says are gone (as the sweep asks it: a Redis lease extended by a
  heartbeat that touched only Redis is alive) and get event ``lease_expired``; leases
  ended early by selector get ``lease_reclaimed``.
- **release** ends it as the holder's own release does: the attempt is given back and the
  item is leasable again at once.
- **extend** pushes the recorded expiry (and the lock store's hold) out by N seconds.

This module selects (a read), previews and reports (metrics, the dispatcher, the log); every
write is the store's, ``sweep_batch_size`` leases a transaction, each acted on only while it
is still the one selected (its fence)."""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .. import deployment
from ..db import extends
from ..db.models import Item
from ..db.predicates import held
from ..db.store import Batch, Held, LeaseChange, Store, build_store, dead_or_alive
from ..errors import Unavailable, ValidationFailed
from ..reads.expiry import live_end, lock_ends
from ..reads.leases import LeaseSelector, held_leases
from ..saying import some
from ..settings_values import MAX_DURATION_SECONDS
from ..types import Actor, AgentInfo
from .context import ServiceContext
from .views import iso

#: How far an operator's extend pushes a lease out when they name no duration (the CLI's
#: ``leases extend`` and the console's form).
DEFAULT_EXTEND_SECONDS = 900

REQUEUED, FAILED, RELEASED = "requeued", "failed", "released"
EXTENDED, SKIPPED = "extended", "skipped"

log = logging.getLogger("workmanager.leases")


@dataclass
class LeaseAdminResult:
    """What an action did (or, in a dry run, would do) to each selected lease."""

    action: str
    dry_run: bool
    changes: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(change["outcome"] for change in self.changes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "leases": self.changes,
        }


def lease_row(lease: Held) -> dict[str, Any]:
    """A held lease as operators see it."""
    return {
        "item_id": str(lease.item_id),
        "order_id": str(lease.order_id),
        "order_type": lease.order_type,
        "state": lease.state,
        "agent_id": lease.agent_id,
        "lease_token": lease.lease_token,
        "lease_expires_at": iso(lease.lease_expires_at),
        "attempts": lease.attempts,
        "max_attempts": lease.max_attempts,
    }


def change_row(change: LeaseChange) -> dict[str, Any]:
    """A lease's change as operators see it: the lease as it was, and its outcome."""
    row = {**lease_row(change.lease), "outcome": change.outcome}
    if change.outcome in (REQUEUED, FAILED):
        row["available_at"] = iso(change.at)
    elif change.outcome == EXTENDED:
        row["new_lease_expires_at"] = iso(change.at)
    elif change.outcome == SKIPPED:
        row["reason"] = change.reason
    return row


class LeaseAdmin:
    """``held``, ``reclaim``, ``release`` and ``extend`` held leases chosen by selector."""

    def __init__(self, ctx: ServiceContext, actor: Actor | None = None) -> None:
        self.ctx = ctx
        self.actor = actor or Actor("user", "operator")
        self.store: Store = build_store(ctx)

    def held(self, selector: LeaseSelector) -> list[dict[str, Any]]:
        """The held leases the selector matches (no selector needed to look), each with
        its expiry as every read shows it (the lock's, with a lock store)."""
        now = self.ctx.clock()
        leases = self._select(selector, now)
        # a read: a lock store that does not answer leaves the rows' figures, with a warning
        ends = lock_ends(self.ctx, [lease.item_id for lease in leases])
        return [lease_row(lease) for lease in _ending(leases, ends, now)]

    def reclaim(self, selector: LeaseSelector, dry_run: bool = False) -> LeaseAdminResult:
        """End the leases now as the sweep ends expired ones (requeue with backoff, or fail
        when attempts are spent). No selector: the expired leases (upstream's
        ``lease:reclaim``)."""
        if selector.empty():
            selector = replace(selector, expired=True)
        event = "lease_expired" if selector.expired else "lease_reclaimed"

        def act(leases: Sequence[Held]) -> Batch:
            return self.store.reclaim(leases, self.actor, event, expired=selector.expired)

        return self._run("reclaim", selector, dry_run, act, _preview_reclaim)

    def release(self, selector: LeaseSelector, dry_run: bool = False) -> LeaseAdminResult:
        """End the leases now and give their attempt back; the items are leasable at once."""

        def act(leases: Sequence[Held]) -> Batch:
            return self.store.release_held(leases, self.actor)

        return self._run("release", selector, dry_run, act, _preview_release)

    def extend(
        self, selector: LeaseSelector, seconds: int, dry_run: bool = False
    ) -> LeaseAdminResult:
        """Push each live lease's expiry out by ``seconds``; expired ones are skipped (the
        sweep reclaims them)."""
        if not 0 < seconds <= MAX_DURATION_SECONDS:  # the CLI, the console, the API alike
            raise ValidationFailed.at(
                "seconds", f"1 to {MAX_DURATION_SECONDS} seconds (ten years)", "maximum"
            )

        def act(leases: Sequence[Held]) -> Batch:
            return self.store.extend(leases, self.actor, seconds)

        def preview(lease: Held, now: datetime) -> LeaseChange:
            if lease.lease_expires_at is None or lease.lease_expires_at <= now:
                return LeaseChange(lease, SKIPPED, reason="lease_expired: the lease has expired")
            later = extends.pushed_out(lease.lease_expires_at, seconds)
            if later is None:
                return LeaseChange(lease, SKIPPED, reason=extends.PAST_DATES)
            return LeaseChange(lease, EXTENDED, later)

        return self._run("extend", selector, dry_run, act, preview)

    # --- select, preview or act, report ------------------------------------------------
    def _select(self, selector: LeaseSelector, now: datetime) -> list[Held]:
        lock_store = self.ctx.leases.lock is not None
        where = selector.where(now, lock_store)
        return held_leases(self.ctx, select(Item).where(*where).order_by(Item.id))

    def _as_locked(self, leases: list[Held], now: datetime) -> list[Held]:
        """With a lock store, each lease's expiry as its lock says (no later than now when
        it is gone), as the act finds it and reads show it (``reads/expiry.py``): a
        heartbeat that touched only the lock left the row's behind."""
        lock = self.ctx.leases.lock
        if lock is None or not leases:
            return leases
        return _ending(leases, lock.ends([lease.item_id for lease in leases]), now)

    def _still_held(self, gone: list[Held]) -> list[Held]:
        """Of the leases a lock store said are gone, those whose row still holds them: a
        dry run reads unlocked, and a lease submitted meanwhile left its row, then its lock."""
        tokens = {lease.item_id: lease.lease_token for lease in gone}
        stmt = select(Item).where(held(), Item.id.in_(tokens)).order_by(Item.id)
        return [h for h in held_leases(self.ctx, stmt) if tokens[h.item_id] == h.lease_token]

    def _run(
        self,
        action: str,
        selector: LeaseSelector,
        dry_run: bool,
        act: Callable[[Sequence[Held]], Batch],
        preview: Callable[[Held, datetime], LeaseChange],
    ) -> LeaseAdminResult:
        selector.require()
        # every action reads or writes this process's lock store: the deployment's?
        deployment.check(self.ctx.db, self.ctx.settings, first=False)
        now = self.ctx.clock()
        result = LeaseAdminResult(action, dry_run)
        leases = self._select(selector, now)
        if dry_run:
            if selector.expired:  # the lock store says which are gone (nothing written)
                leases = dead_or_alive(self.ctx.leases.lock, leases, now)[0]
                leases = self._still_held(leases) if self.ctx.leases.lock else leases
            leases = self._as_locked(leases, now)
            result.changes = [change_row(preview(lease, now)) for lease in leases]
            return result
        if leases and action != "extend" and self.ctx.leases.lock is not None:
            # a lock store that does not answer would keep the locks of the leases ended
            # here (dropped after the commit, best effort): the items unleasable until the
            # locks' TTL, the action said done. Unavailable before anything is changed
            # (extend asks it of each lease, and skips those it cannot extend).
            try:
                self.ctx.leases.lock.ends([leases[0].item_id])
            except Unavailable as exc:
                raise Unavailable(
                    f"{exc.message}; nothing was changed",
                    hint=exc.hint
                    or "is the lease backend up? check WORK_MANAGER_REDIS_URL,"
                    " then run the command again",
                ) from exc
        for chunk in _chunks(leases, self.ctx.settings.sweep_batch_size):
            batch = act(chunk)
            result.changes.extend(change_row(c) for c in batch.changes)
            self._report(batch.changes, expired=selector.expired)
        return result

    def _report(self, changes: Sequence[LeaseChange], expired: bool) -> None:
        requeued: dict[str, list[uuid.UUID]] = {}
        for change in changes:
            lease = change.lease
            if change.outcome not in (REQUEUED, FAILED, RELEASED):
                continue
            if expired:  # counted as the sweep counts the leases it reclaims
                self.ctx.metrics.increment("leases_expired_total", type=lease.order_type)
            else:
                self.ctx.metrics.increment(
                    "leases_released_total",
                    type=lease.order_type,
                    # the holder's id as its row keeps it: whether it chose that id is
                    # not known here, so it is labelled as one it might have (bound: other)
                    agent_id=AgentInfo(lease.agent_id, self_named=True),
                    tenant=lease.tenant_id,
                )
            if change.outcome == FAILED:
                self.ctx.metrics.increment(
                    "items_failed_total", type=lease.order_type, error_code="max_attempts_exceeded"
                )
            else:
                requeued.setdefault(lease.order_type, []).append(lease.item_id)
        for order_type, ids in requeued.items():
            self.ctx.dispatcher.items_available(order_type, ids)


def _ending(
    leases: list[Held], ends: dict[uuid.UUID, datetime] | None, now: datetime
) -> list[Held]:
    """Each lease with its expiry as reads show it (``reads/expiry.py``, ``live_end``); as
    they are when ``ends`` is ``None`` (no lock store)."""
    if ends is None:
        return leases
    return [
        replace(
            lease, lease_expires_at=live_end(ends.get(lease.item_id), lease.lease_expires_at, now)
        )
        for lease in leases
    ]


def _preview_reclaim(lease: Held, now: datetime) -> LeaseChange:
    return LeaseChange(lease, REQUEUED if lease.attempts < lease.max_attempts else FAILED)


def _preview_release(lease: Held, now: datetime) -> LeaseChange:
    return LeaseChange(lease, RELEASED)


def _chunks(leases: list[Held], size: int) -> Iterator[list[Held]]:
    for start in range(0, len(leases), max(size, 1)):
        yield leases[start : start + size]


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
    """Finds held items past their recorded expiry (index ``ix_work_items_lease_expiry``)
    and has the store reclaim those the lock store says are gone (``reclaim`` with
    ``expired``).

    The store takes the rows with ``SKIP LOCKED``, so rows another sweeper (or an agent
    acting on its lease) holds are passed over instead of waited for, and the run's next
    batch leaves them out: concurrent sweepers split the work. Cost is proportional to
    the expired leases.

    When the lock store says it may have lost leases (Redis flushed or restarted), the
    sweep first audits every held row, paged by id, so a lease the database shows as held
    but the store no longer has is reclaimed now rather than when its recorded expiry
    passes. That costs one pass over the held rows, once per data loss: the backend
    records the audit only when it has finished, so an audit cut short (a database error)
    is done again by the next sweep.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store: Store = build_store(ctx)

    def sweep(self, batch_size: int | None = None, max_batches: int = 20) -> SweepResult:
        size = batch_size or self.ctx.settings.sweep_batch_size
        # a process whose lock store is not the deployment's would find live leases gone
        deployment.check(self.ctx.db, self.ctx.settings, first=False)
        total = SweepResult()
        if self.ctx.leases.lost_track():
            total.merge(self._audit(size))
            self.ctx.leases.audited()  # only now: a failed audit is tried again next sweep
        passed: set[uuid.UUID] = set()  # locked by another sweeper or their holder
        for _ in range(max_batches):
            due = [held(), Item.lease_expires_at <= self.ctx.clock()]
            due += [Item.id.not_in(passed)] if passed else []
            stmt = select(Item).where(*due).order_by(Item.lease_expires_at).limit(size)
            picked = held_leases(self.ctx, stmt)
            result, locked = self._reclaim(picked, wait=False)
            total.merge(result)
            if len(picked) < size:
                break
            passed.update(lease.item_id for lease in picked if lease.item_id not in locked)
        self._report(total)
        return total

    def _audit(self, size: int) -> SweepResult:
        """Check every held row against the lock store, ``size`` rows per transaction.

        A row its holder has locked right now (a heartbeat or submit that the lost store
        lock will make fail) is not skipped: it is checked again in a transaction of its
        own that waits for the holder's, so no lost lease waits for its recorded expiry.
        """
        total, after = SweepResult(), None
        while True:
            stmt = select(Item).where(held()).order_by(Item.id).limit(size)
            if after is not None:
                stmt = stmt.where(Item.id > after)
            page = held_leases(self.ctx, stmt)
            result, seen = self._reclaim(page, wait=False)
            total.merge(result)
            for lease in [lease for lease in page if lease.item_id not in seen]:
                result, _ = self._reclaim([lease], wait=True)
                total.merge(result)
            if len(page) < size:
                return total
            after = page[-1].item_id

    def _reclaim(
        self, leases: Sequence[Held], wait: bool
    ) -> tuple[SweepResult, frozenset[uuid.UUID]]:
        """Have the store reclaim the leases that are gone; what it did, and the rows it
        locked."""
        actor = Actor.system()
        batch = self.store.reclaim(
            leases, actor, "lease_expired", expired=True, skip_locked=not wait
        )
        result = SweepResult()
        for change in batch.changes:
            if change.outcome == REQUEUED:
                result.requeued[change.lease.order_type].append(change.lease.item_id)
            else:
                result.failed[change.lease.order_type] += 1
        return result, batch.locked

    def _report(self, result: SweepResult) -> None:
        if result.reclaimed:  # which items (ops tail --item says whose and when)
            back = [i for ids in result.requeued.values() for i in ids]
            said = f"{len(back)} requeued ({some(back)}), the rest failed (out of attempts)"
            log.info("sweep: %d expired lease(s) reclaimed: %s", result.reclaimed, said)
        for order_type, ids in result.requeued.items():
            self.ctx.metrics.increment("leases_expired_total", len(ids), type=order_type)
            self.ctx.dispatcher.items_available(order_type, ids)
        for order_type, n in result.failed.items():
            self.ctx.metrics.increment("leases_expired_total", n, type=order_type)
            self.ctx.metrics.increment(
                "items_failed_total", n, type=order_type, error_code="max_attempts_exceeded"
            )
