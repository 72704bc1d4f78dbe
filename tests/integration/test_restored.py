"""``workmanager ops restored``: after the database is restored from a backup, no fencing
token granted since the backup is accepted or granted again (SPEC §4.4).

A restore is played here by writing an item's row back as it was when the "backup" was
taken: the row forgets the release and the grant made since. Without the command, the
released lease is live again (its holder's heartbeat and submit accepted) and the next
grant hands out a fence a holder already had."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from tests.cli.conftest import Console
from tests.support.types import Simple
from workmanager import Registry
from workmanager.db.models import Item
from workmanager.errors import LeaseConflict, WorkManagerError
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin

BACKUP_COLUMNS = ("state", "lease_token", "leased_by_agent_id", "lease_expires_at",
                  "lease_secret_hash", "attempts")  # fmt: skip


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_no_token_from_before_the_restore_is_accepted_or_granted_again(
    make_wm: Any, database: str, backend: str
) -> None:
    wm = make_wm(db=database, backend=backend, registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    first = wm.agent.checkout("agent-a", order_id=order_id)
    assert first is not None
    with wm.db.transaction() as s:  # the backup
        row = s.get(Item, first.item_id)
        assert row is not None
        backup = {c: getattr(row, c) for c in BACKUP_COLUMNS}
    wm.agent.release(first)
    second = wm.agent.checkout("agent-b", order_id=order_id)
    assert second is not None and second.fence > first.fence
    wm.agent.release(second)
    with wm.db.transaction() as s:  # the restore: the row as the backup has it
        s.execute(update(Item).where(Item.id == first.item_id).values(**backup))

    report = Console(wm).json("ops", "restored", "--yes")
    assert report == {"items": 1, "fence_gap": 1_000_000, "locks_forgotten": 0}
    with pytest.raises(LeaseConflict):  # released since the backup: not live again
        wm.agent.heartbeat(first)
    with pytest.raises(LeaseConflict):
        wm.agent.submit(first, {"answer": 1})
    # the lease the backup shows held: ended by an operator (or the sweep at its expiry)
    LeaseAdmin(wm.ctx).release(LeaseSelector(order_id=order_id))
    third = wm.agent.checkout("agent-c", order_id=order_id)
    assert third is not None and third.fence > second.fence + 999_999


def test_the_redis_locks_granted_since_the_backup_are_forgotten(
    make_wm: Any, database: str
) -> None:
    """A lease granted since the backup kept its Redis lock: its holder's bare heartbeats
    (which touch only the lock) went on being accepted, and an operator's release could not
    drop the lock. ``ops restored`` forgets the lease store's locks and says how many."""
    wm = make_wm(db=database, backend="redis", registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    first = wm.agent.checkout("agent-a", order_id=order_id)
    assert first is not None
    with wm.db.transaction() as s:
        row = s.get(Item, first.item_id)
        assert row is not None
        backup = {c: getattr(row, c) for c in BACKUP_COLUMNS}
    wm.agent.release(first)
    since = wm.agent.checkout("agent-b", order_id=order_id)  # held at the restore
    assert since is not None
    with wm.db.transaction() as s:
        s.execute(update(Item).where(Item.id == first.item_id).values(**backup))
    report = Console(wm).json("ops", "restored", "--yes")
    assert report["items"] == 1 and report["locks_forgotten"] >= 1
    for lease in (since, first):
        with pytest.raises(WorkManagerError) as refused:
            wm.agent.heartbeat(lease)
        assert refused.value.code in ("lease_conflict", "lease_expired"), refused.value
