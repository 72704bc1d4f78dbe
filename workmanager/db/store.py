"""The Store port: one write path per database for the lease operations.

:class:`workmanager.services.agent.AgentAPI` checks its inputs, asks the store for the
state change, then reports metrics and announces follow-up work; the store owns how the
change reaches the database. Every method is one transaction (one round trip where it
can), returns plain values (a :class:`~workmanager.types.Lease`, an
:class:`~workmanager.services.outcomes.ItemOutcome`), and ends a lease completely: a
method that ends one also drops the lock store's hold (Redis, memory) once the commit
succeeded.

Two implementations, chosen once by :func:`build_store`, never a fallback for each other:

* :class:`workmanager.db.postgres.leases.PostgresStore` — PostgreSQL: hand-written SQL on
  raw psycopg connections, the lease backend's lock (:class:`~workmanager.leases.base.
  LeaseLock`: Redis, memory, a third party's; none for the database backend) called
  between its statements.
* :class:`workmanager.db.orm_store.OrmStore` — SQLite (the embedded default): SQLAlchemy
  ORM transactions (``BEGIN IMMEDIATE``), the backend's session methods.

Both run under the same contract suite (``tests/contract``, once per store and lock
backend). What each method locks and what is atomic, for both:

``grant``
    Picks the next eligible item (:mod:`workmanager.leases.selection`) with ``FOR UPDATE
    SKIP LOCKED`` (PostgreSQL) or under the database's write lock (SQLite), after the
    limits' counts under their advisory locks (:mod:`workmanager.leases.limits`); leases it
    (fence + 1, secret hash), writes ``leased`` and the provenance row, and starts the
    order on its first lease — atomically. With a lock store, the store's acquire runs
    inside that transaction and is given back if it rolls back.
``heartbeat``
    Locks the item row; the lease must be current (:func:`~workmanager.leases.base.
    check_row`, then the lock store); extends it, records progress, moves ``leased →
    in_progress`` on the first beat — atomically with the store's extend.
``submit``
    Locks the item, then its order (item first, everywhere); checks the lease; validates
    the result against the item as locked (``validate``); marks the item ``submitted``
    and, when it was the last open item, its order — atomically.
``submit_part`` / ``finalize``
    Lock the item; check the lease; store a part (the lease stays) / assemble the parts
    and submit as ``submit`` does.
``release``
    Lock the item, then its order; check the lease; the item back to ``queued`` (attempt
    given back); the order requeued when nothing else is held — atomically.
``fail``
    Lock the item, then its order; check the lease; the item requeued with backoff or
    failed (``services/order_steps.py decide_ending``, the one rule); the order becomes
    ``failed`` only when the item does (a fail never requeues the order) — atomically.

A refused call raises the error the locked row names (``lease_conflict``,
``lease_expired``, ``forbidden``, ``not_found`` …) and changes nothing. A pending
idempotency key (:mod:`workmanager.db.claims`) is marked in the same transaction.

The control plane's state changes are :mod:`workmanager.db.order_store`'s
:class:`~workmanager.db.order_store.OrderStore` port, the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import claims

if TYPE_CHECKING:
    from ..leases.base import CheckoutQuery, LeaseLock
    from ..services.context import ServiceContext
    from ..services.outcomes import ItemOutcome, PartOutcome
    from ..types import JSON, AgentInfo, ItemView, Lease

Validate = Callable[["ItemView"], None]


class Store(Protocol):
    """The lease operations' state changes (see the module's docstring)."""

    def grant(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None: ...

    def heartbeat(
        self, lease: Lease, agent: AgentInfo, progress: float | None, checkpoint: JSON | None
    ) -> Lease: ...

    def submit(
        self,
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        validate: Validate,
    ) -> ItemOutcome: ...

    def submit_part(
        self,
        lease: Lease,
        agent: AgentInfo,
        part_key: str,
        payload: JSON,
        seq: int | None,
        evidence: Any,
        notes: str | None,
    ) -> PartOutcome: ...

    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome: ...

    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome: ...

    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome: ...


def lock_only_beat(
    lease: Lease, lock: LeaseLock | None, progress: float | None, checkpoint: JSON | None
) -> bool:
    """Whether a heartbeat touches only the lock store (issue 18: Redis leases spare the
    database): with a lock store, no progress or checkpoint to record, no idempotency key
    to mark, and the lease carrying its item already ``in_progress`` (the first beat moves
    it there, on the row). The lock's extend proves the holder (owner, fence and secret, in
    one atomic script); the row's expiry is then refreshed lazily (the sweep asks the lock
    for the remaining TTL of rows past their recorded expiry), and both stores check a
    lease's expiry against the lock, not the row. Such a beat writes no provenance row.
    One rule for both stores, so their trails agree."""
    item = lease.item
    return (
        lock is not None
        and progress is None
        and checkpoint is None
        and item is not None
        and item.id == lease.item_id
        and item.state == "in_progress"
        and claims.unmarked_claim() is None
    )


def build_store(ctx: ServiceContext) -> Store:
    """PostgreSQL's store on PostgreSQL (whatever the lease backend: it composes its
    lock), the ORM store on SQLite."""
    from .orm_store import OrmStore

    orm = OrmStore(ctx)
    if ctx.db.is_postgres:
        from .postgres.leases import postgres_store

        return postgres_store(ctx, orm)
    return orm
