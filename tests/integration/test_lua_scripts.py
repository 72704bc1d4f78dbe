"""The Lua scripts run by SHA1 (``leases/script.py``) survive a server that lost them.

On a ``redis-server`` of the test's own: the lock store's acquire, extend and release, and
the rate limiter's take, each called once, then ``SCRIPT FLUSH`` (what a restart without
persistence, or an operator, does to the script cache), then called again: each answers as
it did, the script loaded anew.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.own_redis import OwnRedis
from workmanager.lease_tokens import Holder, new_secret
from workmanager.leases.keys import RedisKeys
from workmanager.leases.redis import RedisLeaseStore, connect
from workmanager.ratelimit.base import Bucket
from workmanager.ratelimit.redis import RedisBucketStore

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.kill()


def test_lock_scripts_run_again_after_the_server_flushed_them(own_redis: OwnRedis) -> None:
    client = connect(own_redis.url)
    store = RedisLeaseStore(client, "t:", track_limits=True)
    _, secret_hash = new_secret()

    def acquire(item: str, token: int) -> int:
        return store.acquire(item, "agent-1", 60_000, token, "t.type", 0, 0, secret_hash)

    first = acquire("item-1", 1)
    assert first == 1
    proof = Holder("agent-1", first, secret_hash).store_proof()
    assert store.extend("item-1", "agent-1", proof, 60_000, "t.type") == 1
    assert client.script_exists(store._extend.sha) == [True]

    client.script_flush()
    assert client.script_exists(store._extend.sha) == [False]
    assert store.extend("item-1", "agent-1", proof, 60_000, "t.type") == 1
    assert store.extend("item-1", "agent-1", "0|-", 60_000, "t.type") == -1  # a wrong proof
    assert acquire("item-2", 7) == 7  # the fence is the caller's (the row's token + 1)
    assert acquire("item-2", 6) == 0  # locked under a later fence than the caller's
    assert acquire("item-2", 8) == 8  # a lock of an earlier fence is stale: taken over
    assert store.release("item-1", "agent-1", proof, "t.type") == 1
    assert store.release("item-1", "agent-1", proof, "t.type") == 0  # already gone
    client.close()


def test_holding_counts_the_agents_live_leases_as_acquire_does(own_redis: OwnRedis) -> None:
    """``holding.lua`` (asked before a checkout locks a row) counts what ``acquire.lua``
    compares with the agent's limit: the leases not yet expired, none released."""
    client = connect(own_redis.url)
    store = RedisLeaseStore(client, "t:", track_limits=True)
    _, secret_hash = new_secret()
    assert store.holding("agent-1") == 0
    short = store.acquire("item-1", "agent-1", 300, 1, "t.type", 5, 0, secret_hash)
    store.acquire("item-2", "agent-1", 60_000, 1, "t.type", 5, 0, secret_hash)
    store.acquire("item-3", "agent-2", 60_000, 1, "t.type", 5, 0, secret_hash)
    assert store.holding("agent-1") == 2 and store.holding("agent-2") == 1
    store.release("item-2", "agent-1", Holder("agent-1", 1, secret_hash).store_proof(), "t.type")
    assert store.holding("agent-1") == 1 and short == 1
    time.sleep(0.4)  # item-1's lease expired: not counted, as acquire.lua drops it
    assert store.holding("agent-1") == 0
    client.script_flush()  # run by SHA1 like the others: loaded again
    assert store.holding("agent-2") == 1
    client.close()


def test_the_rate_limit_script_runs_again_after_the_server_flushed_it(
    own_redis: OwnRedis,
) -> None:
    client = connect(own_redis.url)
    buckets = RedisBucketStore(client, RedisKeys("t:"))
    one = [Bucket("k", capacity=1, rate=0.001)]
    assert buckets.take(one) == 0.0
    client.script_flush()
    assert buckets.take(one) > 0  # the bucket is empty: the wait until its next token
    client.close()
