"""The ``redis`` lock store on Redis Cluster (``WORK_MANAGER_REDIS_CLUSTER=true``).

A Lua script on a cluster may touch the keys of one slot only, so the keys are hash-tagged
(``keys.ClusterKeys``): ``cluster_acquire.lua`` touches the item's lock alone. The fence
is the item row's last token + 1, chosen by the caller as on a single Redis: nothing in
Redis counts it, so a flush or a failover loses none.

The per-agent and per-type lease limits live in zsets of their own slots, so they cannot
change in the lock's script. They are kept by **reservation before the lock**: one script
per zset drops expired members, refuses when the zset is full, else adds a member for this
grant attempt (``<item_id>|<secret hash>``); only then is the item locked, and a refused
lock takes its reservations back. So a limit is never exceeded by racing grants (each
place is taken atomically in its own slot before the lock exists), but it is weaker than
one script in two ways, both on the side of refusing: a checkout can be refused while a
racing attempt holds a reservation it is about to give back, and a process that dies
between the reservation and the lock (or before a failed lock's reservations are given
back) leaves a place taken until it expires, one lease TTL later. Heartbeats and releases
move or delete the zset members after the lock changed, in separate steps as well.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import Unavailable
from ..importing import import_extra
from .keys import ClusterKeys
from .redis import RedisLeaseStore, _script
from .script import Script

log = logging.getLogger("workmanager.leases")


def connect_cluster(url: str) -> Any:
    """A ``RedisCluster`` client from the URL of any node (it discovers the others)."""
    cluster = import_extra(
        "redis.cluster", "WORK_MANAGER_REDIS_CLUSTER=true needs the redis package", "redis"
    )
    return cluster.RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=5)


class RedisClusterLeaseStore(RedisLeaseStore):
    """:class:`RedisLeaseStore` with one slot per script (see the module's docstring)."""

    def __init__(self, client: Any, prefix: str = "work:lease:", track_limits: bool = True) -> None:
        import redis

        super().__init__(client, prefix, track_limits)
        self.cluster_keys = ClusterKeys(prefix)
        self.keys = self.cluster_keys  # check, alive, marked and mark use item and epoch
        self._errors = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterError,
            redis.exceptions.TryAgainError,
            redis.exceptions.RedisClusterException,
        )
        self._lock = Script(client, _script("cluster_acquire"))
        self._reserve = Script(client, _script("cluster_reserve"))
        self._touch = Script(client, _script("cluster_touch"))

    def acquire(
        self,
        item_id: str,
        owner: str,
        ttl_ms: int,
        token: int,
        order_type: str,
        agent_limit: int,
        type_limit: int,
        secret_hash: str,
    ) -> int:
        k = self.cluster_keys
        member = f"{item_id}|{secret_hash}"
        taken: list[str] = []
        try:
            if self._track:
                for key, limit, refused in (
                    (k.agent(owner), agent_limit, -1),
                    (k.order_type(order_type), type_limit, -2),
                ):
                    if limit > 0 and self._run(self._reserve, [key], [member, ttl_ms, limit]) < 0:
                        self._give_back(taken, member)
                        return refused
                    if limit <= 0:  # no limit on this one: count the lease all the same
                        self._run(self._touch, [key], [member, ttl_ms])
                    taken.append(key)
            granted = self._run(self._lock, [k.item(item_id)], [owner, ttl_ms, token, secret_hash])
        except Unavailable:
            self._give_back(taken, member)
            raise
        if granted <= 0:
            self._give_back(taken, member)
        return granted

    def _give_back(self, keys: list[str], member: str) -> None:
        for key in keys:
            try:
                self.client.zrem(key, member)
            except self._errors as exc:  # the member expires one TTL later anyway
                log.warning("could not give back a lease-limit place in %s: %s", key, exc)

    def extend(self, item_id: str, owner: str, proof: str, ttl_ms: int, order_type: str) -> int:
        k = self.cluster_keys
        verdict = self._run(self._extend, [k.item(item_id)], [self.held(owner, proof), ttl_ms])
        if verdict == 1 and self._track:
            member = self._member(item_id, proof)
            for key in (k.agent(owner), k.order_type(order_type)):
                self._run(self._touch, [key], [member, ttl_ms])
        return verdict

    def release(self, item_id: str, owner: str, proof: str, order_type: str) -> int:
        k = self.cluster_keys
        released = self._run(self._release, [k.item(item_id)], [self.held(owner, proof)])
        if released == 1 and self._track:
            member = self._member(item_id, proof)
            for key in (k.agent(owner), k.order_type(order_type)):
                try:
                    self.client.zrem(key, member)
                except self._errors as exc:
                    raise Unavailable(f"redis unavailable: {exc}") from exc
        return released

    @staticmethod
    def _member(item_id: str, proof: str) -> str:
        """The zset member of a grant, from its proof ``<fence>|<secret hash>``."""
        return f"{item_id}|{proof.partition('|')[2]}"
