"""The check: take the tokens a call needs, or refuse it with 429 ``rate_limited``."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..errors import RateLimited
from ..settings import Settings
from . import rules
from .base import Bucket, BucketStore

#: An HTTP checkout's request tokens, not taken yet: taken with its checkout tokens in one
#: take, all or none (a checkout the checkout limit refused took a request token, and an
#: agent polling for work spent its budget for the heartbeats of the lease it held).
_DEFERRED: ContextVar[tuple[Bucket, ...]] = ContextVar("deferred_request_tokens", default=())


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
        deferred = _DEFERRED.get()
        _DEFERRED.set(())
        if not self.limits(rules.CHECKOUT):
            return
        tenant = rules.checkout_tenant(self.settings, tenant_id, item_tenant)
        own = rules.buckets(self.settings, rules.CHECKOUT, agent_id, tenant)
        self._take(rules.CHECKOUT, own + deferred)

    def request(
        self, agent_id: str | None, tenant_id: str | None, *, checkout: bool = False
    ) -> None:
        """Take an API request token for the agent and the tenant, or raise ``RateLimited``.
        ``checkout``: the request is a checkout, whose checkout limit is set: its request
        tokens are taken with its checkout tokens (:meth:`checkout`), all or none."""
        if not self.limits(rules.REQUESTS):
            return
        buckets = rules.buckets(self.settings, rules.REQUESTS, agent_id, tenant_id)
        if checkout and self.limits(rules.CHECKOUT):
            _DEFERRED.set(buckets)
            return
        self._take(rules.REQUESTS, buckets)

    @contextmanager
    def settling(self) -> Iterator[None]:
        """Around a checkout request after :meth:`request` (``checkout=True``): request
        tokens still deferred when it ends (it ended before its checkout's take: a filter
        refused, a replay, a tenant it may not ask for) are taken then, as every other
        request's are, or it is refused 429 (such requests were never counted)."""
        try:
            yield
        finally:
            deferred = _DEFERRED.get()
            if deferred:
                _DEFERRED.set(())
                self._take(rules.REQUESTS, deferred)

    def _take(self, limit: str, buckets: tuple[Bucket, ...]) -> None:
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
