"""kombu's Redis transport, with a channel that closes cleanly after its connection did.

When Redis restarts, Celery's consumer releases its connection; kombu closes the channel,
whose close puts the unacknowledged messages back, and for that builds a connection pool
from the connection's settings, which kombu had already cleared. The ``AttributeError``
("'NoneType' object has no attribute 'hostname'") was not one of the errors kombu ignores
while closing, so the worker or agent exited ("Unrecoverable error"; 3 of ~14 Redis
restarts in an outage pass). Here the missing settings are a connection error, which the
close ignores: the messages stay in Redis's unacked set, and kombu's visibility timeout
delivers them again (``WORK_MANAGER_BROKER_VISIBILITY_TIMEOUT_SECONDS``).
Installed under kombu's ``redis`` and ``rediss`` aliases by :mod:`tasks.transports`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
