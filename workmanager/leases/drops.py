"""Locks whose drop the lock store refused, dropped again in the background.

A call that ends a lease (submit, release, fail, an operator's release or reclaim)
commits in the database, then drops the lease's lock (``db/store.py drop_holds``). When
the lock store refuses (Redis unreachable, read-only, out of memory), the call has still
succeeded, and the lock stays until its TTL: its item is not held back (the next grant,
of a later fence, takes it over), but until then it counts against its old agent's and
type's limits, and its old holder's heartbeats without progress are still answered (a
lease-safety pass: an agent at a limit of 1 told "no items" for ten minutes). So the drop
is tried again, from one thread per process, while the store comes back
(:data:`DROPPING`); a process that ends first leaves it to the TTL.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import TYPE_CHECKING

from ..patience import Patience

if TYPE_CHECKING:
    from ..lease_tokens import Holder
    from .base import LeaseLock

log = logging.getLogger("workmanager.leases")

#: How long a refused drop is tried again (a lock's TTL ends it anyway).
DROPPING = Patience("drop", seconds=120.0, first_wait=0.5, longest_wait=10.0)

_Drop = tuple["LeaseLock", uuid.UUID, str, "Holder"]
_waiting: queue.SimpleQueue[_Drop] = queue.SimpleQueue()
_started = threading.Lock()
_thread: threading.Thread | None = None


def later(lock: LeaseLock, item_id: uuid.UUID, order_type: str, holder: Holder) -> None:
    """Drop ``holder``'s lock of the item again in the background, until the store takes
    it (compare-and-delete: a lock taken over since is left alone)."""
    global _thread
    _waiting.put((lock, item_id, order_type, holder))
    with _started:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_drop_all, name="lock-drops", daemon=True)
            _thread.start()


def _drop_all() -> None:
    while True:
        _drop(*_waiting.get())


def _drop(lock: LeaseLock, item_id: uuid.UUID, order_type: str, holder: Holder) -> None:
    try:
        DROPPING.call(
            lambda: lock.release_lock(item_id, holder, order_type),
            f"the lock store's lock of {item_id}",
            log,
        )
    except Exception as exc:  # given up: the lock's TTL ends it
        log.warning("the lock of %s stays until its TTL: %s", item_id, exc)
