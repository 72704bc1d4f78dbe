"""``WorkManager.close()`` lets go of everything the object opened, so a host that builds
and closes WorkManagers (per test, per tenant, per reload) does not leak sockets."""

from __future__ import annotations

import os

import pytest

from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.ratelimit.rate import Rate

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def used(wm: WorkManager) -> None:
    """Every connection made: the database (both pools), the Redis lock store, the Redis
    rate-limit buckets, and both StatsD sockets (a tagged line has its own)."""
    wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    wm.agent.release(wm.agent.heartbeat(lease))
    wm.metrics.increment("closing", tenant="t1")


def test_close_releases_redis_and_statsd_sockets(pg_url: str, redis_url: str) -> None:
    settings = Settings(
        database_url=pg_url,
        lease_backend="redis",
        redis_url=redis_url,
        redis_prefix="wmtest:close:",
        metrics_driver="statsd",
        statsd_tag_style="dogstatsd",
        rate_limit_checkout_per_agent=Rate(1000, 1),
    )
    wm = WorkManager(settings, registry=Registry([Simple()]))
    used(wm)  # the first use loads modules and caches that stay: not counted
    wm.close()
    before = open_fds()
    for _ in range(3):
        wm = WorkManager(settings, registry=Registry([Simple()]))
        used(wm)
        assert open_fds() > before
        wm.close()
        assert open_fds() == before
