"""An operator's extend of a held lease (``leases extend``, the console's): its new expiry
and the lock store's hold moved to match, on both stores (``db/postgres/admin.py``,
``db/orm_store.py``); the dry run's preview (``services/lease_admin.py``) pushes out the
same way."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import WorkManagerError
from .store import holder_of

if TYPE_CHECKING:
    from ..leases.base import LeaseLock


#: Why a lease is not extended past what a date holds (each extend is at most ten years;
#: extends add up).
PAST_DATES = "validation_failed: the lease would end after the year 9999, past what a date holds"


def pushed_out(expiry: datetime, seconds: int) -> datetime | None:
    """``expiry`` pushed out by ``seconds``; ``None`` past the last date (year 9999)."""
    try:
        return expiry + timedelta(seconds=seconds)
    except OverflowError:
        return None


def extend_hold(
    lock: LeaseLock | None, row: Any, now: datetime, seconds: int
) -> tuple[datetime, str | None]:
    """The new expiry of a held row's lease pushed out by ``seconds``, and why it may not
    be (``None``: it may), the lock store's hold extended to match. Without a lock store
    a lease past its recorded expiry is expired; with one, the lock says, and its end is
    what is pushed out (a heartbeat that touched only the lock left the row's behind)."""
    if lock is None:
        if row.lease_expires_at <= now:
            return row.lease_expires_at, "lease_expired: the lease has expired"
        new_expiry = pushed_out(row.lease_expires_at, seconds)
        return (new_expiry, None) if new_expiry else (row.lease_expires_at, PAST_DATES)
    try:
        ends = lock.ends([row.id]).get(row.id)
        if ends is None:
            return row.lease_expires_at, "lease_expired: the lease has expired"
        # from the lock's end, as every read shows it (reads/expiry.py), to the millisecond
        # the lock counts in (whole seconds made the lease up to a second longer than said)
        new_expiry = pushed_out(ends, seconds)
        if new_expiry is None:
            return ends, PAST_DATES
        # the lock store counts its own time: the lock's new TTL is what it has left now,
        # by its clock, plus the extension (this host's clock against the store's end made
        # it negative, the lock deleted, when Redis's clock was behind this host's); read
        # now, not at the batch's start (a batch of 300 set locks up to 180 ms late)
        left = lock.alive([row.id]).get(row.id)
        if left is None:
            return row.lease_expires_at, "lease_expired: the lease has expired"
        # + 1: the time left is counted in whole milliseconds, rounded down; the lock
        # ends no earlier than the expiry reported (and reads then show)
        lock.extend_lock(row.id, holder_of(row), left + seconds * 1000 + 1, row.order_type)
    except WorkManagerError as exc:  # expired, or the store no longer holds it
        return row.lease_expires_at, f"{exc.code}: {exc.message}"
    return new_expiry, None
