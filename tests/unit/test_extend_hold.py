"""An operator's extend with a lock store (``db/extends.py extend_hold``): the lock ends when
the extend says, counted from the lock store's clock when the call reaches it, not from
the batch's start (a batch of 300 leases set locks up to 180 ms late, found by a review)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from workmanager import Settings
from workmanager.db.extends import extend_hold
from workmanager.lease_tokens import Holder
from workmanager.leases.factory import build_lease_backend


def test_the_lock_ends_when_the_extend_says_however_late_in_its_batch() -> None:
    lock = build_lease_backend(Settings(lease_backend="memory")).lock
    assert lock is not None
    item_id, holder = uuid.uuid4(), Holder("a1", 7, "f" * 64)
    assert lock.acquire(item_id, "a1", 60_000, 7, "t", holder.secret_hash or "") == 7
    row = SimpleNamespace(
        id=item_id,
        order_type="t",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=60),
        leased_by_agent_id="a1",
        lease_token=7,
        lease_secret_hash=holder.secret_hash,
    )
    batch_start = datetime.now(UTC) - timedelta(seconds=30)  # a long batch, this lease last
    new_expiry, refused = extend_hold(lock, row, batch_start, 600)
    assert refused is None
    ends = lock.ends([item_id])[item_id]
    assert timedelta(0) <= ends - new_expiry < timedelta(seconds=1)
