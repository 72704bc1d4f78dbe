"""Every Redis key name of the lease backend, in one place.

{prefix}item:{item_id}     string "fence|secret hash|owner", PX = lease TTL  (the lock)
{prefix}agent:{agent_id}   zset item_id -> expiry ms                  (per-agent count)
{prefix}type:{order_type}  zset item_id -> expiry ms                  (per-type count)
{prefix}epoch              "1", set by the sweep                        (data-loss marker)
{prefix}ready              "1", PX 10 s, set by the readiness probe        (writes taken?)
{prefix}rate:{bucket}      hash tokens, ts (ms)             (a rate limit's token bucket)

On Redis Cluster (``ClusterKeys``) every key carries a hash tag, so each script touches
one slot.

{prefix}item:{<item_id>}     string "fence|secret hash|owner", PX = lease TTL
{prefix}agent:{<agent_id>}   zset "<item_id>|<secret hash>" -> expiry ms (its own slot)
{prefix}type:{<order_type>}  zset "<item_id>|<secret hash>" -> expiry ms (its own slot)
{prefix}epoch                "1", set by the sweep
{prefix}rate:{rate}:{bucket} hash tokens, ts: every bucket in one slot (a call takes
                             from its agent's and its tenant's buckets in one script)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "work:lease:"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    @property
    def ready(self) -> str:
        return f"{self.prefix}ready"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}"

    def order_type(self, order_type: str) -> str:
        return f"{self.prefix}type:{order_type}"

    def rate(self, bucket: str) -> str:
        return f"{self.prefix}rate:{bucket}"


@dataclass(frozen=True)
class ClusterKeys(RedisKeys):
    """The key names on Redis Cluster: hash-tagged per item, per agent and per type."""

    def item(self, item_id: str) -> str:
        return f"{self.prefix}item:{{{item_id}}}"

    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{{{agent_id}}}"

    def order_type(self, order_type: str) -> str:
        return f"{self.prefix}type:{{{order_type}}}"

    def rate(self, bucket: str) -> str:
        return f"{self.prefix}rate:{{rate}}:{bucket}"
