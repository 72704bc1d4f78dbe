"""Redis down (Redis lease backend, real PostgreSQL): refusals that change nothing, and
fences that keep growing once Redis is back, empty.

The test starts its own ``redis-server`` on a free port and kills it; the shared Redis is
never touched. While it is down, checkout, heartbeat (with and without progress) and
submit raise ``Unavailable`` (HTTP 503 ``unavailable``) and leave every row and event as
they were. When it comes back empty (a restart without persistence), the old lease is
expired (SPEC §4.5), the sweep's audit requeues its item, and the next grant's fence is
above the old one: the row's token is the floor, not Redis's lost counter.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.own_redis import OwnRedis
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, Order, Provenance
from workmanager.errors import LeaseConflict, LeaseExpired, Unavailable
from workmanager.types import Lease

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def snapshot(wm: WorkManager) -> dict[str, Any]:
    """Every item and order row, and the number of events and provenance rows."""
    with wm.db.transaction() as s:
        items = {i.id: _columns(i) for i in s.scalars(select(Item))}
        orders = {o.id: _columns(o) for o in s.scalars(select(Order))}
        events = s.scalar(select(func.count()).select_from(Event))
        provenance = s.scalar(select(func.count()).select_from(Provenance))
    return {"items": items, "orders": orders, "events": events, "provenance": provenance}


def _columns(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__mapper__.column_attrs}


def row_fence(wm: WorkManager, item_id: uuid.UUID) -> int:
    """The fence on the item's row (its ``lease_token`` column): comparable whatever shape
    the token handed to the agent has."""
    with wm.db.transaction() as s:
        item = s.get(Item, item_id)
        assert item is not None
        return int(item.lease_token)


def test_redis_down_refuses_and_changes_nothing_then_fences_keep_growing(
    make_wm: Callable[..., WorkManager], own_redis: OwnRedis
) -> None:
    wm = make_wm(
        db="postgres",
        backend="redis",
        registry=Registry([Simple()]),
        redis_url=own_redis.url,
        retry_backoff_seconds=0,
        retry_jitter_seconds=0,
    )
    held_order = wm.propose("test.simple", {"n": 1})
    free_order = wm.propose("test.simple", {"n": 2})
    first = wm.agent.checkout("agent-a", order_id=held_order)
    assert first is not None
    wm.agent.release(first)  # a second grant: the fence is past what a fresh counter gives
    lease = wm.agent.checkout("agent-a", order_id=held_order)
    assert lease is not None and lease.item_id == first.item_id
    wm.agent.heartbeat(lease, progress=0.25)
    fence_before = row_fence(wm, lease.item_id)
    assert fence_before >= 2

    own_redis.kill()
    before = snapshot(wm)
    calls: dict[str, Callable[[], object]] = {
        "checkout": lambda: wm.agent.checkout("agent-b"),
        "scoped checkout": lambda: wm.agent.checkout("agent-b", order_id=free_order),
        "heartbeat": lambda: wm.agent.heartbeat(lease),
        "heartbeat with progress": lambda: wm.agent.heartbeat(lease, progress=0.5),
        "submit": lambda: wm.agent.submit(lease, {"answer": 1}),
    }
    for name, call in calls.items():
        with pytest.raises(Unavailable) as refused:
            call()
        assert (refused.value.code, refused.value.http_status) == ("unavailable", 503), name
        assert snapshot(wm) == before, f"{name} changed a row while Redis was down"

    own_redis.start()  # the same port, empty: every key and counter is gone
    with pytest.raises((LeaseExpired, LeaseConflict)):
        wm.agent.heartbeat(lease)  # no Redis lock: the lease is over (SPEC §4.5)
    result = wm.sweeper.sweep()
    assert result.requeued == {"test.simple": [lease.item_id]}
    regrant = wm.agent.checkout("agent-b", order_id=held_order)
    assert regrant is not None and regrant.item_id == lease.item_id
    fence_after = row_fence(wm, lease.item_id)
    assert fence_after > fence_before, (fence_before, fence_after)
    assert _fence(regrant) == fence_after > _fence(lease)
    with pytest.raises((LeaseExpired, LeaseConflict)):
        wm.agent.submit(lease, {"answer": 1})  # the zombie stays fenced out
    wm.agent.submit(regrant, {"answer": 1})
    other = wm.agent.checkout("agent-b", order_id=free_order)
    assert other is not None and row_fence(wm, other.item_id) >= 1


def _fence(lease: Lease) -> int:
    """The lease's fence: ``Lease.fence`` where tokens are ``<fence>.<secret>``, else the
    integer token itself."""
    fence = getattr(lease, "fence", None)
    return int(fence if fence is not None else lease.token)
