"""The Redis broker's channel closes cleanly after its connection did (``tasks/
redis_transport.py``): a worker or agent exited on a Redis restart ("Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')", 3 of ~14 restarts in an
outage pass) because kombu's close, putting unacknowledged messages back, built a pool
from the connection settings kombu had already cleared."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection

import tasks  # noqa: F401  (installs the project's transports under kombu's aliases)

from ..conftest import REDIS_URL

pytestmark = pytest.mark.redis


def test_closing_a_channel_after_its_connection_keeps_the_unacked_message(
    redis_url: str,
) -> None:
    prefix = f"wmtest:{uuid.uuid4().hex[:8]}:"
    conn = Connection(redis_url, transport_options={"global_keyprefix": prefix})
    client = redis.Redis.from_url(REDIS_URL)
    try:
        channel = conn.default_channel
        assert type(channel).__module__ == "tasks.redis_transport"
        queue = conn.SimpleQueue("wm.close")
        queue.put({"n": 1})
        queue.get(timeout=5)  # held, unacknowledged
        conn.transport.client = None  # what kombu's close of the transport left behind
        conn.maybe_close_channel(channel)  # raised AttributeError: the worker exited
        # nothing was put back, nothing lost: the visibility timeout delivers it again
        assert client.hlen(f"{prefix}unacked") == 1
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def test_a_broker_made_a_replica_under_a_blocked_read_is_a_connection_error() -> None:
    """A failover made the master a replica while a worker waited in BRPOP: Redis
    answered ``UNBLOCKED``, kombu took it for a bad command, and the worker and the agent
    exited ("Unrecoverable error"; a Redis outage pass). It is a connection error: Celery
    reconnects until a master answers."""
    from tests.support.own_redis import OwnRedis

    broker, primary = OwnRedis(), OwnRedis()
    broker.start()
    primary.start()
    conn = Connection(broker.url)
    admin = redis.Redis.from_url(broker.url)
    try:
        conn.SimpleQueue("wm.role").put({"n": 1})
        conn.SimpleQueue("wm.role").get(timeout=5).ack()
        consumer = conn.SimpleQueue("wm.role")
        timer = threading.Timer(0.5, lambda: admin.replicaof("127.0.0.1", primary.port))
        timer.start()
        with pytest.raises(conn.connection_errors) as raised:
            consumer.get(timeout=10)  # blocked in BRPOP when the role changes
        timer.join()
        assert "the broker changed its role" in str(raised.value)
        admin.replicaof("NO", "ONE")
        conn.close()
        again = Connection(broker.url)  # what Celery's reconnect does
        try:
            again.SimpleQueue("wm.role").put({"n": 2})
            assert again.SimpleQueue("wm.role").get(timeout=5).payload == {"n": 2}
        finally:
            again.close()
    finally:
        admin.close()
        broker.kill()
        primary.kill()


def test_a_broker_out_of_memory_is_waited_for_and_not_ready(make_wm: Any) -> None:
    """Found by an adversarial pass: a Redis broker at ``maxmemory`` with ``noeviction``
    refused kombu's write on reconnecting; the worker and the agent exited
    ("Unrecoverable error: OutOfMemoryError"), and ``/readyz`` said the broker was fine
    (it connected) while every message sent was refused. The refusal is a connection
    error (Celery waits and reconnects), and readiness writes to find it."""
    from tests.support.own_redis import OwnRedis
    from workmanager import readiness

    broker = OwnRedis()
    broker.start()
    admin = redis.Redis.from_url(broker.url)
    conn = Connection(broker.url)
    try:
        wm = make_wm(db="sqlite", broker_url=broker.url)
        assert readiness.check(wm.ctx)["broker"] == "ok"
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        with pytest.raises(conn.connection_errors) as raised:
            conn.SimpleQueue("wm.oom").put({"n": 1})
        assert "maxmemory" in str(raised.value)
        checks = readiness.check(wm.ctx)
        assert checks["broker"].startswith("down"), checks
        admin.config_set("maxmemory", 0)
        assert readiness.check(wm.ctx)["broker"] == "ok"
    finally:
        conn.close()
        admin.close()
        broker.kill()
