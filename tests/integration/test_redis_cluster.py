"""The Redis Cluster lease store's own promises, on a real local cluster (the session's
``redis_cluster``): each script touches one slot, the fence is the row's and keeps rising
across a flush, and racing grants never exceed a lease limit. The lease contract
(``tests/contract``), the 8-process stress and the failover run
(``tests/integration/test_lease_stress.py``) run on the cluster as well."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from redis.cluster import key_slot
from sqlalchemy import func, select

from tests.support.types import Multi
from workmanager import Registry
from workmanager.db.models import Item
from workmanager.leases.keys import ClusterKeys
from workmanager.leases.redis_cluster import RedisClusterLeaseStore

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def cluster_wm(make_wm: Any, **overrides: Any) -> Any:
    return make_wm(
        db="postgres",
        backend="redis-cluster",
        registry=Registry([Multi()]),
        retry_backoff_seconds=0,
        retry_jitter_seconds=0,
        **overrides,
    )


def test_each_item_lock_and_each_limit_have_a_slot_of_their_own() -> None:
    keys = ClusterKeys("work:lease:")
    items = {key_slot(keys.item(f"item-{n}").encode()) for n in range(50)}
    assert len(items) > 10  # items spread over the slots, not all on one shard
    assert keys.agent("a-1") == "work:lease:agent:{a-1}"
    assert keys.order_type("t") == "work:lease:type:{t}"


def test_the_fence_is_per_item_and_rises_across_a_flush(make_wm, redis_cluster) -> None:
    wm = cluster_wm(make_wm)
    store = wm.ctx.leases.store
    assert isinstance(store, RedisClusterLeaseStore)
    order_id = wm.propose("test.multi", {"count": 2})
    first = wm.agent.checkout("a", order_id=order_id)
    second = wm.agent.checkout("b", order_id=order_id)
    assert first is not None and second is not None
    assert first.fence == second.fence == 1  # each item counts its own grants, on its row
    wm.agent.release(first)
    for port in redis_cluster.masters():  # the whole cluster loses its data
        store.client.get_node("127.0.0.1", port).redis_connection.flushall()
    again = wm.agent.checkout("c", order_id=order_id)
    assert again is not None and again.item_id == first.item_id
    assert again.fence == 2  # the row's token + 1: Redis keeps no count to lose


def test_racing_grants_never_exceed_the_agent_limit(make_wm) -> None:
    wm = cluster_wm(make_wm, max_leases_per_agent=3)
    order_id = wm.propose("test.multi", {"count": 12})
    barrier = threading.Barrier(12)
    granted: list[Any] = []

    def grab() -> None:
        barrier.wait()
        lease = wm.agent.checkout("greedy")
        if lease is not None:
            granted.append(lease)

    threads = [threading.Thread(target=grab) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(granted) <= 3
    # A refusal while another attempt held a place it then gave back is allowed (docs):
    # once the race is over, the agent fills its limit exactly.
    while wm.agent.checkout("greedy", order_id=order_id) is not None:
        pass
    with wm.db.transaction() as s:
        held = s.scalar(
            select(func.count()).where(Item.leased_by_agent_id == "greedy", Item.state == "leased")
        )
    assert held == 3
    other = wm.agent.checkout("other", order_id=order_id)
    assert other is not None  # the limit is the agent's, not everyone's


def test_the_scripts_run_again_after_every_node_lost_them(make_wm, redis_cluster) -> None:
    """``leases/script.py`` runs each script by its SHA1; a shard that lost it (a restart,
    ``SCRIPT FLUSH``, a promoted replica) gets it loaded again: the lock, the limit's
    reservation and touch, the extend and the release all still answer."""
    wm = cluster_wm(make_wm, max_leases_per_agent=5)  # the limit's scripts run too
    store = wm.ctx.leases.store
    assert isinstance(store, RedisClusterLeaseStore)

    def flush_scripts() -> None:
        for port in redis_cluster.masters():
            store.client.get_node("127.0.0.1", port).redis_connection.script_flush()

    order_id = wm.propose("test.multi", {"count": 1})
    flush_scripts()
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    lease = wm.agent.heartbeat(lease)  # the first: the row and the lock
    flush_scripts()
    lease = wm.agent.heartbeat(lease)  # lock-only
    flush_scripts()
    outcome = wm.agent.release(lease)
    assert outcome.item["state"] == "queued"
    assert store.client.get(store.cluster_keys.item(str(lease.item_id))) is None


def test_forgetting_the_locks_reaches_every_node(make_wm, redis_cluster) -> None:
    """``db upgrade --record-settings`` on a switch to Redis leases (``forget_locks``):
    the keys are in slots on every primary; each is found and deleted."""
    wm = cluster_wm(make_wm, max_leases_per_agent=10)
    order_id = wm.propose("test.multi", {"count": 6})
    leases = [wm.agent.checkout("a", order_id=order_id) for _ in range(6)]
    wm.ctx.leases.audited()  # the marker, which goes too
    assert all(lease is not None for lease in leases)
    assert wm.ctx.leases.forget_locks() >= 6 + 1
    assert wm.ctx.leases.lock.alive([lease.item_id for lease in leases]) == {}
    assert wm.ctx.leases.lost_track()
