"""The ``database`` lease backend: pick-and-lease in one statement.

PostgreSQL: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``, so racing
agents skip each other's rows and each gets the next eligible item. SQLite: the same
conditional update; every SQLite transaction here holds the write lock (``BEGIN
IMMEDIATE``), so checkouts are serialized. With concurrency limits the grant is made in a
savepoint and counted after (:mod:`.limits`): one over a limit is rolled back and the next
eligible item of another type or tenant tried.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from ..db.models import Item
from ..db.predicates import queued
from ..lease_tokens import Holder
from ..states import ItemState
from .base import CheckoutQuery, Grant, check_row
from .limits import InSession, Limits, exhausted
from .selection import Shape, eligible, params, shape_of


class DatabaseLeaseBackend:
    """Leases recorded on the item rows themselves."""

    name = "database"
    #: the row is the lock: nothing outside the database to compose
    lock = None

    def __init__(
        self,
        max_per_agent: int | None = None,
        max_per_type: int | None = None,
        max_per_tenant: int | None = None,
    ) -> None:
        self.max_per_agent = max_per_agent
        self.max_per_type = max_per_type
        self.max_per_tenant = max_per_tenant

    @property
    def limits(self) -> Limits:
        """The limits this backend counts on the rows (all three)."""
        return Limits(self.max_per_agent, self.max_per_type, self.max_per_tenant, live=True)

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
        expires = now + timedelta(seconds=ttl)
        lease = {"q_agent": agent_id, "q_expires": expires, "q_secret": secret_hash}
        types: set[str] = set()
        tenants: set[str] = set()
        counted = InSession(self.limits, session)
        if counted.agent_full(agent_id, now):
            return None  # before any grant: no item locked for nothing
        after = self.max_per_type is not None or self.max_per_tenant is not None
        while True:
            stmt = _grant_statement(shape_of(query, types, (), tenants), postgres)
            values = {**params(query, now, types, (), tenants), **lease}
            savepoint = session.begin_nested() if after else None  # for a refusal
            item = session.scalars(stmt, values).first()
            over = (
                None
                if item is None or savepoint is None
                else counted.refused(item.order_type, item.tenant_id, now)
            )
            if over is not None:  # rolled back: the row as it is again, queued
                assert savepoint is not None  # counted only in one
                savepoint.rollback()
                session.expire(item)
                (types if over.kind == "type" else tenants).add(over.key)
                if exhausted(query, types, tenants):
                    return None
                continue
            if savepoint is not None:
                savepoint.commit()
            if item is None:
                return None
            token = item.lease_token
            return Grant(item=item, token=token, expires_at=expires, secret_hash=secret_hash)

    def check(self, item: Item, holder: Holder, now: datetime) -> None:
        check_row(item, holder, now)

    def extend(self, item: Item, holder: Holder, now: datetime, ttl: int) -> None:
        check_row(item, holder, now)

    def abandoned(self, grant: Grant, agent_id: str) -> None:
        pass

    def lost_track(self) -> bool:
        return False  # the rows are the leases: nothing to lose

    def audited(self) -> None:
        pass

    def forget_locks(self) -> int:
        return 0  # the rows are the locks


@lru_cache(maxsize=256)
def _grant_statement(shape: Shape, postgres: bool) -> UpdateBase:
    """``UPDATE … WHERE id = (the first eligible item, SKIP LOCKED) RETURNING *``."""
    pick = eligible(shape).with_only_columns(Item.id).limit(1)
    if postgres:
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(Item)
        .where(Item.id == pick.scalar_subquery(), queued())
        .values(
            state=ItemState.LEASED.value,
            leased_by_agent_id=bindparam("q_agent"),
            lease_token=Item.lease_token + 1,
            lease_secret_hash=bindparam("q_secret"),
            lease_expires_at=bindparam("q_expires"),
            attempts=Item.attempts + 1,
            updated_at=bindparam("q_now"),
        )
        .returning(Item)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
