"""Starting on a Redis Cluster whose startup node is down (a real local cluster of this
module's own: ``tests/support/redis_cluster.py``).

``WORK_MANAGER_REDIS_URL`` may list several nodes (``redis://h1:p1,h2:p2/0``): a process
starts while any listed node answers, and when none does it gets the project's
``Unavailable`` (the console's one line ``error [unavailable]: …``), not redis-py's
exception and its traceback. The module's cluster has lost the node its first port names
(a master: ``redis-cli --cluster create`` makes masters of the first three), and a
replica has taken its slots over, before any test runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_cluster import LocalCluster, cli, free_ports, started
from tests.support.types import Multi
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.errors import Unavailable
from workmanager.leases.base import LeaseBackend
from workmanager.leases.factory import build_lease_backend
from workmanager.leases.keyed import StoreLeaseBackend
from workmanager.leases.redis_cluster import RedisClusterLeaseStore

pytestmark = [pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


def node_url(*ports: int) -> str:
    return "redis://" + ",".join(f"127.0.0.1:{port}" for port in ports) + "/0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of this module's own whose first node was SIGKILLed and failed over."""
    local = started(tmp_path_factory.mktemp("startup-cluster"))
    try:
        dead = local.ports[0]
        os.kill(local.pids.pop(dead), signal.SIGKILL)

        def flagged_failed(port: int) -> bool:  # "fail", not just suspected ("fail?")
            for line in cli(port, "cluster", "nodes").splitlines():
                parts = line.split()
                if len(parts) > 2 and f":{dead}@" in parts[1]:
                    return "fail" in parts[2].split(",")
            return False

        def failed_over() -> bool:
            # every live node knows it failed, and three masters with slots serve without it
            if not all(flagged_failed(port) for port in local.alive_ports()):
                return False
            masters = local.masters()
            return dead not in masters and len(masters) == 3

        local._wait(failed_over, f"the cluster to fail over from {dead}")
        local.wait_ok()
    except BaseException:
        local.stop()
        raise
    yield local
    local.stop()


def cluster_settings(url: str, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "lease_backend": "redis",
        "redis_cluster": True,
        "redis_url": url,
        "redis_prefix": f"wmstartup:{uuid.uuid4().hex[:8]}:",
        "metrics_driver": "null",
        **overrides,
    }
    return Settings(**fields)


def cluster_store(backend: LeaseBackend) -> RedisClusterLeaseStore:
    assert isinstance(backend, StoreLeaseBackend)
    assert isinstance(backend.store, RedisClusterLeaseStore)
    return backend.store


def test_the_first_listed_node_down_the_next_one_starts_the_process(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The URL lists the dead node first, a live one second: the WorkManager starts on
    the cluster, and a lease is granted, heartbeated and released through it."""
    dead, live = cluster.ports[0], cluster.ports[1]
    assert dead not in cluster.alive_ports() and live in cluster.alive_ports()
    url = node_url(dead, live)
    database_url = f"sqlite:///{tmp_path}/wm.db"
    database = Database(database_url)
    database.create_all()
    wm = WorkManager(
        cluster_settings(url, database_url=database_url, max_leases_per_agent=2),
        registry=Registry([Multi()]),
        database=database,
    )
    try:
        store = cluster_store(wm.ctx.leases)
        order_id = wm.propose("test.multi", {"count": 1})
        lease = wm.agent.checkout("a", order_id=order_id)
        assert lease is not None
        key = store.cluster_keys.item(str(lease.item_id))
        assert store.client.get(key) is not None  # the lock is on the cluster
        lease = wm.agent.heartbeat(lease)
        outcome = wm.agent.release(lease)
        assert outcome.item["state"] == "queued"
        assert store.client.get(key) is None
        assert wm.agent.checkout("b", order_id=order_id) is not None  # free for the next
    finally:
        wm.close()


def test_the_backend_acquires_and_releases_through_a_list_of_nodes(
    cluster: LocalCluster,
) -> None:
    """The lease backend alone (as ``build_lease_backend`` builds it for every process):
    its store takes and gives back an item's lock, the limit's places too."""
    url = node_url(cluster.ports[0], cluster.ports[1])
    backend = build_lease_backend(cluster_settings(url, max_leases_per_agent=1))
    store = cluster_store(backend)
    item = str(uuid.uuid4())
    granted = store.acquire(item, "agent-a", 60_000, 1, "test.multi", 1, 0, "hash")
    assert granted > 0
    assert store.acquire(str(uuid.uuid4()), "agent-a", 60_000, 1, "test.multi", 1, 0, "h") == -1
    assert store.release(item, "agent-a", "1|hash", "test.multi") == 1
    assert store.client.get(store.cluster_keys.item(item)) is None
    assert store.client.zcard(store.cluster_keys.agent("agent-a")) == 0  # its place given back


def test_the_existing_spelling_of_one_live_node_still_works(cluster: LocalCluster) -> None:
    """``redis://host:port/0``, one node (a live one), as before the list."""
    backend = build_lease_backend(cluster_settings(node_url(cluster.ports[1])))
    store = cluster_store(backend)
    item = str(uuid.uuid4())
    assert store.acquire(item, "agent-a", 60_000, 1, "test.multi", 0, 0, "hash") > 0
    assert store.release(item, "agent-a", "1|hash", "test.multi") == 1


def dead_urls() -> list[Any]:
    return [
        pytest.param(lambda c: c.url, id="the-one-node-of-the-url"),  # as configured so far
        pytest.param(lambda c: node_url(c.ports[0], free_ports(1)[0]), id="every-listed-node"),
    ]


@pytest.mark.parametrize("url_of", dead_urls())
def test_no_listed_node_answers_is_unavailable(cluster: LocalCluster, url_of: Any) -> None:
    """Every listed node down (the rest of the cluster up, but not listed): building the
    backend is the project's Unavailable (HTTP 503, the console's one line), redis-py's
    exception only its cause."""
    url = url_of(cluster)
    with pytest.raises(Unavailable) as raised:
        build_lease_backend(cluster_settings(url))
    assert not isinstance(raised.value, redis.exceptions.RedisError)
    assert isinstance(raised.value.__cause__, redis.exceptions.RedisClusterException)
    assert f"127.0.0.1:{cluster.ports[0]}" in raised.value.message
    assert raised.value.hint and "host1:port1,host2:port2" in raised.value.hint


def test_the_console_says_so_in_one_line(cluster: LocalCluster, tmp_path: Path) -> None:
    """``workmanager orders list`` with the URL's one node down: ``error [unavailable]``,
    exit 1, no traceback (was redis-py's RedisClusterUnreachableError traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env |= {
        "WORK_MANAGER_DATABASE_URL": f"sqlite:///{tmp_path}/wm.db",
        "WORK_MANAGER_LEASE_BACKEND": "redis",
        "WORK_MANAGER_REDIS_CLUSTER": "true",
        "WORK_MANAGER_REDIS_URL": cluster.url,
    }
    done = subprocess.run(
        [sys.executable, "-c", "from workmanager.cli import main\nmain(['orders', 'list'])\n"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("error [unavailable]: redis unavailable: Redis Cluster"), first


def test_readiness_probes_the_cluster_through_its_listed_nodes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """``/readyz`` and ``ops check`` ask the cluster as the lease store does: ready while
    a listed node answers (the dead one first), down when none does (was a plain Redis
    client on the URL, which cannot read a list of nodes and reported ``redis`` down)."""
    from workmanager import readiness

    database_url = f"sqlite:///{tmp_path}/wm.db"
    database = Database(database_url)
    database.create_all()
    listed = cluster_settings(node_url(cluster.ports[0], cluster.ports[1]))
    wm = WorkManager(
        dataclasses.replace(
            listed, database_url=database_url, broker_url=f"sqla+sqlite:///{tmp_path}/b.db"
        ),
        registry=Registry([Multi()]),
        database=database,
    )
    try:
        assert readiness.check(wm.ctx)["redis"] == "ok"
    finally:
        wm.close()
    with pytest.raises(Unavailable):
        readiness._redis(cluster_settings(cluster.url))  # its one node is the dead one


def test_a_cluster_node_without_cluster_mode_is_said_with_the_fix(cluster: LocalCluster) -> None:
    """WORK_MANAGER_REDIS_CLUSTER left false against a cluster node: /readyz and ops check
    said ok while every checkout was a 500 (ClusterCrossSlotError). Readiness is down with
    the fix, and the lease calls' error is unavailable with the same hint."""
    from workmanager import readiness
    from workmanager.leases.redis import translated

    live = cluster.alive_ports()[0]
    plain = cluster_settings(f"redis://127.0.0.1:{live}/0", redis_cluster=False)
    with pytest.raises(Unavailable) as refused:
        readiness._redis(plain)
    assert refused.value.hint and "WORK_MANAGER_REDIS_CLUSTER=true" in refused.value.hint
    client = redis.Redis(port=live)
    try:
        with pytest.raises(redis.exceptions.ResponseError) as crossed:
            client.eval("return 1", 2, "a", "b")  # two keys of two slots
    finally:
        client.close()
    said = translated(crossed.value)
    assert said.code == "unavailable" and "WORK_MANAGER_REDIS_CLUSTER=true" in (said.hint or "")


def test_readiness_is_down_while_a_master_has_no_one_to_serve_its_slots(
    cluster: LocalCluster,
) -> None:
    """A node answering the ping was "ok" while a master was down and its slots unserved
    (every lease call on them 503). Readiness asks for the cluster's state. Last in this
    module: the master killed here has no replica left (its own was killed above)."""
    from workmanager import readiness

    (lonely,) = [p for p in cluster.masters() if _replicas(cluster, p) == 0]
    os.kill(cluster.pids.pop(lonely), signal.SIGKILL)
    url = node_url(*[p for p in cluster.alive_ports() if p != lonely][:2])

    def failed() -> bool:
        try:
            readiness._redis(cluster_settings(url))
        except Unavailable as exc:
            return "state is 'fail'" in exc.message
        return False

    cluster._wait(failed, "readiness to see the cluster's state fail", timeout=30)
    # A cluster told not to require full coverage (a common production setting) says
    # "ok" while those slots have no master: readiness counts the slots served.
    for port in cluster.alive_ports():
        cli(port, "config", "set", "cluster-require-full-coverage", "no")

    def slots_missing() -> bool:
        try:
            readiness._redis(cluster_settings(url))
        except Unavailable as exc:
            return exc.message.startswith("only ") and "of the Redis Cluster's 16384 slots" in (
                exc.message
            )
        return False

    cluster._wait(slots_missing, "readiness to count the slots served", timeout=30)


def _replicas(cluster: LocalCluster, master: int) -> int:
    lines = [
        line.split() for line in cli(cluster.alive_ports()[0], "cluster", "nodes").splitlines()
    ]
    ids = {parts[0]: int(parts[1].split("@")[0].rsplit(":", 1)[1]) for parts in lines}
    return sum(
        1
        for parts in lines
        if "slave" in parts[2] and "fail" not in parts[2] and ids.get(parts[3]) == master
    )


@pytest.mark.redis
def test_a_single_redis_taken_for_a_cluster_is_said_with_the_fix(redis_url: str) -> None:
    """``WORK_MANAGER_REDIS_CLUSTER=true`` against a single Redis hinted "start the
    cluster, or list more of its nodes": the fix is the setting."""
    url = redis_url.rsplit("/", 1)[0] + "/0"
    with pytest.raises(Unavailable) as raised:
        build_lease_backend(cluster_settings(url))
    assert raised.value.hint and "WORK_MANAGER_REDIS_CLUSTER" in raised.value.hint
