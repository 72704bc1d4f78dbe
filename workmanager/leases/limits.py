"""The lease limits counted on the item rows: per agent, per type and per tenant.

One rule, run by every executor. The agent is known before the grant: :func:`agent_full`
takes its key's advisory lock and counts its held rows first, and an agent at its limit
gets nothing without touching an item (leasing one first would lock a row another agent
could have had: it got "no items"). Which type and tenant a checkout leases only the
grant knows: it is made next, in the same transaction, and :func:`refused` takes the lock
of its type's key, then its tenant's, and counts that key's held rows, the new one among
them. A count over its limit names it; the caller rolls the grant back and tries again
without that type or tenant. The counts and their statements live here only, run through
two callables the caller supplies (the ORM session on SQLite, the raw connection of the
PostgreSQL checkout). The database backend counts all three limits; the store backends
(Redis, memory) keep the per-agent and per-type counts in the store, atomically with the
grant, and count only the tenant limit here.

Why per key: counting every type and tenant first (a ``GROUP BY`` over every held row,
under one lock for the whole deployment) made each checkout wait for all the others — 32
checkouts a second at 20,000 held leases — and a checkout stalled while it held that lock
stopped every checkout of the deployment. Now checkouts wait only for those of the same
agent, type or tenant, and each count reads by index the held rows of one key.

The counts and the grant are atomic: on PostgreSQL the lock of a key is held to the end of
the checkout's transaction, and the count that follows it (a statement of its own, so
under READ COMMITTED it sees every grant committed before the lock was given) takes the
grants of that key one at a time; SQLite transactions are serialized. A checkout never
waits for a row lock once it holds one of these locks, and takes them in one order, so
two checkouts never wait on each other in a cycle. The waits are bounded on PostgreSQL
(:data:`LOCK_TIMEOUT_SQL`): a type or tenant whose lock was not had in time is *busy*,
left out like a full one, and the checkout goes on with the others; only when nothing
else is eligible does it answer 503 ``unavailable`` (try again), as does an agent whose
own lock was not had. The rows are the record for every backend (the Redis backend
mirrors its holder on the row in the same transaction), so one count serves them all; a
lease whose Redis lock was lost still counts until the sweep returns its row to
``queued``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg as psycopg_dialect
from sqlalchemy.orm import Session

from ..db.models import Item
from ..db.predicates import held
from ..db.sql import queries

if TYPE_CHECKING:
    from .base import CheckoutQuery

#: ``lock(key)`` takes a transaction-scoped advisory lock (a no-op where transactions
#: are serialized), ``False`` when it was not had within the lock timeout;
#: ``rows(statement, values)`` runs a count and returns its rows.
Lock = Callable[[str], bool]
Count = Select[*tuple[Any, ...]]
Rows = Callable[[Count, dict[str, Any]], Sequence[Sequence[Any]]]

ADVISORY_SQL = queries.text("advisory_lock")  # db/sql/queries.sql
#: How long a checkout under limits waits for a lock on PostgreSQL (2 s, ``SET LOCAL
#: lock_timeout`` in its transaction) before it answers 503 ``unavailable``.
LOCK_TIMEOUT_SQL = queries.text("limits_lock_timeout")


@dataclass(frozen=True)
class Counts:
    """A key's held rows (``live``: only those unexpired at ``:now``), one count a limit."""

    by_agent: Count
    by_type: Count
    by_tenant: Count

    @classmethod
    def over(cls, live: bool) -> Counts:
        holding = and_(held(), Item.lease_expires_at > bindparam("now")) if live else held()

        def of(column: Any) -> Count:
            return select(func.count()).select_from(Item).where(column == bindparam("key"), holding)

        return cls(of(Item.leased_by_agent_id), of(Item.order_type), of(Item.tenant_id))


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
class Refused:
    """The limit a grant would take past its value: ``kind`` is ``type`` or ``tenant``,
    ``key`` the order type or tenant; ``busy``: its lock was not had in time (another
    checkout of that key stalled), so it is left out as a full one is, for now."""

    kind: str
    key: str
    busy: bool = False


def exhausted(query: CheckoutQuery, types: Collection[str], tenants: Collection[str]) -> bool:
    """Whether ``query`` can only match items of the ``types`` and ``tenants`` found at
    their limit: the checkout then ends with none at once. Its next pick, leaving them
    out, could not use an index for that and walked every queued item of theirs (a
    refused typed checkout on a queue of 480,000: 0.2-0.4 s each poll). One order's items
    share its type and tenant."""
    if not (types or tenants):
        return False
    return (
        query.order_id is not None
        or query.item_id is not None
        or query.type in types
        or query.tenant_id in tenants
        or (query.known is not None and set(query.known) <= set(types))
    )


class AgentBusy(Exception):
    """The agent's own lock was not had within the lock timeout (another checkout of the
    same agent id stalled while holding it): the checkout answers 503, try again."""


def agent_full(limits: Limits, agent_id: str, now: datetime, lock: Lock, rows: Rows) -> bool:
    """Whether ``agent_id`` holds ``per_agent`` leases already, counted under its key's
    lock (held to the end of the transaction, so its grant is counted by the next);
    :class:`AgentBusy` when that lock was not had in time."""
    if limits.per_agent is None:
        return False
    if not lock(f"wm:agent:{agent_id}"):
        raise AgentBusy(agent_id)
    counts = LIVE if limits.live else HELD
    [(holding,)] = rows(counts.by_agent, {"key": agent_id, "now": now})
    return (holding or 0) >= limits.per_agent


def refused(
    limits: Limits,
    order_type: str,
    tenant_id: str | None,
    now: datetime,
    lock: Lock,
    rows: Rows,
    pending: int = 0,
) -> Refused | None:
    """The first limit (type, then tenant) the grant of an item of ``order_type`` and
    ``tenant_id`` takes past its value, counted under its key's lock; or ``None``.
    ``pending``: 1 when the grant is not written yet (the count then lacks it), 0 when it
    is (the checkout counts after its grant)."""
    counts = LIVE if limits.live else HELD
    for kind, limit, key, count in (
        ("type", limits.per_type, order_type, counts.by_type),
        ("tenant", limits.per_tenant, tenant_id, counts.by_tenant),
    ):
        if limit is None or key is None:
            continue
        if not lock(f"wm:{kind}:{key}"):
            return Refused(kind, key, busy=True)
        [(holding,)] = rows(count, {"key": key, "now": now})
        if (holding or 0) + pending > limit:
            return Refused(kind, key)
    return None


@dataclass(frozen=True)
class InSession:
    """:func:`agent_full` and :func:`refused` through an ORM session (SQLite, where
    transactions are serialized and the locks are no-ops; any SQLAlchemy database)."""

    limits: Limits
    session: Session

    def lock(self, key: str) -> bool:
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
            )
        return True

    def rows(self, stmt: Count, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return self.session.execute(stmt, values).all()

    def agent_full(self, agent_id: str, now: datetime) -> bool:
        return agent_full(self.limits, agent_id, now, self.lock, self.rows)

    def refused(
        self, order_type: str, tenant_id: str | None, now: datetime, pending: int = 0
    ) -> Refused | None:
        return refused(self.limits, order_type, tenant_id, now, self.lock, self.rows, pending)


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
