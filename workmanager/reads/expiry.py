"""When a held lease ends, as every read shows it.

With a lock store (Redis, memory) a heartbeat may extend only the lock
(:func:`workmanager.db.store.lock_only_beat`): the row's ``lease_expires_at`` is then
brought up to date lazily (by the sweep, by the next write to the row) and lags behind,
never ahead. A read that showed the row's figure would make a live lease look expired.
So the item views that reads hand out (the order view's items, an item, the console's
lists, dashboard and item page) take a held lease's expiry from its lock: now plus the
lock's remaining TTL, or, when the lock is gone (the lease has expired; the sweep reclaims
it), no later than now. Without a lock store the row is the lock and its figure is kept.
One rule, here; one round trip to the lock store per read, whatever the number of items.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..errors import WorkManagerError
from ..services.context import ServiceContext
from ..services.views import iso
from ..states import ItemState

log = logging.getLogger("workmanager.reads")

#: The states in which an item is held under a lease.
HELD = frozenset({ItemState.LEASED.value, ItemState.IN_PROGRESS.value})


def lock_left(ctx: ServiceContext, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int] | None:
    """Milliseconds left on each live lock of ``item_ids`` (an expired one is absent);
    ``None`` without a lock store, or when it does not answer (the rows' figures then
    stand, with a warning: a read never fails for it)."""
    lock = ctx.leases.lock
    if lock is None or not item_ids:
        return None
    try:
        return lock.alive(list(item_ids))
    except WorkManagerError:
        log.warning("the lease lock store did not answer a read", exc_info=True)
        return None


def live_expiry(
    now: datetime, left: dict[uuid.UUID, int], item_id: uuid.UUID, recorded: datetime
) -> datetime:
    """A held lease's expiry given its lock's remaining time; without a live lock, the
    row's ``recorded`` expiry when already past, else ``now`` (it has expired)."""
    ms = left.get(item_id)
    return min(recorded, now) if ms is None else now + timedelta(milliseconds=ms)


def with_live_expiry(ctx: ServiceContext, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` (item views, as :func:`~workmanager.services.views.item_dict` makes them)
    with each held lease's ``lease_expires_at`` taken from its lock (see the module's
    docstring); changed in place and returned."""
    held = [i for i in items if i.get("state") in HELD and i.get("lease_expires_at")]
    left = lock_left(ctx, [uuid.UUID(i["id"]) for i in held])
    if left is None:
        return items
    now = ctx.clock()
    for item in held:
        recorded = datetime.fromisoformat(item["lease_expires_at"])
        item["lease_expires_at"] = iso(live_expiry(now, left, uuid.UUID(item["id"]), recorded))
    return items
