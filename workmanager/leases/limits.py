"""Limits counted on the item rows, shared by every backend: the per-tenant lease limit.

A tenant at ``WORK_MANAGER_MAX_LEASES_PER_TENANT`` held items is left out of the pick (as
a type at its limit is), so a full tenant does not block the others. The count and the
grant are atomic: on PostgreSQL the checkout transaction first takes the advisory lock
``wm:tenant-limits`` (held to its end, where the grant commits); SQLite transactions are
serialized. The rows are the record for every backend (the Redis backend mirrors its
holder on the row in the same transaction), so one count serves them all; a lease whose
Redis lock was lost still counts until the sweep returns its row to ``queued``.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..db.models import Item
from ..db.predicates import held


def advisory_lock(session: Session, key: str) -> None:
    """A transaction-scoped PostgreSQL advisory lock on ``key`` (a no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def full_tenants(session: Session, limit: int | None) -> set[str]:
    """Tenants holding ``limit`` leases or more (none when there is no limit), counted
    under the lock that makes the count and the grant one step."""
    if limit is None:
        return set()
    advisory_lock(session, "wm:tenant-limits")
    rows = session.execute(
        select(Item.tenant_id, func.count())
        .where(held(), Item.tenant_id.is_not(None))
        .group_by(Item.tenant_id)
    )
    return {str(t) for t, n in rows if n >= limit}
