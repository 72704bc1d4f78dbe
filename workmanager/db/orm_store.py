"""The ORM store (:class:`OrmStore`): the lease operations as SQLAlchemy transactions.

SQLite's one path (every transaction ``BEGIN IMMEDIATE``, so they are serialized). On
PostgreSQL :class:`~workmanager.db.postgres.leases.PostgresStore` runs instead, every
operation in its own SQL; it only asks this one to drop a lock store's hold after a commit
(``end_lock``).
See :mod:`workmanager.db.store` for what each method locks and what is atomic.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..lease_tokens import Holder, compose, new_secret
from ..leases.base import CheckoutQuery, Grant
from ..services.context import ServiceContext
from ..services.inputs import as_presented
from ..services.parts import add_part, assemble
from ..services.transitions import clear_lease, move_item, record_event
from ..services.views import ItemOutcome, PartOutcome, iso, item_dict, item_view
from ..states import ItemState
from ..types import JSON, Actor, AgentInfo, Lease
from .extends import extend_hold
from .models import Item, Order
from .orm_steps import (
    OrderRef,
    lock_item,
    lock_order_ref,
    maybe_requeue_order,
    maybe_submit_order,
    requeue_or_fail,
    start_order,
)
from .predicates import held
from .store import (
    Batch,
    Held,
    LeaseChange,
    Validate,
    beat_the_lock,
    dead_or_alive,
    drop_holds,
    end_hold,
    holder_of,
    lock_only_beat,
    submitted_payload,
)


class OrmStore:
    """The lease operations through the ORM (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # --- checkout ---------------------------------------------------------------------
    def grant(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None:
        granted: list[Grant] = []
        try:
            return self.ctx.db.run(lambda s: self._grant_tx(s, agent, query, granted))
        except BaseException:
            for grant in granted:
                self.ctx.leases.abandoned(grant, agent.id)
            raise

    def _grant_tx(
        self, s: Session, agent: AgentInfo, query: CheckoutQuery, granted: list[Grant]
    ) -> Lease | None:
        now = self.ctx.clock()
        while granted:  # an earlier run of this transaction rolled back (deadlock retry)
            self.ctx.leases.abandoned(granted.pop(), agent.id)
        secret, secret_hash = new_secret()
        grant = self.ctx.leases.checkout(
            s, agent.id, query, now, self.ctx.settings.lease_ttl_seconds, secret_hash
        )
        if grant is None:
            if query.order_id is not None and s.get(Order, query.order_id) is None:
                raise NotFound(
                    f"order {query.order_id} not found", details={"order_id": str(query.order_id)}
                )
            return None
        granted.append(grant)
        item = grant.item
        record_event(
            s,
            item.order_id,
            ItemState.LEASED,
            agent.actor,
            item_id=item.id,
            payload={"agent_id": agent.id, "attempt": item.attempts},
        )
        start_order(s, item.order_id, agent.actor, now)
        self.ctx.provenance.record(s, "checkout", agent, order_id=item.order_id, item_id=item.id)
        return Lease(
            item.id,
            item.order_id,
            agent.id,
            compose(grant.token, secret),
            grant.expires_at,
            self.ctx.settings.advised_heartbeat_seconds,
            item_view(item),
        )

    # --- heartbeat --------------------------------------------------------------------
    def heartbeat(
        self, lease: Lease, agent: AgentInfo, progress: float | None, checkpoint: JSON | None
    ) -> Lease:
        lock = self.ctx.leases.lock
        if lock is not None and lock_only_beat(lease, lock, progress, checkpoint):
            ttl, now = self.ctx.settings.lease_ttl_seconds, self.ctx.clock()
            holder = as_presented(lease, agent)

            def read() -> Item | None:
                with self.ctx.db.transaction() as s:
                    return s.get(Item, lease.item_id)

            beat_the_lock(lock, lease, holder, ttl * 1000, now, read)
            return lease.renewed(now + timedelta(seconds=ttl))
        return self.ctx.db.run(lambda s: self._heartbeat_tx(s, lease, progress, checkpoint, agent))

    def _heartbeat_tx(
        self,
        s: Session,
        lease: Lease,
        progress: float | None,
        checkpoint: JSON | None,
        agent: AgentInfo,
    ) -> Lease:
        now = self.ctx.clock()
        ttl = self.ctx.settings.lease_ttl_seconds
        item = lock_item(s, lease.item_id)
        self.ctx.leases.extend(item, as_presented(lease, agent), now, ttl)
        item.lease_expires_at = now + timedelta(seconds=ttl)
        item.last_heartbeat_at = now
        if progress is not None or checkpoint is not None:
            item.progress = {
                "progress": progress,
                # a copy: the lease this returns must not change when the caller's does
                "checkpoint": copy.deepcopy(checkpoint),
                "at": iso(now),
                "attempt": item.attempts,
            }
        if item.state == ItemState.LEASED:
            move_item(s, item, ItemState.IN_PROGRESS, agent.actor)
        self.ctx.provenance.record(s, "heartbeat", agent, order_id=item.order_id, item_id=item.id)
        # The item as it now is, so a submit with this lease can skip re-reading it.
        return lease.renewed(item.lease_expires_at, item_view(item))

    # --- submit, parts, finalize ------------------------------------------------------
    def submit(
        self,
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        validate: Validate,
    ) -> ItemOutcome:
        def tx(s: Session) -> ItemOutcome:
            now = self.ctx.clock()
            item = lock_item(s, lease.item_id)
            self.ctx.leases.check(item, as_presented(lease, agent), now)
            validate(item_view(item))
            return self._mark_submitted(s, item, agent, now, "submit", payload, result)

        return self.end_lock(lease, self.ctx.db.run(tx))

    def submit_part(
        self,
        lease: Lease,
        agent: AgentInfo,
        part_key: str,
        payload: JSON,
        seq: int | None,
        evidence: Any,
        notes: str | None,
    ) -> PartOutcome:
        def tx(s: Session) -> PartOutcome:
            now = self.ctx.clock()
            item = lock_item(s, lease.item_id)
            self.ctx.leases.check(item, as_presented(lease, agent), now)
            order_type = self.ctx.registry.get(item.order_type)
            outcome = add_part(
                s,
                self.ctx.settings,
                order_type,
                item,
                agent,
                part_key,
                payload,
                seq,
                evidence,
                notes,
            )
            self.ctx.provenance.record(
                s, "submit-part", agent, order_id=item.order_id, item_id=item.id
            )
            return outcome

        return self.ctx.db.run(tx)

    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome:
        def tx(s: Session) -> ItemOutcome:
            now = self.ctx.clock()
            item = lock_item(s, lease.item_id)
            self.ctx.leases.check(item, as_presented(lease, agent), now)
            result, missing = assemble(s, self.ctx.registry.get(item.order_type), item, mode)
            payload = {"mode": mode, "missing": missing}
            return self._mark_submitted(
                s, item, agent, now, "finalize", payload, result, assembled=True
            )

        return self.end_lock(lease, self.ctx.db.run(tx))

    def _mark_submitted(
        self,
        s: Session,
        item: Item,
        agent: AgentInfo,
        now: datetime,
        action: str,
        payload: dict[str, Any],
        result: JSON,
        *,
        assembled: bool = False,
    ) -> ItemOutcome:
        # Lock the order before touching the item: the lock's SELECT would otherwise flush
        # the item once for the result and again for the state.
        order = lock_order_ref(s, item.order_id)
        item.result = result
        if assembled:
            item.assembled_result = result
        clear_lease(item)
        move_item(
            s,
            item,
            ItemState.SUBMITTED,
            agent.actor,
            payload=submitted_payload(agent.id, payload),
        )
        became = maybe_submit_order(s, order, agent.actor, now)
        self.ctx.provenance.record(s, action, agent, order_id=item.order_id, item_id=item.id)
        return ItemOutcome(item_dict(item), order.state, became)

    # --- release and fail -------------------------------------------------------------
    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome:
        outcome = self.ctx.db.run(lambda s: release_tx(self.ctx, s, lease, agent))
        return self.end_lock(lease, outcome)

    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome:
        outcome = self.ctx.db.run(lambda s: fail_tx(self.ctx, s, lease, error, retryable, agent))
        return self.end_lock(lease, outcome)

    # --- the operator's lease actions and the sweep -----------------------------------
    def reclaim(
        self,
        leases: Sequence[Held],
        actor: Actor,
        event: str,
        *,
        expired: bool = False,
        skip_locked: bool = False,
    ) -> Batch:
        def act(s: Session, rows: list[Item], now: datetime) -> list[LeaseChange]:
            if expired:
                dead, refresh = dead_or_alive(self.ctx.leases.lock, rows, now)
                for item in rows:
                    if item.id in refresh:
                        item.lease_expires_at = refresh[item.id]
                rows = dead
            changes = []
            for item in rows:
                before = Held.of(item)
                requeued = requeue_or_fail(s, self.ctx.settings, item, actor, now, event=event)
                outcome = "requeued" if requeued else "failed"
                changes.append(LeaseChange(before, outcome, item.available_at))
            return changes

        return self._held(leases, act, skip_locked)

    def release_held(self, leases: Sequence[Held], actor: Actor) -> Batch:
        def act(s: Session, rows: list[Item], now: datetime) -> list[LeaseChange]:
            changes = []
            for item in rows:
                before = Held.of(item)
                payload = {"agent_id": before.agent_id, "lease_token": item.lease_token}
                order = lock_order_ref(s, item.order_id)
                give_back(s, item, order, actor, now, "lease_released", payload)
                changes.append(LeaseChange(before, "released"))
            return changes

        return self._held(leases, act)

    def extend(self, leases: Sequence[Held], actor: Actor, seconds: int) -> Batch:
        def act(s: Session, rows: list[Item], now: datetime) -> list[LeaseChange]:
            changes = []
            for item in rows:
                new_expiry, refused = extend_hold(self.ctx.leases.lock, item, now, seconds)
                if refused is not None:
                    changes.append(LeaseChange(Held.of(item), "skipped", reason=refused))
                    continue
                changes.append(LeaseChange(Held.of(item), "extended", new_expiry))
                item.lease_expires_at, item.updated_at = new_expiry, now
                payload = {"seconds": seconds, "lease_expires_at": iso(new_expiry)}
                record_event(
                    s, item.order_id, "lease_extended", actor, item_id=item.id, payload=payload
                )
            return changes

        return self._held(leases, act)

    def _held(
        self,
        leases: Sequence[Held],
        act: Callable[[Session, list[Item], datetime], list[LeaseChange]],
        skip_locked: bool = False,
    ) -> Batch:
        """Lock the batch's rows still held under the lease picked (by id, in id order),
        ``act`` on them, commit; then drop the lock store's holds of the leases ended."""
        fences = {lease.item_id: lease.lease_token for lease in leases}

        def tx(s: Session) -> tuple[Batch, list[tuple[uuid.UUID, str, Holder]]]:
            now = self.ctx.clock()
            stmt = select(Item).where(Item.id.in_(fences), held()).order_by(Item.id)
            locked = s.scalars(stmt.with_for_update(skip_locked=skip_locked)).all()
            rows = [item for item in locked if item.lease_token == fences[item.id]]
            holders = {item.id: holder_of(item) for item in rows}
            changes = act(s, rows, now)
            ended = [
                (c.lease.item_id, c.lease.order_type, holders[c.lease.item_id])
                for c in changes
                if c.outcome in ("requeued", "failed", "released")
            ]
            return Batch(tuple(changes), frozenset(holders)), ended

        if not fences:
            return Batch((), frozenset())
        batch, ended = self.ctx.db.run(tx)
        drop_holds(self.ctx.leases.lock, ended)
        return batch

    def end_lock(self, lease: Lease, outcome: ItemOutcome) -> ItemOutcome:
        """The lease ended in the database (committed); drop the lock store's hold."""
        return end_hold(self.ctx.leases.lock, lease, outcome)


# --- the transaction bodies of release and fail ---------------------------------------
def release_tx(ctx: ServiceContext, s: Session, lease: Lease, agent: AgentInfo) -> ItemOutcome:
    now = ctx.clock()
    item = lock_item(s, lease.item_id)
    ctx.leases.check(item, as_presented(lease, agent), now)
    order = lock_order_ref(s, item.order_id)
    give_back(s, item, order, agent.actor, now, "released", {"agent_id": agent.id})
    ctx.provenance.record(s, "release", agent, order_id=item.order_id, item_id=item.id)
    return ItemOutcome(item_dict(item), order.state)


def give_back(
    s: Session,
    item: Item,
    order: OrderRef,
    actor: Actor,
    now: datetime,
    event: str,
    payload: dict[str, Any],
) -> None:
    """The release rule on SQLite (the holder's, an operator's): the item back to
    ``queued``, its attempt given back, the order requeued when nothing else is held."""
    clear_lease(item)
    item.attempts = max(item.attempts - 1, 0)
    move_item(s, item, ItemState.QUEUED, actor, event=event, payload=payload)
    maybe_requeue_order(s, order, actor, now)


def fail_tx(
    ctx: ServiceContext, s: Session, lease: Lease, error: JSON, retryable: bool, agent: AgentInfo
) -> ItemOutcome:
    now = ctx.clock()
    item = lock_item(s, lease.item_id)
    ctx.leases.check(item, as_presented(lease, agent), now)
    requeue_or_fail(
        s,
        ctx.settings,
        item,
        agent.actor,
        now,
        event="agent_failed",
        error={"code": error["code"], "message": error["message"]},
        retryable=retryable,
    )
    ctx.provenance.record(s, "fail", agent, order_id=item.order_id, item_id=item.id)
    order = lock_order_ref(s, item.order_id)
    return ItemOutcome(item_dict(item), order.state)
