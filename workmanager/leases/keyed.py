"""Lease backends over an external lock store (``redis``, ``memory``).

The store holds one TTL'd lock per item (owner + fencing token) and the per-agent and
per-type lease counts, all changed atomically by the store. The database row mirrors the
holder, token and expiry so state queries and the sweep need no store scan; when the store
has lost a lock the row still shows, the sweep treats that lease as expired.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import Select
from sqlalchemy.orm import Session

from ..db.models import Item
from ..errors import LeaseConflict, LeaseExpired
from ..lease_tokens import Holder
from ..states import ItemState
from .base import CheckoutQuery, Grant, LeaseStore, check_row
from .limits import InSession, Limits, exhausted
from .selection import Shape, eligible, params, shape_of
from .unreached import Lately, Unreached

if TYPE_CHECKING:
    from ..db.store import ItemRecord

#: Rows locked per candidate round. One: a checkout grants one item, and every further
#: row it locked would be skipped by racing checkouts until it commits, so they would see
#: "no items" while eligible items remain (SPEC §4.5 forbids that spurious answer).
BATCH = 1


class StoreLeaseBackend:
    """Grants leases by locking the item in the store, then recording it on the row."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        max_per_agent: int | None = None,
        max_per_type: int | None = None,
        max_per_tenant: int | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.agent_limit = max_per_agent or 0
        self.type_limit = max_per_type or 0
        #: counted on the rows (leases/limits.py), not in the store
        self.max_per_tenant = max_per_tenant
        #: counted on the rows; the per-agent and per-type limits are the store's
        self.limits = Limits(per_tenant=max_per_tenant)
        #: the lock the PostgreSQL store composes (:class:`.base.LeaseLock`): this backend
        self.lock: StoreLeaseBackend = self
        #: items whose lock a sharded store could not reach lately (.unreached)
        self.unreachable = Lately()

    @property
    def sharded(self) -> bool:
        """Whether its store's locks live on several shards (:class:`Unreached`)."""
        return bool(getattr(self.store, "sharded", False))

    def close(self) -> None:
        """Let go of the store's connections (a store without any has no ``close``)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def checkout(
        self,
        session: Session,
        agent_id: str,
        query: CheckoutQuery,
        now: datetime,
        ttl: int,
        secret_hash: str,
    ) -> Grant | None:
        postgres = session.get_bind().dialect.name == "postgresql"
        blocked: set[str] = set()
        unreached = Unreached(self)
        tried: set[uuid.UUID] = set(unreached.known())  # their shard down a moment ago
        full: set[str] = set()  # tenants at their limit (counted on the rows)
        counted = InSession(self.limits, session) if self.limits else None
        if self.agent_full(agent_id):  # before a row is locked: it is another agent's
            return None
        while not exhausted(query, blocked, full):
            stmt = _candidates(shape_of(query, blocked, tried, full), postgres)
            rows = list(session.scalars(stmt, params(query, now, blocked, tried, full)))
            if not rows:
                unreached.none_left()  # raises when items were skipped for an outage
                return None
            for item in rows:
                tried.add(item.id)
                if item.order_type in blocked or item.tenant_id in full:
                    continue
                over = counted and counted.refused(  # the grant not written yet: pending
                    item.order_type, item.tenant_id, now, pending=1
                )
                if over:
                    full.add(over.key)  # the tenant's: the only limit counted here
                    continue
                token = unreached.acquire(  # its shard down: 0, the next is tried
                    self.store.acquire,
                    str(item.id),
                    agent_id,
                    ttl * 1000,
                    item.lease_token + 1,
                    item.order_type,
                    self.agent_limit,
                    self.type_limit,
                    secret_hash,
                )
                if token > 0:
                    return self._grant(item, agent_id, token, now, ttl, secret_hash)
                if token == -1:
                    return None
                if token == -2:
                    blocked.add(item.order_type)
        return None  # nothing left but types and tenants at their limit

    @staticmethod
    def _grant(
        item: Item, agent_id: str, token: int, now: datetime, ttl: int, secret_hash: str
    ) -> Grant:
        expires = now + timedelta(seconds=ttl)
        item.state = ItemState.LEASED.value
        item.leased_by_agent_id = agent_id
        item.lease_token = token
        item.lease_secret_hash = secret_hash
        item.lease_expires_at = expires
        item.attempts += 1
        item.updated_at = now
        return Grant(item=item, token=token, expires_at=expires, secret_hash=secret_hash)

    def check(self, item: ItemRecord, holder: Holder, now: datetime) -> None:
        # the lock's TTL is the lease's expiry; the row's is refreshed lazily (a heartbeat
        # may touch only the lock: db/store.py lock_only_beat)
        check_row(item, holder, now, check_expiry=False)
        self.verdict(item.id, self.store.check(str(item.id), holder.agent_id, holder.store_proof()))

    def extend(self, item: Item, holder: Holder, now: datetime, ttl: int) -> None:
        check_row(item, holder, now, check_expiry=False)
        verdict = self.store.extend(
            str(item.id), holder.agent_id, holder.store_proof(), ttl * 1000, item.order_type
        )
        self.verdict(item.id, verdict)

    # --- the lock port (.base.LeaseLock), for the PostgreSQL store ----------------------
    def acquire(
        self,
        item_id: uuid.UUID,
        agent_id: str,
        ttl_ms: int,
        token: int,
        order_type: str,
        secret_hash: str,
    ) -> int:
        return self.store.acquire(
            str(item_id),
            agent_id,
            ttl_ms,
            token,
            order_type,
            self.agent_limit,
            self.type_limit,
            secret_hash,
        )

    def agent_full(self, agent_id: str) -> bool:
        return self.agent_limit > 0 and self.store.holding(agent_id) >= self.agent_limit

    def extend_lock(self, item_id: uuid.UUID, holder: Holder, ttl_ms: int, order_type: str) -> None:
        verdict = self.store.extend(
            str(item_id), holder.agent_id, holder.store_proof(), ttl_ms, order_type
        )
        self.verdict(item_id, verdict)

    def holds(self, item_id: uuid.UUID, holder: Holder) -> bool:
        return self.store.check(str(item_id), holder.agent_id, holder.store_proof()) == 1

    def release_lock(self, item_id: uuid.UUID, holder: Holder, order_type: str) -> bool:
        ended = self.store.release(str(item_id), holder.agent_id, holder.store_proof(), order_type)
        return ended == 1

    @staticmethod
    def verdict(item_id: uuid.UUID, verdict: int) -> None:
        """Raise what a store's refusal (0: no lock; < 0: another token) means."""
        if verdict == 0:
            raise LeaseExpired("the lease has expired", details={"item_id": str(item_id)})
        if verdict < 0:
            raise LeaseConflict(
                "the lease is held under another token", details={"item_id": str(item_id)}
            )

    def abandoned(self, grant: Grant, agent_id: str) -> None:
        proof = Holder(agent_id, grant.token, grant.secret_hash).store_proof()
        self.store.release(str(grant.item.id), agent_id, proof, grant.item.order_type)

    def alive(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        remaining = self.store.alive([str(i) for i in item_ids])
        return {uuid.UUID(i): ms for i, ms in remaining.items()}

    def ends(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        ends = self.store.ends([str(i) for i in item_ids])
        return {uuid.UUID(i): datetime.fromtimestamp(ms / 1000, UTC) for i, ms in ends.items()}

    def lost_track(self) -> bool:
        return not self.store.marked()

    def audited(self) -> None:
        self.store.mark()

    def forget_locks(self) -> int:
        return self.store.flush()


@lru_cache(maxsize=256)
def _candidates(shape: Shape, postgres: bool) -> Select[Item]:
    stmt = eligible(shape).limit(BATCH)
    return stmt.with_for_update(skip_locked=True) if postgres else stmt
