"""What Redis says of itself, on a server of the test's own: out of memory, a read-only
replica, a user without the scripts. They were ``ResponseError``s no rule translated:
HTTP 500 ``internal_error``, CLI tracebacks, the sweep and consumer agents crashing with
tracebacks, and ``/readyz`` "ok" (PING still answers) while no lease could be granted
(a Redis outage pass). They are ``unavailable`` with a hint, and readiness probes a
write and a script."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.support.own_redis import OwnRedis
from tests.support.types import Simple
from workmanager import Registry, WorkManager, readiness
from workmanager.errors import Unavailable
from workmanager.leases.redis import translated

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def refused(wm: WorkManager, says: str, hint: str) -> None:
    """Checkout and readiness both say ``says``; nothing is granted."""
    with pytest.raises(Unavailable) as caught:
        wm.agent.checkout("agent-1")
    assert says in caught.value.message and hint in (caught.value.hint or "")
    checks = readiness.check(wm.ctx)
    assert checks["redis"].startswith("down: ") and says in checks["redis"], checks


def granted(wm: WorkManager) -> None:
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    wm.agent.release(lease)
    assert readiness.check(wm.ctx)["redis"] == "ok"


def test_out_of_memory_and_a_replica_are_unavailable_until_mended(
    make_wm: Callable[..., WorkManager], own_redis: OwnRedis
) -> None:
    wm = make_wm(db="postgres", backend="redis", registry=Registry([Simple()]),
                 redis_url=own_redis.url)  # fmt: skip
    wm.propose("test.simple", {"n": 1})
    server = redis.Redis.from_url(own_redis.url)
    primary = OwnRedis()
    primary.start()
    try:
        server.config_set("maxmemory-policy", "noeviction")
        server.config_set("maxmemory", 1)
        refused(wm, "Redis is out of memory", "maxmemory")
        server.config_set("maxmemory", 0)
        granted(wm)
        server.replicaof("127.0.0.1", primary.port)
        refused(wm, "the server is a read-only replica", "WORK_MANAGER_REDIS_URL")
        server.replicaof("NO", "ONE")
        granted(wm)
    finally:
        server.close()
        primary.kill()


def test_a_user_without_the_scripts_is_told_what_to_allow(
    make_wm: Callable[..., WorkManager], own_redis: OwnRedis
) -> None:
    server = redis.Redis.from_url(own_redis.url)
    server.acl_setuser("limited", enabled=True, passwords=["+secret"], keys=["*"],
                       commands=["+@all", "-evalsha", "-eval"])  # fmt: skip
    server.close()
    limited = own_redis.url.replace("redis://", "redis://limited:secret@", 1)
    wm = make_wm(db="postgres", backend="redis", registry=Registry([Simple()]),
                 redis_url=limited)  # fmt: skip
    wm.propose("test.simple", {"n": 1})
    refused(wm, "the Redis user lacks a command or key", "EVALSHA")


def test_a_snapshot_that_fails_is_unavailable_and_a_calls_own_error_is_not() -> None:
    misconf = redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB ...")
    error = translated(misconf)
    assert "it cannot save its snapshot" in error.message and "Redis log" in (error.hint or "")
    own = redis.exceptions.ResponseError("ERR wrong number of arguments for 'get' command")
    with pytest.raises(redis.exceptions.ResponseError):
        translated(own)  # a bug of the call, raised as it is
