"""Buckets on Redis: one Lua script (``lua/take.lua``) takes from every bucket of a call."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from ..leases.keys import RedisKeys
from ..leases.redis import REDIS_ERRORS, translated
from ..leases.script import Script
from .base import Bucket


class RedisBucketStore:
    """Token buckets as Redis hashes, keyed by :meth:`RedisKeys.rate`."""

    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client, self.keys = client, keys
        script = resources.files("workmanager.ratelimit").joinpath("lua/take.lua").read_text()
        self._script = Script(client, script)

    def close(self) -> None:
        self.client.close()

    def take(self, buckets: Sequence[Bucket]) -> float:
        keys = [self.keys.rate(b.key) for b in buckets]
        args: list[float] = []
        for bucket in buckets:
            args += [bucket.capacity, bucket.rate]
        try:
            wait_ms = int(self._script(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise translated(exc) from exc
        return wait_ms / 1000
