"""``WorkManager.close()`` lets go of everything the object opened, so a host that builds
and closes WorkManagers (per test, per tenant, per reload) does not leak sockets."""

from __future__ import annotations

import os

import pytest

from tests.conftest import truncate_all
from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.ratelimit.rate import Rate


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


@pytest.mark.postgres
@pytest.mark.redis
def test_close_releases_redis_and_statsd_sockets(pg_url: str, redis_url: str) -> None:
    database = Database(pg_url)
    truncate_all(database)  # the deployment record too: an earlier test's backend is not this
    database.dispose()
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


def test_metrics_after_close_are_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    """A review pass: after ``close()`` the StatsD client stayed set with its socket gone,
    so every later metric logged a traceback and was dropped; the Redis clients and the
    database pools reconnect on use. It is made again by the next metric."""
    import socket

    from workmanager.metrics.statsd import StatsdDriver

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        driver = StatsdDriver("127.0.0.1", server.getsockname()[1])
        driver.increment("before")
        assert server.recv(1024) == b"before:1|c"
        driver.close()
        driver.increment("after")
        assert server.recv(1024) == b"after:1|c"
        driver.close()
    assert "Traceback" not in caplog.text
