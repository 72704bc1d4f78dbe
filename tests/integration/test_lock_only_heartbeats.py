"""With a lock store (Redis, memory), a heartbeat without progress on a lease already
``in_progress`` touches only the lock (issue 18; ``db/store.py lock_only_beat``): the row
and the audit tables are not written, the lease stays good past the row's recorded expiry
(the lock's TTL is the expiry), the sweep refreshes the row's expiry instead of
reclaiming it, and a lost lock is still an expired lease. The same on both stores."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Multi
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, Provenance
from workmanager.errors import LeaseConflict, LeaseExpired

TTL = 2
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
LOCKS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


def _row(wm: WorkManager, item_id: uuid.UUID) -> dict[str, Any]:
    with wm.db.transaction() as s:
        item = s.get(Item, item_id)
        assert item is not None
        events = s.scalar(select(func.count()).where(Event.item_id == item_id))
        provenance = s.scalar(select(func.count()).where(Provenance.item_id == item_id))
        return {
            "updated_at": item.updated_at,
            "last_heartbeat_at": item.last_heartbeat_at,
            "lease_expires_at": item.lease_expires_at,
            "events": events,
            "provenance": provenance,
        }


@pytest.mark.parametrize("db", STORES)
@pytest.mark.parametrize("lock", LOCKS)
def test_a_plain_beat_touches_only_the_lock(make_wm, db, lock) -> None:
    wm = make_wm(db=db, backend=lock, registry=Registry([Multi()]), lease_ttl_seconds=TTL)
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    first = wm.agent.heartbeat(lease)  # leased → in_progress: written on the row
    assert first.item is not None and first.item.state == "in_progress"
    before = _row(wm, lease.item_id)
    beat = first
    deadline = before["lease_expires_at"]
    assert deadline is not None
    # beat past the row's recorded expiry: only the lock is extended each time
    while _now(wm) < deadline + _seconds(0.5):
        beat = wm.agent.heartbeat(beat)
        time.sleep(0.25)
    assert beat.expires_at > deadline
    assert _row(wm, lease.item_id) == before  # no row, event or provenance written
    # the sweep does not reclaim a lease whose lock is alive; it refreshes the row instead
    assert wm.sweeper.sweep().reclaimed == 0
    refreshed = _row(wm, lease.item_id)["lease_expires_at"]
    assert refreshed is not None and refreshed > deadline
    # progress still reaches the row
    recorded = wm.agent.heartbeat(beat, progress=0.5)
    assert _row(wm, lease.item_id)["last_heartbeat_at"] != before["last_heartbeat_at"]
    # a wrong secret is refused by the lock itself
    forged = dataclasses.replace(recorded, token=f"{recorded.fence}.forged")
    with pytest.raises(LeaseConflict):
        wm.agent.heartbeat(forged)
    outcome = wm.agent.submit(recorded, {"x": 1})
    assert outcome.order_submitted


@pytest.mark.parametrize("db", STORES)
@pytest.mark.parametrize("lock", LOCKS)
def test_a_lost_lock_refuses_the_plain_beat(make_wm, db, lock) -> None:
    wm = make_wm(db=db, backend=lock, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    beat = wm.agent.heartbeat(lease)
    store = wm.ctx.leases.store  # type: ignore[attr-defined]
    if lock == "memory":
        store.flush()
    else:
        store.client.delete(*store.client.keys(f"{store.keys.prefix}item:*"))
    with pytest.raises(LeaseExpired):
        wm.agent.heartbeat(beat)
    with pytest.raises(LeaseExpired):
        wm.agent.submit(beat, {"x": 1})


def _now(wm: WorkManager) -> Any:
    return wm.ctx.clock()


def _seconds(n: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


@pytest.mark.parametrize("db", STORES)
@pytest.mark.parametrize("lock", [*LOCKS, "database"])
def test_reads_show_a_held_leases_expiry_from_its_lock(make_wm, db, lock) -> None:
    """The row's recorded expiry lags behind lock-only beats; the order view, the item
    view, the console's items list, the orders list's included items, the CLI's items
    list and ``ops check``'s expired count go by the lock's (reads/expiry.py), and no
    later than now once the lock is gone. Without a lock store the row's figure is the
    lease's."""
    from sqlalchemy import update

    from workmanager.reads.item_listing import ItemListing
    from workmanager.reads.listing import OrderListing
    from workmanager.services.admin import ItemAdmin, ItemFilter

    wm = make_wm(db=db, backend=lock, registry=Registry([Multi()]), lease_ttl_seconds=60)
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    lagging = _now(wm) - _seconds(30)  # as if the lock had been extended since, not the row
    with wm.db.transaction() as s:
        s.execute(update(Item).where(Item.id == lease.item_id).values(lease_expires_at=lagging))

    def shown() -> list[str]:
        listed = ItemListing(wm.ctx).list([("filter[order_id]", str(order_id))])["data"]
        included = OrderListing(wm.ctx).list([("include", "items")])["data"][0]["items"]
        admin = ItemAdmin(wm.ctx).list(ItemFilter(order_id=order_id))
        return [
            wm.queries.order(order_id)["items"][0]["lease_expires_at"],
            wm.queries.item(lease.item_id)["lease_expires_at"],
            listed[0]["lease_expires_at"],
            included[0]["lease_expires_at"],  # GET /orders?include=items, work.list
            admin[0]["lease_expires_at"],  # workmanager items list
        ]

    def at(text: str) -> Any:
        from datetime import datetime

        return datetime.fromisoformat(text)

    def leases() -> dict[str, int]:  # ``ops check``'s figures (an audit pass: from the row)
        from workmanager.services.housekeeping import Housekeeping

        return dict(Housekeeping(wm.ctx).counts()["leases"])

    if lock == "database":  # the row is the lock: its figure, whatever it says
        assert {at(t) for t in shown()} == {lagging}
        assert leases() == {"held": 1, "expired": 1}
        return
    before = _now(wm)
    first = shown()
    assert all(at(t) > before + _seconds(50) for t in first)  # the lock's 60 s TTL
    assert len(set(first)) == 1 and shown() == first  # the lock's end: the same each read
    assert leases() == {"held": 1, "expired": 0}
    store = wm.ctx.leases.store  # type: ignore[attr-defined]
    if lock == "memory":
        store.flush()
    else:
        store.client.delete(*store.client.keys(f"{store.keys.prefix}item:*"))
    assert all(at(t) <= _now(wm) for t in shown())  # the lock is gone: expired
    assert leases() == {"held": 1, "expired": 1}


@pytest.mark.parametrize("db", STORES)
@pytest.mark.parametrize("lock", LOCKS)
def test_leases_extend_pushes_out_the_locks_end(make_wm, db, lock) -> None:
    """Found by an adversarial pass: ``leases extend`` added its seconds to the row's
    expiry, which lock-only heartbeats had left behind, so it shortened the live lock
    (or, the sum already past, deleted it) while it said "extended", and the agent's next
    heartbeat was refused; its dry run said such a lease was expired."""
    from workmanager.reads.leases import LeaseSelector
    from workmanager.services.lease_admin import LeaseAdmin

    wm = make_wm(db=db, backend=lock, registry=Registry([Multi()]), lease_ttl_seconds=TTL)
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    beat = wm.agent.heartbeat(lease)  # in_progress: later plain beats touch only the lock
    recorded = _row(wm, lease.item_id)["lease_expires_at"]
    while _now(wm) < recorded + _seconds(0.5):  # the row's figure is now in the past
        beat = wm.agent.heartbeat(beat)
        time.sleep(0.25)
    admin, selector = LeaseAdmin(wm.ctx), LeaseSelector(item_id=lease.item_id)
    (preview,) = admin.extend(selector, 30, dry_run=True).changes
    assert preview["outcome"] == "extended", preview
    ends = wm.ctx.leases.lock.ends([lease.item_id])[lease.item_id]
    (done,) = admin.extend(selector, 30).changes
    assert done["outcome"] == "extended", done
    after = wm.ctx.leases.lock.ends([lease.item_id])[lease.item_id]
    assert after >= ends + _seconds(29), (ends, after)
    time.sleep(TTL + 0.5)  # past the lease's own TTL: only the extension keeps it
    assert wm.agent.submit(beat, {"x": 1}).order_submitted


@pytest.mark.parametrize("db", STORES)
@pytest.mark.parametrize("lock", LOCKS)
def test_a_lock_restored_for_an_ended_lease_beats_for_no_one(make_wm, db, lock) -> None:
    """Found by a Redis failure pass: Redis restarted from an older copy of its data (a
    snapshot, a replica that missed the last writes) held the lock of a lease that had
    ended (A's, fence 1) while the row named its successor (B, fence 2): A's plain beats
    were answered 200, touching only that lock, and the item stayed stuck. A caller that is
    not the row's holder is refused (409) as the row says."""
    from workmanager.lease_tokens import Holder
    from workmanager.services.tokens import Principal
    from workmanager.surface.callers import AgentMetadata, build_caller
    from workmanager.surface.operations import CheckoutFilters, Operations

    wm = make_wm(db=db, backend=lock, registry=Registry([Multi()]))
    ops = Operations(wm)
    admin = Principal("token-a", None, frozenset({"admin"}))
    a, b = (build_caller(admin, AgentMetadata(name)) for name in ("agent-a", "agent-b"))
    wm.propose("test.multi", {"count": 1})
    first = ops.checkout(a, CheckoutFilters())[1]["item"]
    item_id, token_a = first["id"], first["lease_token"]
    ops.heartbeat(a, item_id, token_a)  # in progress: later plain beats touch the lock only
    hash_a = _secret_hash(wm, uuid.UUID(item_id))
    ops.release(a, item_id, token_a)
    token_b = ops.checkout(b, CheckoutFilters())[1]["item"]["lease_token"]
    ops.heartbeat(b, item_id, token_b)
    store = wm.ctx.leases.lock  # the older copy comes back: B's lock gone, A's there
    fence_b = int(token_b.partition(".")[0])
    store.release_lock(
        uuid.UUID(item_id),
        Holder("agent-b", fence_b, _secret_hash(wm, uuid.UUID(item_id))),
        "test.multi",
    )
    assert (
        store.acquire(
            uuid.UUID(item_id),
            "agent-a",
            60_000,
            int(token_a.partition(".")[0]),
            "test.multi",
            hash_a,
        )
        > 0
    )
    with pytest.raises(LeaseConflict):
        ops.heartbeat(a, item_id, token_a)


def _secret_hash(wm: WorkManager, item_id: uuid.UUID) -> str:
    with wm.db.transaction() as s:
        item = s.get(Item, item_id)
        assert item is not None and item.lease_secret_hash is not None
        return item.lease_secret_hash
