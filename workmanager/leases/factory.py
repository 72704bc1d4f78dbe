"""Build the lease backend named by ``WORK_MANAGER_LEASE_BACKEND`` (drivers imported lazily)."""

from __future__ import annotations

from ..settings import Settings
from .base import LeaseBackend


def build_lease_backend(settings: Settings) -> LeaseBackend:
    limits = {
        "max_per_agent": settings.max_leases_per_agent,
        "max_per_type": settings.max_leases_per_type,
        "max_per_tenant": settings.max_leases_per_tenant,
    }
    if settings.lease_backend == "database":
        from .database import DatabaseLeaseBackend

        return DatabaseLeaseBackend(**limits)
    from .keyed import StoreLeaseBackend

    if settings.lease_backend == "memory":
        from .memory import MemoryLeaseStore

        return StoreLeaseBackend(MemoryLeaseStore(), "memory", **limits)
    from .redis import RedisLeaseStore, connect

    limited = settings.max_leases_per_agent is not None or settings.max_leases_per_type is not None
    if settings.redis_cluster:
        from .redis_cluster import RedisClusterLeaseStore, connect_cluster

        store: RedisLeaseStore = RedisClusterLeaseStore(
            connect_cluster(settings.redis_url), settings.redis_prefix, limited
        )
    else:
        store = RedisLeaseStore(connect(settings.redis_url), settings.redis_prefix, limited)
    return StoreLeaseBackend(store, "redis", **limits)
