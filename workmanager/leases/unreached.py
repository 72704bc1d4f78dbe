"""Items whose lock a sharded store (Redis Cluster) cannot reach.

With one shard down (``cluster-require-full-coverage no``) its items' locks answer
``unavailable`` while the other shards' answer. Every checkout tried the queue's head on
the dead shard and failed, so nothing was granted anywhere. A checkout now skips such an
item (:class:`Unreached`, up to :attr:`Unreached.MOST` new ones), and the lock remembers it
for :attr:`Lately.SECONDS` (:class:`Lately`), so the next checkouts leave it out without
asking again (each ask costs redis-py's retries) and the dead shard's items, which pile up
at the queue's head, never stall the live ones. When what is left to lease is only such
items, the outage is said (503), not "nothing to lease". A store of one server says the
outage at once: every lock is down alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import Unavailable


class Lately:
    """The items a sharded store could not reach in the last :attr:`SECONDS`, and the last
    outage (a lock's, shared by its checkouts)."""

    SECONDS = 10.0
    #: The most remembered (the oldest go first): a checkout's statement leaves them out.
    MOST = 1000

    def __init__(self) -> None:
        self._until: dict[uuid.UUID, float] = {}
        self._lock = threading.Lock()
        self.outage: Unavailable | None = None

    def add(self, item_id: uuid.UUID, outage: Unavailable) -> None:
        with self._lock:
            self._until.pop(item_id, None)
            self._until[item_id] = time.monotonic() + self.SECONDS
            while len(self._until) > self.MOST:
                self._until.pop(next(iter(self._until)))
            self.outage = outage

    def known(self) -> list[uuid.UUID]:
        now = time.monotonic()
        with self._lock:
            for item_id in [i for i, until in self._until.items() if until <= now]:
                del self._until[item_id]
            return list(self._until)


class Unreached:
    """One checkout's skips: the candidates whose lock could not be reached."""

    MOST = 3

    def __init__(self, lock: object) -> None:
        self.sharded = bool(getattr(lock, "sharded", False))  # a lock of its own: no
        lately = getattr(lock, "unreachable", None)
        self.lately: Lately | None = lately if self.sharded and isinstance(lately, Lately) else None
        self.count = 0
        self.outage: Unavailable | None = None
        self.left_out = False

    def known(self) -> list[uuid.UUID]:
        """The items left out of this checkout, unreachable a moment ago."""
        known = self.lately.known() if self.lately is not None else []
        self.left_out = bool(known)
        return known

    def acquire(self, call: Callable[..., Any], item_id: Any, *args: Any) -> int:
        """``call(item_id, *args)``, the store's answer for one candidate; ``0`` (taken:
        the next candidate is tried) when its lock could not be reached and it may be
        skipped."""
        try:
            return int(call(item_id, *args))
        except Unavailable as outage:
            self.count, self.outage = self.count + 1, outage
            if not self.sharded or self.count > self.MOST:
                raise
            if self.lately is not None:
                self.lately.add(uuid.UUID(str(item_id)), outage)
            return 0

    def none_left(self) -> None:
        """No candidate left: the outage when items were skipped or left out for it (what
        is left is on the dead shard), else nothing (nothing to lease)."""
        outage = self.outage or (self.lately.outage if self.left_out and self.lately else None)
        if outage is not None:
            raise outage
