"""The ``memory`` lock store: the Redis store's semantics in one process, for tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Lock:
    owner: str
    proof: str  # "<fence>|<secret hash>", as the Redis value keeps it
    order_type: str
    expires: float


class MemoryLeaseStore:
    """Thread-safe; every method is atomic under one lock. Time is ``time.monotonic``."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[str, _Lock] = {}
        self._marked = False
        #: wall-clock milliseconds at monotonic 0, fixed for the store's life: an end
        #: reported for a lock is the same on every call
        self._epoch_ms = time.time() * 1000 - time.monotonic() * 1000

    def _live(self, item_id: str, now: float) -> _Lock | None:
        lock = self._locks.get(item_id)
        if lock is not None and lock.expires <= now:
            del self._locks[item_id]
            return None
        return lock

    def _count(self, now: float, *, owner: str | None = None, order_type: str | None = None) -> int:
        return sum(
            1
            for key in list(self._locks)
            if (lock := self._live(key, now)) is not None
            and (owner is None or lock.owner == owner)
            and (order_type is None or lock.order_type == order_type)
        )

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
        with self._mutex:
            now = time.monotonic()
            held = self._live(item_id, now)
            if held is not None and int(held.proof.partition("|")[0]) > token:
                return 0  # a lock up to this fence is stale: taken over (acquire.lua)
            if held is not None:
                del self._locks[item_id]  # not counted against the limits below
            if agent_limit and self._count(now, owner=owner) >= agent_limit:
                return -1
            if type_limit and self._count(now, order_type=order_type) >= type_limit:
                return -2
            proof = f"{token}|{secret_hash}"
            self._locks[item_id] = _Lock(owner, proof, order_type, now + ttl_ms / 1000)
            return token

    def holding(self, owner: str) -> int:
        with self._mutex:
            return self._count(time.monotonic(), owner=owner)

    def extend(self, item_id: str, owner: str, proof: str, ttl_ms: int, order_type: str) -> int:
        with self._mutex:
            now = time.monotonic()
            lock = self._live(item_id, now)
            if lock is None:
                return 0
            if (lock.owner, lock.proof) != (owner, proof):
                return -1
            lock.expires = now + ttl_ms / 1000
            return 1

    def check(self, item_id: str, owner: str, proof: str) -> int:
        with self._mutex:
            lock = self._live(item_id, time.monotonic())
            if lock is None:
                return 0
            return 1 if (lock.owner, lock.proof) == (owner, proof) else -1

    def release(self, item_id: str, owner: str, proof: str, order_type: str) -> int:
        with self._mutex:
            lock = self._live(item_id, time.monotonic())
            if lock is None or (lock.owner, lock.proof) != (owner, proof):
                return 0
            del self._locks[item_id]
            return 1

    def _expiries(self, item_ids: list[str]) -> tuple[float, dict[str, float]]:
        """``(now, {item: its live lock's monotonic expiry})``, under the mutex."""
        with self._mutex:
            now = time.monotonic()
            live = {i: lock.expires for i in item_ids if (lock := self._live(i, now))}
            return now, live

    def alive(self, item_ids: list[str]) -> dict[str, int]:
        now, live = self._expiries(item_ids)
        return {i: int((expires - now) * 1000) for i, expires in live.items()}

    def ends(self, item_ids: list[str]) -> dict[str, int]:
        _, live = self._expiries(item_ids)
        return {i: int(self._epoch_ms + expires * 1000) for i, expires in live.items()}

    def marked(self) -> bool:
        with self._mutex:
            return self._marked

    def mark(self) -> None:
        with self._mutex:
            self._marked = True

    def flush(self) -> int:
        """Forget every lock, as a Redis FLUSHDB would (and the marker)."""
        with self._mutex:
            forgotten = len(self._locks) + self._marked
            self._locks.clear()
            self._marked = False
            return forgotten
