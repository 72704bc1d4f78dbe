"""kombu's Redis transport, with a channel that closes cleanly after its connection did.

When Redis restarts, Celery's consumer releases its connection; kombu closes the channel,
whose close puts the unacknowledged messages back, and for that builds a connection pool
from the connection's settings, which kombu had already cleared. The ``AttributeError``
("'NoneType' object has no attribute 'hostname'") was not one of the errors kombu ignores
while closing, so the worker or agent exited ("Unrecoverable error"; 3 of ~14 Redis
restarts in an outage pass). Here the missing settings are a connection error, which the
close ignores: the messages stay in Redis's unacked set, and kombu's visibility timeout
delivers them again (``WORK_MANAGER_BROKER_VISIBILITY_TIMEOUT_SECONDS``).
And a server that changes its role under a worker (a failover: the master made a
replica) answers the worker's blocked read ``UNBLOCKED``, then every read ``READONLY``:
kombu took them for a bad command and the worker exited for good. They are connection
errors here: the worker reconnects, with Celery's backoff, until a master answers. So is
a write refused by a server out of memory.

Installed under kombu's ``redis`` and ``rediss`` aliases by :mod:`tasks.transports`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError


def _role_changed(exc: ResponseError) -> bool:
    return isinstance(exc, ReadOnlyError) or str(exc).startswith("UNBLOCKED")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except ResponseError as exc:
            if not _role_changed(exc):
                raise
            self.client.connection.disconnect()
            raise RedisConnectionError(f"the broker changed its role: {exc}") from exc

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
    # a write refused by a replica (restoring unacknowledged messages on reconnecting, a
    # publish) is the server's role, not a bad command: reconnect until a master answers;
    # one refused by a server out of memory (``maxmemory``, ``noeviction``) is its state
    # too: the worker exited ("Unrecoverable error: OutOfMemoryError"), it waits instead
    connection_errors = (
        *kombu_redis.Transport.connection_errors,
        ReadOnlyError,
        OutOfMemoryError,
    )
