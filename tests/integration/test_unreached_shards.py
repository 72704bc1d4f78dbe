"""A Redis Cluster with one shard down (``cluster-require-full-coverage no``) still serves
the other shards' items: a checkout skips an item whose lock it cannot reach and leases the
next (a scale-out pass: every checkout tried the queue's head on the dead shard, 503, and
nothing was granted anywhere). The store here is the memory store with a shard "down" for
chosen items (the real cluster's failures are in tests/integration/test_redis_cluster.py);
the rule is ``leases/unreached.py``, on both databases' checkout paths."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import DATABASES
from tests.support.types import Simple
from workmanager import Registry
from workmanager.errors import Unavailable
from workmanager.leases.unreached import Lately


class Shards:
    """The lease store, with the items in ``down`` on a shard that does not answer."""

    def __init__(self, store: Any, sharded: bool) -> None:
        self.store, self.sharded, self.down = store, sharded, set()

    def acquire(self, item_id: str, *args: Any) -> int:
        if str(item_id) in self.down:
            raise Unavailable("redis unavailable: Error 111 connecting to 127.0.0.1:7065")
        return int(self.store.acquire(item_id, *args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize("db", DATABASES)
def test_a_checkout_skips_items_on_a_shard_that_is_down(
    make_wm: Any, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Lately, "SECONDS", 0.3)  # how long an unreachable item is left out
    wm = make_wm(db=db, backend="memory", registry=Registry([Simple()]))
    backend = wm.ctx.leases
    shards = Shards(backend.store, sharded=True)
    backend.store = shards
    first = wm.propose("test.simple", {"n": 1}, priority=9)  # the queue's head
    second = wm.propose("test.simple", {"n": 2}, priority=5)
    shards.down = {i["id"] for i in wm.queries.order(first)["items"]}
    lease = wm.agent.checkout("agent-s")
    assert lease is not None and lease.order_id == second
    assert wm.queries.order(first)["items"][0]["state"] == "queued"  # nothing written
    with pytest.raises(Unavailable):  # what is left is on the dead shard: it says so
        wm.agent.checkout("agent-s")
    shards.down = set()
    time.sleep(0.4)  # remembered no longer: asked again, and it answers
    assert (again := wm.agent.checkout("agent-s")) is not None and again.order_id == first


@pytest.mark.parametrize("db", DATABASES)
def test_a_dead_shard_s_items_at_the_head_never_stall_the_others(make_wm: Any, db: str) -> None:
    """A review pass: each checkout skipped at most three unreachable items, so once four
    sat at the queue's head (the live ones leased, the dead shard's left), every checkout
    was 503 again. The lock remembers them for a moment, and checkouts leave them out."""
    wm = make_wm(db=db, backend="memory", registry=Registry([Simple()]))
    backend = wm.ctx.leases
    shards = Shards(backend.store, sharded=True)
    backend.store = shards
    orders = [wm.propose("test.simple", {"n": n}, priority=30 - n) for n in range(12)]
    dead = orders[::3]  # every third, the first (the head) among them
    shards.down = {wm.queries.order(o)["items"][0]["id"] for o in dead}
    leased = []
    for _ in range(8):
        lease = wm.agent.checkout("agent-s")
        assert lease is not None
        leased.append(lease.order_id)
    assert sorted(leased) == sorted(set(orders) - set(dead))
    with pytest.raises(Unavailable):  # what is left is on the dead shard
        wm.agent.checkout("agent-s")


@pytest.mark.parametrize("db", DATABASES)
def test_a_store_of_one_server_says_the_outage_at_once(make_wm: Any, db: str) -> None:
    wm = make_wm(db=db, backend="memory", registry=Registry([Simple()]))
    backend = wm.ctx.leases
    shards = Shards(backend.store, sharded=False)
    backend.store = shards
    first = wm.propose("test.simple", {"n": 1}, priority=9)
    wm.propose("test.simple", {"n": 2}, priority=5)
    shards.down = {i["id"] for i in wm.queries.order(first)["items"]}
    with pytest.raises(Unavailable):
        wm.agent.checkout("agent-s")
