"""The check: take the tokens a call needs, or refuse it with 429 ``rate_limited``."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from ..errors import RateLimited
from ..settings import Settings
from . import rules
from .base import BucketStore


class RateLimiter:
    """Enforces the rate limits of one process. The store is built on first use, so a
    deployment with every limit unset never connects to it."""

    def __init__(self, settings: Settings, build_store: Callable[[], BucketStore]) -> None:
        self.settings = settings
        self._build = build_store
        self._store: BucketStore | None = None
        self._lock = threading.Lock()

    def limits(self, limit: str) -> bool:
        """Whether ``limit`` (``checkout`` or ``requests``) has any rate set."""
        return rules.limited(self.settings, limit)

    def checkout(
        self,
        agent_id: str,
        tenant_id: str | None = None,
        item_tenant: Callable[[], str | None] | None = None,
    ) -> None:
        """Take a checkout token for ``agent_id`` and the checkout's tenant (``tenant_id``,
        the one it is narrowed to, else ``item_tenant()``), or raise ``RateLimited``."""
        if not self.limits(rules.CHECKOUT):
            return
        tenant = rules.checkout_tenant(self.settings, tenant_id, item_tenant)
        self._take(rules.CHECKOUT, agent_id, tenant)

    def request(self, agent_id: str | None, tenant_id: str | None) -> None:
        """Take an API request token for the agent and the tenant, or raise ``RateLimited``."""
        if self.limits(rules.REQUESTS):
            self._take(rules.REQUESTS, agent_id, tenant_id)

    def _take(self, limit: str, agent_id: str | None, tenant_id: str | None) -> None:
        buckets = rules.buckets(self.settings, limit, agent_id, tenant_id)
        if not buckets:
            return
        wait = self.store.take(buckets)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"rate limit reached ({limit}); try again in {retry_after}s",
                retry_after=retry_after,
                details={"retry_after": retry_after, "limit": limit},
            )

    @property
    def store(self) -> BucketStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._build()
        return self._store

    def close(self) -> None:
        """Close the bucket store's connections, if one was built (a Redis one has them)."""
        close = getattr(self._store, "close", None)
        if close is not None:
            close()
