"""The Store port: one write path per database for the lease operations.

:class:`workmanager.services.agent.AgentAPI` checks its inputs, asks the store for the
state change, then reports metrics and announces follow-up work; the store owns how the
change reaches the database. Every method is one transaction (one round trip where it
can), returns plain values (a :class:`~workmanager.types.Lease`, an
:class:`~workmanager.services.views.ItemOutcome`), and ends a lease completely: a
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
    failed (``services/transitions.py decide_ending``, the one rule); the order becomes
    ``failed`` only when the item does (a fail never requeues the order) — atomically.

The operator's lease actions and the sweep (:mod:`workmanager.services.lease_admin`
selects, previews and reports; these write) act on a batch of :class:`Held` leases, each
as it was picked (its fence): one transaction per batch, the rows locked by id, in id
order (``FOR UPDATE``, or ``SKIP LOCKED`` when asked), a row whose lease has moved on
since it was picked (released, regranted: another fence) left alone. What each returns
is the :class:`LeaseChange` of every lease it locked and acted on, the row as locked.

``reclaim``
    Each lease ended as an expired one (:func:`~workmanager.services.transitions.
    decide_ending`, the fail's rule: the attempt stays spent, requeued with backoff or
    failed); a failed item's order locked after every item (by id) and failed with it.
    ``expired``: only the leases :func:`dead_or_alive` says are gone; a live lock's
    remaining time is written to its row's expiry. Atomic per batch; the lock store's
    holds are dropped after the commit.
``release_held``
    Each lease given back as its holder's ``release`` gives it (the same statement on
    PostgreSQL, the same function on SQLite: the item back to ``queued``, the attempt
    given back, the order requeued when nothing else is held), event ``lease_released``.
    Atomic per batch; the lock store's holds are dropped after the commit.
``extend``
    Each live lease's expiry pushed out; the lock store's hold is extended while the row
    is locked (a refusal leaves that lease ``skipped``), the rows written and committed
    after. Atomic per batch (a lock extended by a batch that then rolled back only
    outlives its row's recorded expiry, which the lock's TTL overrides anyway).

A refused call raises the error the locked row names (``lease_conflict``,
``lease_expired``, ``forbidden``, ``not_found`` …) and changes nothing. A pending
idempotency key (:mod:`workmanager.db.claims`) is marked in the same transaction.

The control plane's state changes are :mod:`workmanager.db.order_store`'s
:class:`~workmanager.db.order_store.OrderStore` port, the same shape.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import LeaseConflict, LeaseExpired, TransientError
from ..lease_tokens import Holder
from ..leases import drops
from . import claims

if TYPE_CHECKING:
    from ..leases.base import CheckoutQuery, LeaseLock
    from ..services.context import ServiceContext
    from ..services.views import ItemOutcome, PartOutcome
    from ..types import JSON, Actor, AgentInfo, ItemView, Lease

log = logging.getLogger("workmanager.store")

Validate = Callable[["ItemView"], None]


class ItemRow(NamedTuple):
    """An item's row as a PostgreSQL statement returned it: every column of ``work_items``,
    datetimes in UTC. The PostgreSQL store reads these where the ORM store has an ``Item``;
    the read-only helpers (``check_row``, ``item_view``, ``item_dict``) take either
    (:data:`ItemRecord`). A tuple: built in a few microseconds, never flushed anywhere."""

    id: uuid.UUID
    order_id: uuid.UUID
    type: str
    order_type: str
    priority: int
    tenant_id: str | None
    state: str
    input: Any
    result: Any
    assembled_result: Any
    error: Any
    attempts: int
    max_attempts: int
    leased_by_agent_id: str | None
    lease_token: int
    lease_secret_hash: str | None
    lease_expires_at: datetime | None
    last_heartbeat_at: datetime | None
    available_at: datetime | None
    progress: Any
    parts_required: Any
    parts_state: Any
    accepted_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PartRow(NamedTuple):
    """A part's row as a PostgreSQL statement returned it (every column of
    ``work_item_parts``, datetimes in UTC); :data:`PartRecord` for the helpers."""

    id: uuid.UUID
    item_id: uuid.UUID
    part_key: str
    seq: int | None
    seq_slot: int
    status: str
    payload: Any
    evidence: Any
    notes: str | None
    errors: Any
    checksum: str
    submitted_by_agent_id: str | None
    created_at: datetime


if TYPE_CHECKING:
    from typing import TypeAlias

    from .models import Item, Part

    #: What the read-only helpers take: an ORM row (SQLite's store) or a statement's.
    ItemRecord: TypeAlias = Item | ItemRow
    PartRecord: TypeAlias = Part | PartRow


@dataclass(frozen=True)
class Held:
    """A held lease as an operator or the sweep saw it (no secret): the row's columns
    that say which lease it is and what ending it would get."""

    item_id: uuid.UUID
    order_id: uuid.UUID
    order_type: str
    tenant_id: str | None
    state: str
    agent_id: str
    lease_token: int
    lease_expires_at: datetime | None
    attempts: int
    max_attempts: int

    @property
    def id(self) -> uuid.UUID:
        """The item's id (as a row has it: :func:`dead_or_alive` takes either)."""
        return self.item_id

    @classmethod
    def of(cls, row: Any) -> Held:
        """From an item row (an ORM item, or any object with its columns)."""
        return cls(
            row.id,
            row.order_id,
            row.order_type,
            row.tenant_id,
            row.state,
            row.leased_by_agent_id or "",
            row.lease_token,
            row.lease_expires_at,
            row.attempts,
            row.max_attempts,
        )


@dataclass(frozen=True)
class LeaseChange:
    """What a store did to one held lease: ``outcome`` is ``requeued``, ``failed``,
    ``released``, ``extended`` or ``skipped`` (with its ``reason``); ``at`` is the item's
    ``available_at`` (reclaim) or the lease's new expiry (extend)."""

    lease: Held
    outcome: str
    at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Batch:
    """A batch's changes, and the ids it locked (``SKIP LOCKED`` may skip some)."""

    changes: tuple[LeaseChange, ...]
    locked: frozenset[uuid.UUID]


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

    def reclaim(
        self,
        leases: Sequence[Held],
        actor: Actor,
        event: str,
        *,
        expired: bool = False,
        skip_locked: bool = False,
    ) -> Batch: ...

    def release_held(self, leases: Sequence[Held], actor: Actor) -> Batch: ...

    def extend(self, leases: Sequence[Held], actor: Actor, seconds: int) -> Batch: ...


def submitted_payload(agent_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The ``submitted`` event's payload (submit's evidence and notes, finalize's mode and
    missing parts): what was sent, a value left out only when absent (``None``); evidence
    of ``0``, ``false`` or ``{}`` is evidence."""
    return {"agent_id": agent_id, **{k: v for k, v in payload.items() if v is not None}}


def dead_or_alive(
    lock: LeaseLock | None, rows: Sequence[Any], now: datetime
) -> tuple[list[Any], dict[uuid.UUID, datetime]]:
    """Of these held rows (locked), the ones whose lease is gone, and the expiry to write
    on the others whose recorded one has passed (a lock store's leases: a heartbeat may
    extend only the lock). Without a lock store the row's expiry says; with one, the lock.
    The rule of the sweep and of ``reclaim --expired``, on both stores."""
    if lock is None:
        return [r for r in rows if r.lease_expires_at is not None and r.lease_expires_at <= now], {}
    alive = lock.alive([r.id for r in rows])
    dead = [r for r in rows if r.id not in alive]
    refresh = {
        r.id: now + timedelta(milliseconds=alive[r.id])
        for r in rows
        if r.id in alive and (r.lease_expires_at is None or r.lease_expires_at <= now)
    }
    return dead, refresh


def holder_of(row: Any) -> Holder:
    """The current holder as the row records it (an operator acts without the secret)."""
    return Holder(row.leased_by_agent_id or "", row.lease_token, row.lease_secret_hash)


def drop_holds(lock: LeaseLock | None, ended: Sequence[tuple[uuid.UUID, str, Holder]]) -> None:
    """After the commit that ended these leases (item id, order type, holder), drop the
    lock store's holds: every method that ends a lease, on both stores. Not before the
    commit (a commit that then failed would leave a held row with no lock, every call on
    it refused until the sweep). Best effort, never raises: the row is no longer held, so
    a lock the store no longer had (a flush, an expiry) changes nothing, and one it could
    not drop (unreachable, read-only) is stale: the next grant of the item, whose fence
    is later, takes it over (``acquire.lua``), and the drop is tried again in the
    background (:mod:`workmanager.leases.drops`) until the store takes it or its TTL."""
    if lock is None:
        return
    for item_id, order_type, holder in ended:
        try:
            if not lock.release_lock(item_id, holder, order_type):
                log.debug("the lock store no longer had the lock of %s", item_id)
        except TransientError as exc:
            log.warning("could not drop the lock of %s (%s): tried again", item_id, exc.message)
            drops.later(lock, item_id, order_type, holder)
        except Exception:
            log.warning("could not release the lock store's lock of %s", item_id, exc_info=True)


def end_hold(
    lock: LeaseLock | None, lease: Lease, outcome: ItemOutcome, holder: Holder | None = None
) -> ItemOutcome:
    """One lease ended by a committed call (release, fail, submit, finalize): its hold
    dropped (:func:`drop_holds`, ``holder`` as presented, else the lease's own)."""
    ended = [(lease.item_id, outcome.item["order_type"], holder or lease.holder)]
    drop_holds(lock, ended)
    return outcome


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


def beat_the_lock(
    lock: LeaseLock,
    lease: Lease,
    holder: Holder,
    ttl_ms: int,
    now: datetime,
    read: Callable[[], Any],
) -> None:
    """A lock-only heartbeat (:func:`lock_only_beat`): the lock's extend. Refused, the
    row says why (``read``: the item's row, or ``None``), as every other refusal is named:
    after a submit the lock is gone, and the beat was ``lease_expired`` where every other
    call says ``illegal_state_transition``."""
    assert lease.item is not None
    try:
        lock.extend_lock(lease.item_id, holder, ttl_ms, lease.item.order_type)
    except (LeaseExpired, LeaseConflict):
        item = read()
        if item is not None:
            lock.check(item, holder, now)  # raises what the row says, if it says more
        raise


def build_store(ctx: ServiceContext) -> Store:
    """PostgreSQL's store on PostgreSQL (whatever the lease backend: it composes its
    lock), the ORM store on SQLite."""
    if ctx.db.is_postgres:
        from .postgres.leases import postgres_store

        return postgres_store(ctx)
    from .orm_store import OrmStore

    return OrmStore(ctx)
