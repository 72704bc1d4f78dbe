"""The lease limits counted on the item rows: per agent, per type and per tenant.

One rule, run by every executor: :func:`blocked` takes the advisory locks and counts in a
fixed order, through two callables its caller supplies (the ORM session on SQLite, the
raw connection of the PostgreSQL checkout), so the counts and their statements live here
only. The database backend counts all three; the store backends (Redis, memory) keep the
per-agent and per-type counts in the store, atomically with the grant, and count only the
tenant limit here.

A tenant at ``WORK_MANAGER_MAX_LEASES_PER_TENANT`` held items is left out of the pick (as
a type at its limit is), so a full tenant does not block the others. The counts and the
grant are atomic: on PostgreSQL the checkout transaction first takes the advisory lock of
each count (held to its end, where the grant commits); SQLite transactions are
serialized. The rows are the record for every backend (the Redis backend mirrors its
holder on the row in the same transaction), so one count serves them all; a lease whose
Redis lock was lost still counts until the sweep returns its row to ``queued``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg as psycopg_dialect
from sqlalchemy.orm import Session

from ..db.models import Item
from ..db.predicates import held
from ..db.sql import queries

#: ``lock(key)`` takes a transaction-scoped advisory lock (a no-op where transactions
#: are serialized); ``rows(statement, values)`` runs a count and returns its rows.
Lock = Callable[[str], None]
Count = Select[*tuple[Any, ...]]
Rows = Callable[[Count, dict[str, Any]], Sequence[Sequence[Any]]]

ADVISORY_SQL = queries.text("advisory_lock")  # db/sql/queries.sql
TYPE_KEY, TENANT_KEY = "wm:type-limits", "wm:tenant-limits"


@dataclass(frozen=True)
class Counts:
    """The three counts, over held rows (``live``: only those unexpired at ``:now``)."""

    by_agent: Count
    by_type: Count
    by_tenant: Count

    @classmethod
    def over(cls, live: bool) -> Counts:
        holding = and_(held(), Item.lease_expires_at > bindparam("now")) if live else held()
        return cls(
            select(func.count())
            .select_from(Item)
            .where(Item.leased_by_agent_id == bindparam("agent"), holding),
            select(Item.order_type, func.count()).where(holding).group_by(Item.order_type),
            select(Item.tenant_id, func.count())
            .where(holding, Item.tenant_id.is_not(None))
            .group_by(Item.tenant_id),
        )


#: On the database backend the row is the lease: one past its expiry holds nothing (the
#: Redis backend's zsets dropped it at once, and the row's slot was taken until the sweep
#: came). A store backend's row expiry lags its lock (heartbeats renew only the lock), so
#: its tenant count takes every held row.
LIVE, HELD = Counts.over(live=True), Counts.over(live=False)


@dataclass(frozen=True)
class Limits:
    """The lease limits one backend counts on the rows (``None``: no limit); ``live``:
    the rows are the leases (the database backend), so an expired one is not counted."""

    per_agent: int | None = None
    per_type: int | None = None
    per_tenant: int | None = None
    live: bool = False

    def __bool__(self) -> bool:
        return any(n is not None for n in (self.per_agent, self.per_type, self.per_tenant))


@dataclass(frozen=True)
class Blocked:
    """What the limits leave out of a pick: types and tenants at their limit."""

    types: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()


NOTHING_BLOCKED = Blocked()


def blocked(limits: Limits, agent_id: str, now: datetime, lock: Lock, rows: Rows) -> Blocked | None:
    """The types and tenants at their limit at ``now``, or ``None`` when the agent is at
    its own (no checkout then). Each count is taken under its advisory lock, always in the
    same order (agent, types, tenants), so two checkouts never wait on each other in a
    cycle."""
    counts, at = (LIVE if limits.live else HELD), {"now": now}
    if limits.per_agent is not None:
        lock(f"wm:agent:{agent_id}")
        [(holding,)] = rows(counts.by_agent, {"agent": agent_id, **at})
        if (holding or 0) >= limits.per_agent:
            return None
    types: frozenset[str] = frozenset()
    if limits.per_type is not None:
        lock(TYPE_KEY)
        types = frozenset(str(t) for t, n in rows(counts.by_type, at) if n >= limits.per_type)
    tenants: frozenset[str] = frozenset()
    if limits.per_tenant is not None:
        lock(TENANT_KEY)
        full = rows(counts.by_tenant, at)
        tenants = frozenset(str(t) for t, n in full if n >= limits.per_tenant)
    return Blocked(types, tenants) if types or tenants else NOTHING_BLOCKED


def in_session(limits: Limits, session: Session, agent_id: str, now: datetime) -> Blocked | None:
    """:func:`blocked` through an ORM session (SQLite; any SQLAlchemy database)."""
    postgres = session.get_bind().dialect.name == "postgresql"

    def lock(key: str) -> None:
        if postgres:
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
            )

    def rows(stmt: Count, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return session.execute(stmt, values).all()

    return blocked(limits, agent_id, now, lock, rows)


@lru_cache(maxsize=8)
def as_psycopg(stmt: Count) -> str:
    """A count as the SQL text psycopg takes (``%(name)s`` placeholders)."""
    binds = stmt.compile().binds.values()
    placeholders = {b.key: None for b in binds if b.required}  # values given at run time
    compiled = stmt.params(placeholders).compile(
        dialect=psycopg_dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"render_postcompile": True},
    )
    return str(compiled)
