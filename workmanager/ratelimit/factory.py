"""Build the rate limiter: its buckets live on Redis when the lease backend is Redis, on
the database otherwise (drivers imported, and connections made, only on first use)."""

from __future__ import annotations

from ..db.session import Database
from ..settings import Settings
from .base import BucketStore
from .limiter import RateLimiter


def build_limiter(settings: Settings, db: Database) -> RateLimiter:
    return RateLimiter(settings, lambda: build_store(settings, db))


def build_store(settings: Settings, db: Database) -> BucketStore:
    if settings.lease_backend != "redis":
        from .database import DatabaseBucketStore

        return DatabaseBucketStore(db)
    from ..leases.keys import ClusterKeys, RedisKeys
    from .redis import RedisBucketStore

    if settings.redis_cluster:
        from ..leases.redis_cluster import connect_cluster

        return RedisBucketStore(
            connect_cluster(settings.redis_url), ClusterKeys(settings.redis_prefix)
        )
    from ..leases.redis import connect

    return RedisBucketStore(connect(settings.redis_url), RedisKeys(settings.redis_prefix))
