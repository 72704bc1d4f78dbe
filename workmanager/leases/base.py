"""The lease backend port, and the row checks every backend shares.

A backend owns three decisions: which eligible item an agent gets (atomically, honouring
the concurrency limits), whether a presented lease is still the current one, and how a
lease is kept alive. Item *state* always lives in the database; backends change it only
inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

from ..db.models import Item
from ..errors import Forbidden, IllegalStateTransition, LeaseConflict, LeaseExpired
from ..lease_tokens import MALFORMED_FENCE, Holder, same_secret
from ..states import HELD_ITEM_STATES, ItemState

if TYPE_CHECKING:
    from ..db.store import ItemRecord
    from .limits import Limits


@dataclass(frozen=True)
class CheckoutQuery:
    """Which items an agent will take: one order's, or the global queue filtered."""

    order_id: uuid.UUID | None = None
    type: str | None = None
    min_priority: int | None = None
    tenant_id: str | None = None
    #: One specific item (Celery consumer agents lease the item their message names).
    item_id: uuid.UUID | None = None
    #: Only items of these order types (the ones this process knows: an item of a type it
    #: cannot validate would be leased, then every submit of it refused).
    known: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Grant:
    """What a backend granted: the item row (already updated in the session), its fence
    and the hash of the grant's secret (on the row, and in the store's lock)."""

    item: Item
    token: int
    expires_at: datetime
    secret_hash: str

    @property
    def holder(self) -> Holder:
        return Holder(self.item.leased_by_agent_id or "", self.token, self.secret_hash)


class LeaseLock(Protocol):
    """A lease's lock outside the database (Redis, memory): what the PostgreSQL store
    composes between its statements. The row stays the record; the lock is who may act.
    Every method is atomic on the lock's store."""

    def acquire(
        self,
        item_id: uuid.UUID,
        agent_id: str,
        ttl_ms: int,
        token: int,
        order_type: str,
        secret_hash: str,
    ) -> int:
        """Lock the item for ``agent_id`` under ``token`` (the fence the caller took from
        the row: its last token + 1): ``token``, or ``0`` when the item is locked under a
        later fence, ``-1`` when the agent is at its limit, ``-2`` when the type is. A lock
        under a fence up to ``token`` is stale (the caller holds the row, queued) and is
        taken over."""

    def agent_full(self, agent_id: str) -> bool:
        """Whether the agent holds its limit of leases already: asked before a row is
        locked, so an agent at its limit never holds one another agent could have had
        (:meth:`acquire` still decides, atomically)."""

    def extend_lock(self, item_id: uuid.UUID, holder: Holder, ttl_ms: int, order_type: str) -> None:
        """Push the lock's expiry out; raise ``lease_expired`` (no lock) or
        ``lease_conflict`` (another token)."""

    def holds(self, item_id: uuid.UUID, holder: Holder) -> bool:
        """Whether ``holder``'s lock on the item is there (a lease without it is expired)."""

    def check(self, item: ItemRecord, holder: Holder, now: datetime) -> None:
        """The row's checks (``check_row``), then the lock's; raise what is wrong."""

    def release_lock(self, item_id: uuid.UUID, holder: Holder, order_type: str) -> bool:
        """Drop ``holder``'s lock after the commit that ended its lease (compare-and-
        delete); ``False`` when it was no longer there."""

    def abandoned(self, grant: Grant, agent_id: str) -> None:
        """Drop the lock of a grant whose transaction rolled back."""

    def alive(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Of these items, the ones with a live lock, with the milliseconds it has left
        (what the sweep asks: a lease without its lock is gone)."""

    def ends(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """Of these items, the ones with a live lock, with when it ends (UTC): a held
        lease's expiry as reads show it (``reads/expiry.py``)."""


class LeaseBackend(Protocol):
    """Decides who holds a lease. Every method runs inside the caller's transaction."""

    name: str

    @property
    def limits(self) -> Limits:
        """The limits this backend counts on the rows (:mod:`.limits`)."""

    @property
    def lock(self) -> LeaseLock | None:
        """Its lock outside the database (what the PostgreSQL store composes), or
        ``None`` when the row is the lock."""

    def checkout(
        self,
        session: Session,
        agent_id: str,
        query: CheckoutQuery,
        now: datetime,
        ttl: int,
        secret_hash: str,
    ) -> Grant | None:
        """Pick the next eligible item and grant it to ``agent_id``, or return ``None``.

        Atomic under concurrency: two callers never get the same item, and a caller racing
        others gets the next eligible item rather than ``None``. The grant sets the row to
        ``leased`` with a fence strictly greater than any earlier fence of that item,
        ``secret_hash`` as the lease's proof, ``attempts + 1`` and ``lease_expires_at =
        now + ttl``. Limits per agent and per type are enforced in the same atomic step.
        """

    def check(self, item: Item, holder: Holder, now: datetime) -> None:
        """Raise unless ``holder`` holds the item's current, unexpired lease (row locked)."""

    def extend(self, item: Item, holder: Holder, now: datetime, ttl: int) -> None:
        """Check the lease and push its expiry to ``now + ttl``; raise as :meth:`check`."""

    def abandoned(self, grant: Grant, agent_id: str) -> None:
        """Called when the transaction of a grant rolled back; drops any backend-side hold."""

    def lost_track(self) -> bool:
        """True when leases may have been lost since the last audit (the store was flushed
        or restarted, or it was never audited). The sweep then checks every held row, not
        only those past their recorded expiry. A read: it changes nothing, so an audit that
        fails is tried again by the next sweep."""

    def forget_locks(self) -> int:
        """Forget every lock outside the database (``flush`` of the lock store; 0 without
        one), so that the next sweep audits every held row: what ``db upgrade
        --record-settings`` does on a switch to the Redis backend, whose keys under the
        prefix are then from an earlier period and would refuse the leases granted since."""

    def audited(self) -> None:
        """Record that every held row was checked after a loss :meth:`lost_track` reported.
        The sweep calls it only once its audit has finished."""


def check_row(
    item: ItemRecord, holder: Holder, now: datetime, *, check_expiry: bool = True
) -> None:
    """The checks every backend makes against the locked item row.

    Order matters: a token that is not current (its fence, or its secret) is a conflict
    even for the same agent id; a current token held by another agent is forbidden; a
    current token on an item that is no longer held (reclaimed) or past its expiry is
    expired.
    """
    if holder.fence == MALFORMED_FENCE:
        raise LeaseConflict(
            "the lease token is malformed: send it exactly as checkout returned it"
            " (<fence>.<secret>)",
            details={"item_id": str(item.id)},
        )
    if holder.fence < 0:  # no token sent (LEASE_TOKEN_REQUIRED=false), and no lease held
        raise LeaseConflict(
            "no lease token was sent, and this agent held no lease on the item when the"
            " request was read (another agent's, or none): check out again",
            details={"item_id": str(item.id)},
        )
    if item.lease_token != holder.fence or not same_secret(
        item.lease_secret_hash, holder.secret_hash
    ):
        raise LeaseConflict(
            "the lease token is not the item's current lease",
            details={"item_id": str(item.id)},
        )
    if item.state not in HELD_ITEM_STATES:
        if item.state in (ItemState.QUEUED, ItemState.FAILED, ItemState.DEAD_LETTERED):
            raise LeaseExpired(  # the code upstream agents know for "this lease is gone"
                f"the lease has ended: the item is {item.state} (the lease expired and was "
                "reclaimed, or was released or failed, or its order was dead-lettered)",
                details={"item_id": str(item.id), "state": item.state},
            )
        raise IllegalStateTransition(
            f"item is {item.state}; the lease has ended",
            details={"item_id": str(item.id), "state": item.state},
        )
    if item.leased_by_agent_id != holder.agent_id:
        raise Forbidden("this item is leased by another agent", details={"item_id": str(item.id)})
    if check_expiry and item.lease_expires_at is not None and item.lease_expires_at <= now:
        raise LeaseExpired("the lease has expired", details={"item_id": str(item.id)})


class LeaseStore(Protocol):
    """An external lock store (Redis, memory): TTL'd keys per item, owner + token checked.

    Every method is atomic on the store. ``limit`` arguments are ``0`` for unlimited.
    """

    def acquire(
        self,
        item_id: str,
        owner: str,
        ttl_ms: int,
        token: int,
        order_type: str,
        agent_limit: int,
        type_limit: int,
        secret_hash: str,
    ) -> int:
        """Lock the item for ``owner`` under ``token``, the fence (the lock keeps it and
        ``secret_hash``). The caller takes the token from the item's row (its last token
        + 1): the row is the one source of fences, so a store that loses its data loses
        none. The caller holds the item's row, queued, so a lock under a fence up to
        ``token`` is stale (a release committed while its lock could not be dropped) and is
        taken over. Returns ``token`` (> 0), ``0`` if the item is locked under a later
        fence, ``-1`` if the agent is at its limit, ``-2`` if the type is."""

    def holding(self, owner: str) -> int:
        """How many live leases ``owner`` holds, as :meth:`acquire` counts them for the
        agent's limit (a read: what a checkout asks before it locks a row)."""

    def extend(self, item_id: str, owner: str, proof: str, ttl_ms: int, order_type: str) -> int:
        """``1`` extended; ``0`` no lock (expired or lost); ``-1`` held under another proof.
        ``proof`` is :meth:`Holder.store_proof`: the fence and the secret's hash."""

    def check(self, item_id: str, owner: str, proof: str) -> int:
        """``1`` held by owner+proof; ``0`` no lock; ``-1`` held under another owner/proof."""

    def release(self, item_id: str, owner: str, proof: str, order_type: str) -> int:
        """Delete the lock if owner+proof match: ``1`` deleted, ``0`` not held by them."""

    def alive(self, item_ids: list[str]) -> dict[str, int]:
        """Of these items, the ones with a live lock, with the milliseconds it has left."""

    def ends(self, item_ids: list[str]) -> dict[str, int]:
        """Of these items, the ones with a live lock, with the instant it ends (milliseconds
        since the epoch): what reads show, the same on every call until the lock changes."""

    def marked(self) -> bool:
        """Whether the store's data-loss marker is there; ``False`` when it is missing (the
        store lost its data, or was never marked), so locks may have vanished with it."""

    def mark(self) -> None:
        """Set the data-loss marker (after an audit of every held row)."""

    def flush(self) -> int:
        """Delete every lock, limit count and the data-loss marker (not the rate limits'
        buckets), as a flush of the store would; how many keys went."""
