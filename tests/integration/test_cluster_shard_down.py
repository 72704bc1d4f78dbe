"""A Redis Cluster with one shard gone (its master and its replica both down) under
``cluster-require-full-coverage no``: the other shards answer, so the lock store reads
their locks and reads the dead shard's as held for a moment (never reclaimed, as a lost
lock would be), and says the outage only when no key answers. One dead shard failed the
whole batch before, and the sweep reclaimed nothing anywhere (a scale-out pass)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import LocalCluster, cli, started
from workmanager.errors import Unavailable
from workmanager.leases.redis_cluster import (
    UNREACHED_MS,
    RedisClusterLeaseStore,
    connect_cluster,
)

pytestmark = [pytest.mark.redis]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = started(tmp_path_factory.mktemp("shard-down-cluster"))
    try:
        for port in local.ports:
            cli(port, "config", "set", "cluster-require-full-coverage", "no")
        yield local
    finally:
        local.stop()


def shard_of(cluster: LocalCluster, master: int) -> list[int]:
    """The ports of ``master`` and of its replicas (``cluster nodes``)."""
    lines = [line.split() for line in cli(master, "cluster", "nodes").splitlines() if line]
    port = {parts[0]: int(parts[1].split("@")[0].rsplit(":", 1)[1]) for parts in lines}
    [master_id] = [parts[0] for parts in lines if port[parts[0]] == master]
    return [master, *(port[parts[0]] for parts in lines if parts[3] == master_id)]


def test_one_dead_shard_leaves_the_others_read_and_its_locks_held(cluster: LocalCluster) -> None:
    store = RedisClusterLeaseStore(connect_cluster(cluster.all_nodes_url), "wmshard:", False)
    items = [str(uuid.uuid4()) for _ in range(24)]  # spread over the three shards
    for n, item in enumerate(items):
        assert store.acquire(item, "agent-x", 600_000, n + 1, "t", 0, 0, f"h{n}") == n + 1
    store.mark()
    time.sleep(1.5)  # replicated before the failover (it is asynchronous)
    for port in shard_of(cluster, cluster.masters()[0]):  # a master and its replica at once
        os.kill(cluster.pids.pop(port), signal.SIGKILL)

    def one_shard_gone() -> bool:
        try:
            live = cluster.alive_ports()[0]
            info = cli(live, "cluster", "info")
        except Exception:
            return False
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" not in info

    cluster._wait(one_shard_gone, "one shard without a master, the cluster still ok")
    alive = store.alive(items)
    assert set(alive) == set(items)  # none read as gone: none would be reclaimed
    unreached = [i for i in items if alive[i] == UNREACHED_MS]
    answered = [i for i in items if alive[i] > UNREACHED_MS]
    assert unreached and answered, alive  # both kinds in 24 items over three shards
    ends = store.ends(items)
    assert set(ends) == set(items)
    assert isinstance(store.marked(), bool)  # the marker's shard down: no audit, no raise
    dead_only = unreached[:3]
    with pytest.raises(Unavailable):  # every key on the dead shard: the outage itself
        store.alive(dead_only)
