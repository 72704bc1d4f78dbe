"""The ``redis`` lock store on Redis Cluster (``WORK_MANAGER_REDIS_CLUSTER=true``).

A Lua script on a cluster may touch the keys of one slot only, so the keys are hash-tagged
(``keys.ClusterKeys``): ``acquire.lua`` runs without its zsets, touching the item's lock
alone. The fence
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
back) leaves a place taken until it expires, one lease TTL later. A stale lock of the
item (its grant died before its commit) gives its places back when the item is granted
again, as on a single Redis. Heartbeats and releases
move or delete the zset members after the lock changed, in separate steps as well.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError, Unavailable
from ..importing import import_extra
from .keys import ClusterKeys
from .redis import RedisLeaseStore, _script, translated
from .script import Script

log = logging.getLogger("workmanager.leases")


#: How long a lock on a shard that does not answer is read as alive (``pttl``) or ending
#: from now (``pexpiretime``): kept held, its row's expiry moved no further than this.
UNREACHED_MS = 1000

#: The port of a listed node that names none.
DEFAULT_PORT = 6379

#: What to do when the node answering is a Redis of its own, not a cluster's.
STANDALONE_HINT = (
    "the server is a single Redis, not a cluster node: unset WORK_MANAGER_REDIS_CLUSTER"
    " (or set it to false), or list a cluster's nodes in WORK_MANAGER_REDIS_URL"
)

#: What to do when no startup node answers.
STARTUP_HINT = (
    "start the cluster, or list more of its nodes (any one that answers will do): "
    "WORK_MANAGER_REDIS_URL=redis://host1:port1,host2:port2,host3:port3/0"
)


def startup_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The nodes a cluster URL lists: ``redis://[user:password@]host1:port1,host2:port2/0``
    (one node, the spelling of any Redis URL, or several separated by commas; a node
    without a port is on 6379). Returns the URL of the first node alone (with the
    credentials, TLS and options of the URL, which apply to every node) and the (host,
    port) of the others. A URL of one node is returned as it is, for redis-py to read. A
    list that is not host:port pairs is a ConfigurationError (its hosts shown, never the
    password)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return url, []
    entries = [entry.strip() for entry in hosts.split(",")]
    nodes: list[tuple[str, int]] = []
    for entry in entries:
        node = None
        try:
            node = urlsplit("//" + entry)
            host, port = node.hostname, node.port or DEFAULT_PORT
        except ValueError:  # a port that is no number or out of range, an unclosed [
            host = None
        if node is None or not host or node.path or node.query or node.fragment:
            raise ConfigurationError(
                f"WORK_MANAGER_REDIS_URL: cannot read the Redis Cluster node {entry!r} "
                f"among {hosts!r}: expected host:port",
                hint="list the nodes separated by commas: redis://host1:port1,host2:port2/0",
            )
        nodes.append((host, port))
    first = urlunsplit(parts._replace(netloc=userinfo + at + entries[0]))
    return first, nodes[1:]


def connect_cluster(url: str, timeout: float = 5.0) -> Any:
    """A ``RedisCluster`` client from the URL of one or more nodes (see
    :func:`startup_nodes`): it asks them in turn for the cluster's layout and discovers
    the other nodes from the first that answers. When none does (or the cluster is not
    usable: its slots not all served), :class:`Unavailable`, naming the nodes listed."""
    cluster = import_extra(
        "redis.cluster", "WORK_MANAGER_REDIS_CLUSTER=true needs the redis package", "redis"
    )
    import redis

    first, others = startup_nodes(url)
    try:
        # The first node by its URL, as redis-py reads one (its credentials, TLS and
        # options then apply to every node), the others as further startup nodes.
        return cluster.RedisCluster(
            url=first,
            startup_nodes=[cluster.ClusterNode(host, port) for host, port in others],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    except (redis.exceptions.RedisClusterException, redis.exceptions.RedisError) as exc:
        listed = urlsplit(url).netloc.rpartition("@")[2]
        standalone = "Cluster mode is not enabled" in str(exc)
        raise Unavailable(
            f"redis unavailable: Redis Cluster not usable through {listed}: {exc}",
            hint=STANDALONE_HINT if standalone else STARTUP_HINT,
        ) from exc


class RedisClusterLeaseStore(RedisLeaseStore):
    """:class:`RedisLeaseStore` with one slot per script (see the module's docstring)."""

    #: Its items' locks live on several shards: one down leaves the others' answering
    #: (a checkout skips an item it cannot reach: ``keyed.Unreached``).
    sharded = True

    def __init__(self, client: Any, prefix: str = "work:lease:", track_limits: bool = True) -> None:

        super().__init__(client, prefix, track_limits)
        self.cluster_keys = ClusterKeys(prefix)
        self.keys = self.cluster_keys  # check, alive, marked and mark use item and epoch
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
                self._drop_stale_places(item_id, token, order_type)
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
            # acquire.lua without its zsets (``track`` 0: the item's key alone, one slot)
            granted = self._run(
                self._acquire,
                [k.item(item_id)],
                [owner, ttl_ms, token, item_id, 0, 0, 0, secret_hash],
            )
        except Unavailable:
            self._give_back(taken, member)
            raise
        if granted <= 0:
            self._give_back(taken, member)
        return granted

    def _per_item(self, command: str, item_ids: list[str]) -> list[Any]:
        """``command`` on each item's lock, pipelined; when a shard does not answer, key by
        key, an unreachable lock read as alive for :data:`UNREACHED_MS` (its lease neither
        reclaimed nor renewed far until its shard answers): one dead shard failed the
        whole batch, and the sweep reclaimed nothing on the live shards. Every key
        unreachable: the outage, as before."""
        try:
            return super()._per_item(command, item_ids)
        except Unavailable as outage:
            if len(item_ids) <= 1:
                raise
            down = outage
        read: list[Any] = []
        dead: set[str | None] = set()  # nodes that did not answer: their keys not asked
        answered = 0
        for item_id in item_ids:
            node = self._node_of(item_id)
            if node not in dead:
                try:
                    read += super()._per_item(command, [item_id])
                    answered += 1
                    continue
                except Unavailable:  # redis-py retried it: seconds a key
                    dead.add(node)
            now_ms = int(time.time() * 1000)
            read.append(UNREACHED_MS if command == "pttl" else now_ms + UNREACHED_MS)
        if not answered:
            raise down
        return read

    def _node_of(self, item_id: str) -> str | None:
        """The node serving the item's lock, as the client's slot map has it."""
        try:
            return str(self.client.get_node_from_key(self.keys.item(item_id)).name)
        except Exception:  # no node known for the slot (SlotNotCoveredError): one group
            return None

    def marked(self) -> bool:
        """The marker's shard down: no audit now (it runs once the shard answers), rather
        than no sweep at all."""
        try:
            return super().marked()
        except Unavailable:
            log.warning("the lease marker's Redis shard does not answer; the audit waits")
            return True

    def _drop_stale_places(self, item_id: str, token: int, order_type: str) -> None:
        """A stale lock of the item (under a fence up to ``token``: a grant that died
        before its commit, a release whose deletion Redis refused) still holds its places
        in its agent's and type's zsets; they are given back before this grant counts, as
        ``acquire.lua`` does in its one script (the caller holds the item's row, so no
        lease of it is current)."""
        k = self.cluster_keys
        try:
            held = self.client.get(k.item(item_id))
        except self._errors as exc:
            raise translated(exc) from exc
        if held is None:
            return
        fence, _, rest = held.decode().partition("|")
        stale_hash, _, owner = rest.partition("|")
        if fence.isdigit() and int(fence) <= token:
            self._give_back([k.agent(owner), k.order_type(order_type)], f"{item_id}|{stale_hash}")

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
        if self._track:  # this grant's places, whoever holds the lock now (release.lua)
            member = self._member(item_id, proof)
            for key in (k.agent(owner), k.order_type(order_type)):
                try:
                    self.client.zrem(key, member)
                except self._errors as exc:
                    raise translated(exc) from exc
        return released

    @staticmethod
    def _member(item_id: str, proof: str) -> str:
        """The zset member of a grant, from its proof ``<fence>|<secret hash>``."""
        return f"{item_id}|{proof.partition('|')[2]}"
