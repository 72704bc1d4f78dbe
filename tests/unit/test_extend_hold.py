"""An operator's extend (``db/extends.py``) against a lock store whose clock is not this
host's: the lock's new TTL is the time it has left by its own count plus the extension.
Found by a clock-skew pass: with Redis's clock 15 minutes behind, the TTL was computed as
the store's end (its clock) less this host's now: negative, and the lock deleted while
``leases extend`` reported ``extended``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from workmanager.db.extends import extend_hold

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@dataclass
class SkewedLock:
    """A lock store 15 minutes behind this host: its end of the lock is 15 minutes early
    by this host's clock, the time it has left (a TTL) the same on both."""

    left_ms: int
    behind: timedelta = timedelta(minutes=15)
    extended: list[int] = field(default_factory=list)

    def ends(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        return {i: NOW - self.behind + timedelta(milliseconds=self.left_ms) for i in item_ids}

    def alive(self, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {i: self.left_ms for i in item_ids}

    def extend_lock(self, item_id: uuid.UUID, holder: Any, ttl_ms: int, order_type: str) -> None:
        self.extended.append(ttl_ms)


def test_the_lock_gets_the_time_it_has_left_plus_the_extension() -> None:
    lock = SkewedLock(left_ms=120_000)
    row = SimpleNamespace(
        id=uuid.uuid4(),
        lease_expires_at=NOW + timedelta(minutes=2),
        leased_by_agent_id="agent-1",
        lease_token=3,
        lease_secret_hash="h",
        order_type="t",
    )
    expiry, refused = extend_hold(lock, row, NOW, 60)  # type: ignore[arg-type]
    assert refused is None
    assert lock.extended == [180_001]  # 2 minutes left + 60 s (+ the ms rounded down)
    assert expiry == NOW - timedelta(minutes=15) + timedelta(minutes=3)  # as reads show it
