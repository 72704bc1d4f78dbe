"""When a held lease ends, as every read shows it.

With a lock store (Redis, memory) a heartbeat may extend only the lock
(:func:`workmanager.db.store.lock_only_beat`): the row's ``lease_expires_at`` is then
brought up to date lazily (by the sweep, by the next write to the row) and lags behind,
never ahead. A read that showed the row's figure would make a live lease look expired.
So the item views that reads hand out (the order view's items, an item, the lists, the
console's pages) take a held lease's expiry from its lock: the instant the lock ends
(``LeaseLock.ends``: Redis' ``PEXPIRETIME``, the same on every read until a heartbeat moves
it), or, when the lock is gone (the lease has expired; the sweep reclaims it), no later
than now. The dashboard's "expiring soon" list counts the time left to that instant.
Without a lock store the row is the lock and its figure is kept. One rule, here; one round
trip to the lock store per read, whatever the number of items.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import WorkManagerError
from ..services.context import ServiceContext
from ..services.views import iso
from ..states import HELD_ITEM_STATES

log = logging.getLogger("workmanager.reads")

#: The states in which an item is held under a lease, as the views spell them.
HELD = frozenset(s.value for s in HELD_ITEM_STATES)


def lock_ends(
    ctx: ServiceContext, item_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, datetime] | None:
    """When each live lock of ``item_ids`` ends (an expired one is absent): the same
    instant on every read until the lock changes. ``None`` without a lock store, or when
    it does not answer (the rows' figures then stand, with a warning: a read never fails
    for it)."""
    lock = ctx.leases.lock
    if lock is None or not item_ids:
        return None
    try:
        return lock.ends(list(item_ids))
    except WorkManagerError:
        log.warning("the lease lock store did not answer a read", exc_info=True)
        return None


def expired(view: dict[str, Any], now: datetime) -> bool:
    """Whether an item view (after :func:`with_live_expiry`) shows a held lease that has
    expired: its lock is gone, or its time is up (the sweep has not reclaimed it yet)."""
    at = view.get("lease_expires_at")
    return view.get("state") in HELD and at is not None and datetime.fromisoformat(at) <= now


def with_live_expiry(ctx: ServiceContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` (item views, as :func:`~workmanager.services.views.item_dict` makes them)
    with each held lease's ``lease_expires_at`` taken from its lock (see the module's
    docstring); changed in place and returned."""
    held = [i for i in items if i.get("state") in HELD and i.get("lease_expires_at")]
    ends = lock_ends(ctx, [uuid.UUID(i["id"]) for i in held])
    if ends is None:
        return items
    now = ctx.clock()
    for item in held:
        recorded = datetime.fromisoformat(item["lease_expires_at"])
        item["lease_expires_at"] = iso(live_end(ends.get(uuid.UUID(item["id"])), recorded, now))
    return items


def live_end(lock_end: datetime | None, recorded: datetime | None, now: datetime) -> datetime:
    """A held lease's expiry as reads show it: its lock's end, or, when the lock is gone
    (expired; the sweep reclaims it), the row's figure no later than ``now``."""
    if lock_end is not None:
        return lock_end
    return min(recorded or now, now)
