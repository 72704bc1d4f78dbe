"""A Redis Cluster with one shard down (``cluster-require-full-coverage no``) still serves
the other shards' items: a checkout skips an item whose lock it cannot reach and leases the
next (a scale-out pass: every checkout tried the queue's head on the dead shard, 503, and
nothing was granted anywhere). The store here is the memory store with a shard "down" for
chosen items (the real cluster's failures are in tests/integration/test_redis_cluster.py);
the rule is ``leases/keyed.Unreached``, on both databases' checkout paths."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DATABASES
from tests.support.types import Simple
from workmanager import Registry
from workmanager.errors import Unavailable


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
def test_a_checkout_skips_items_on_a_shard_that_is_down(make_wm: Any, db: str) -> None:
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
    assert (again := wm.agent.checkout("agent-s")) is not None and again.order_id == first


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
