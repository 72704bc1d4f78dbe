"""The bucket and the port every bucket store implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Bucket:
    """A token bucket: holds at most ``capacity`` tokens, refilled at ``rate`` per second;
    a missing bucket is full."""

    key: str
    capacity: float
    rate: float


class BucketStore(Protocol):
    """Where buckets live (the database, or Redis)."""

    def take(self, buckets: Sequence[Bucket]) -> float:
        """Take one token from every bucket, all or none, atomically under concurrency
        (across processes), with the store's clock.

        Returns 0.0 when the tokens were taken; otherwise the seconds until every bucket
        holds a token again, and nothing was taken. Raises ``Unavailable`` when the store
        is down."""
        ...
