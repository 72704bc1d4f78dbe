"""The ``redis`` lock store: Lua scripts (``lua/*.lua``) for every atomic step."""

from __future__ import annotations

import re
import time
from importlib import resources
from typing import Any

from ..errors import Unavailable
from ..importing import import_extra
from ..saying import one_line
from .keys import RedisKeys
from .script import Script


def _script(name: str) -> str:
    return resources.files("workmanager.leases").joinpath(f"lua/{name}.lua").read_text()


def _answers() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    try:
        import redis
    except ImportError:
        return (), ()
    e = redis.exceptions
    cluster = (e.ClusterCrossSlotError, e.MovedError)
    # ResponseError: translated() tells the server's state (OOM, READONLY, NOPERM,
    # MISCONF) from a call's own error; a cluster client's own exceptions too
    return cluster, (e.RedisError, e.RedisClusterException)


#: What a Redis Cluster node answers a client that is not in cluster mode; every error a
#: Redis call can raise (``translated`` says which are the server's state).
CLUSTER_ANSWERS, REDIS_ERRORS = _answers()
#: A Redis answer that is the server's state, not the call's: its reply's first word (as
#: redis-py classes them: OutOfMemoryError, ReadOnlyError, NoPermissionError; MISCONF
#: has no class), what it means and what mends it.
SERVER_STATES = {
    "OOM": (
        "Redis is out of memory (maxmemory reached, nothing it may evict)",
        "raise its maxmemory, or give the leases a Redis of their own; an evicting policy "
        "loses leases (docs/operations.md, failure modes)",
    ),
    "READONLY": (
        "the server is a read-only replica",
        "a failover moved the primary: point WORK_MANAGER_REDIS_URL at it",
    ),
    "NOPERM": (
        "the Redis user lacks a command or key",
        "allow it the lease scripts (EVALSHA, EVAL, SCRIPT LOAD) and GET, SET, EXISTS, "
        "PTTL, PEXPIRETIME, ZREM, PING on the prefix's keys (WORK_MANAGER_REDIS_PREFIX)",
    ),
    "MISCONF": (
        "Redis refuses writes: it cannot save its snapshot",
        "see the Redis log (a full disk, a directory it cannot write)",
    ),
}


_CLASSED = {"OutOfMemoryError": "OOM", "ReadOnlyError": "READONLY", "NoPermissionError": "NOPERM"}


def translated(exc: BaseException) -> Unavailable:
    """A Redis error as the project's: unavailable (503, the caller retries), with a hint
    when the server's state says what mends it (out of memory, a replica, a permission,
    a failed snapshot; a Redis Cluster node spoken to without cluster mode: every script
    touching two keys was a ClusterCrossSlotError). A call's own error (not the server's
    state nor its connection) is raised as it is: a bug."""
    import redis

    e = redis.exceptions
    if isinstance(exc, CLUSTER_ANSWERS):
        return Unavailable(
            f"redis unavailable: the server is a Redis Cluster node: {exc}",
            hint="set WORK_MANAGER_REDIS_CLUSTER=true and list its nodes in WORK_MANAGER_REDIS_URL",
        )
    # redis-py strips the word off the replies it has a class for
    word = _CLASSED.get(type(exc).__name__) or str(exc).split(" ", 1)[0]
    state = SERVER_STATES.get(word) if isinstance(exc, e.ResponseError) else None
    if state is not None:
        return Unavailable(f"redis unavailable: {state[0]} ({one_line(exc)})", hint=state[1])
    if isinstance(exc, e.ResponseError) and "DB index is out of range" in str(exc):
        return Unavailable(
            "redis unavailable: the server has no database of the number in"
            " WORK_MANAGER_REDIS_URL's path",
            hint="its `databases` setting (16 by default) numbers them from 0: "
            "redis://host:port/<number below it>",
        )
    kinds: tuple[type[BaseException], ...] = (e.ConnectionError, e.TimeoutError, e.ClusterError)
    kinds += (e.TryAgainError, e.RedisClusterException)
    if isinstance(exc, kinds) and not isinstance(exc, e.AskError):
        return Unavailable(f"redis unavailable: {one_line(exc)}")
    raise exc


def writable(client: Any, keys: RedisKeys) -> None:
    """The server takes the lease store's writes and scripts (the readiness probe): a
    replica, an out-of-memory or snapshot-failing server and a user without the scripts
    all answer PING."""
    try:
        client.set(keys.ready, "1", px=10_000)
        Script(client, _script("extend"))(keys=[keys.item("readiness-probe")], args=["", 1])
    except REDIS_ERRORS as exc:
        raise translated(exc) from exc


def connect(url: str) -> Any:
    redis = import_extra(
        "redis", "WORK_MANAGER_LEASE_BACKEND=redis needs the redis package", "redis"
    )
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )


class RedisLeaseStore:
    """Locks as ``SET key "fence|secret hash|owner" NX PX ttl`` semantics, compared by
    owner + proof (fence and secret hash)."""

    def __init__(self, client: Any, prefix: str = "work:lease:", track_limits: bool = True) -> None:
        """``track_limits`` keeps the per-agent/per-type counts the limits need; without
        limits configured the scripts skip that bookkeeping (turning limits on later
        starts the counts from the leases granted after the change)."""

        self.client = client
        self.keys = RedisKeys(prefix)
        self._track = 1 if track_limits else 0
        self._errors = REDIS_ERRORS
        self._acquire = Script(client, _script("acquire"))
        self._extend = Script(client, _script("extend"))
        self._release = Script(client, _script("release"))
        self._holding = Script(client, _script("holding"))

    def close(self) -> None:
        """Close the client's pooled connections (a later call would open new ones)."""
        self.client.close()

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> int:
        try:
            return int(script(keys=keys, args=args))
        except self._errors as exc:
            raise translated(exc) from exc

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
        k = self.keys
        return self._run(
            self._acquire,
            [k.item(item_id), k.agent(owner), k.order_type(order_type)],
            [owner, ttl_ms, token, item_id, agent_limit, type_limit, self._track, secret_hash],
        )

    def holding(self, owner: str) -> int:
        return self._run(self._holding, [self.keys.agent(owner)], [])

    @staticmethod
    def held(owner: str, proof: str) -> str:
        """The lock's value while ``owner`` holds it under ``proof`` (as acquire.lua
        stores it): what extend, release and check compare."""
        return f"{proof}|{owner}"

    def extend(self, item_id: str, owner: str, proof: str, ttl_ms: int, order_type: str) -> int:
        k = self.keys
        if not self._track:  # the lock's key and its check only (``track`` absent: 0)
            return self._run(self._extend, [k.item(item_id)], [self.held(owner, proof), ttl_ms])
        return self._run(
            self._extend,
            [k.item(item_id), k.agent(owner), k.order_type(order_type)],
            [self.held(owner, proof), ttl_ms, item_id, 1],
        )

    def check(self, item_id: str, owner: str, proof: str) -> int:
        try:
            value = self.client.get(self.keys.item(item_id))
        except self._errors as exc:
            raise translated(exc) from exc
        if value is None:
            return 0
        return 1 if value.decode() == self.held(owner, proof) else -1

    def release(self, item_id: str, owner: str, proof: str, order_type: str) -> int:
        """Drop the lock, and the item's places in its agent's and type's counts whether
        or not this process keeps them (an ended lease was counted against its agent's
        limit until its TTL when a process without limits ended it: a dead-letter run, an
        operator's release; two ``ZREM`` of absent keys when no process counts)."""
        k = self.keys
        return self._run(
            self._release,
            [k.item(item_id), k.agent(owner), k.order_type(order_type)],
            [self.held(owner, proof), item_id, 1],
        )

    def _per_item(self, command: str, item_ids: list[str]) -> list[Any]:
        """``command`` on each item's lock key, pipelined: one round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for item_id in item_ids:
                getattr(pipe, command)(self.keys.item(item_id))
            return list(pipe.execute())
        except self._errors as exc:
            raise translated(exc) from exc

    def alive(self, item_ids: list[str]) -> dict[str, int]:
        ttls = self._per_item("pttl", item_ids) if item_ids else []
        return {i: int(t) for i, t in zip(item_ids, ttls, strict=True) if int(t) > 0}

    def ends(self, item_ids: list[str]) -> dict[str, int]:
        import redis

        try:
            ends = self._per_item("pexpiretime", item_ids) if item_ids else []
        except redis.ResponseError:  # Redis < 7 has no PEXPIRETIME: now + the TTL left
            now_ms = int(time.time() * 1000)
            return {i: now_ms + ms for i, ms in self.alive(item_ids).items()}
        return {i: int(e) for i, e in zip(item_ids, ends, strict=True) if int(e) > 0}

    def marked(self) -> bool:
        try:
            return bool(self.client.exists(self.keys.epoch))
        except self._errors as exc:
            raise translated(exc) from exc

    def mark(self) -> None:
        try:
            self.client.set(self.keys.epoch, "1")
        except self._errors as exc:
            raise translated(exc) from exc

    def flush(self) -> int:
        """Delete the locks, the limits' zsets and the marker under the prefix (SCAN, then
        DEL in batches; on a cluster redis-py scans every primary and splits the DEL by
        slot). The rate limits' buckets stay."""
        prefix = re.sub(r"([*?\[\]\\])", r"\\\1", self.keys.prefix)
        deleted = 0
        try:
            for kind in ("item:*", "agent:*", "type:*", "epoch"):
                batch: list[Any] = []
                for key in self.client.scan_iter(match=prefix + kind, count=1000):
                    batch.append(key)
                    if len(batch) == 500:
                        deleted += int(self.client.delete(*batch))
                        batch = []
                if batch:
                    deleted += int(self.client.delete(*batch))
        except self._errors as exc:
            raise translated(exc) from exc
        return deleted

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._errors as exc:
            raise translated(exc) from exc
