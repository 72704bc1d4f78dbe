"""Which buckets a call takes a token from: the one place this rule lives.

Two limits, each per agent and per tenant: ``checkout`` (every checkout, whatever the
surface: HTTP, MCP, Celery consumer agents, the library) and ``requests`` (every
authenticated HTTP API request). A bucket holds ``WORK_MANAGER_RATE_LIMIT_BURST`` tokens,
or, unset, the rate's count (``20/s`` → 20), and refills at the rate.

The tenant of a checkout is the one it is narrowed to: a token bound to a tenant checks
out within its tenant only (``Operations`` narrows it), an unbound caller may name one
(the ``tenant_id`` filter); else, for a checkout of one named item (Celery consumer
agents), that item's tenant, and for a checkout of one order's items, that order's. An
unbound caller's checkout across every tenant, and an item of no tenant, take from the
agent's bucket only (which tenant's item it will get is not known before the item is
granted). A checkout of one named item that is not leasable when asked (a consumer's
message for an item leased or done already) takes no token: the agent did not ask for it.
Messages racing for one item each take one (the token comes before the grant).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..settings import Settings
from .base import Bucket
from .rate import Rate

CHECKOUT, REQUESTS = "checkout", "requests"


def rates(settings: Settings, limit: str) -> tuple[Rate | None, Rate | None]:
    """The (per agent, per tenant) rates of ``limit``; ``None`` where unset."""
    if limit == CHECKOUT:
        return settings.rate_limit_checkout_per_agent, settings.rate_limit_checkout_per_tenant
    return settings.rate_limit_requests_per_agent, settings.rate_limit_requests_per_tenant


def limited(settings: Settings, limit: str) -> bool:
    """Whether any bucket can apply to ``limit`` (else: no bucket, no round trip)."""
    return rates(settings, limit) != (None, None)


def buckets(
    settings: Settings, limit: str, agent_id: str | None, tenant_id: str | None
) -> tuple[Bucket, ...]:
    """The buckets one call under ``limit`` takes a token from."""
    per_agent, per_tenant = rates(settings, limit)
    found = []
    if per_agent is not None and agent_id:
        found.append(_bucket(settings, limit, f"agent:{agent_id}", per_agent))
    if per_tenant is not None and tenant_id:
        found.append(_bucket(settings, limit, f"tenant:{tenant_id}", per_tenant))
    return tuple(found)


def checkout_tenant(
    settings: Settings, narrowed: str | None, item_tenant: Callable[[], str | None] | None
) -> str | None:
    """The tenant a checkout counts against (see the module's docstring). ``item_tenant``
    (a lookup) is called only when a per-tenant checkout rate is set and the checkout is
    narrowed to no tenant."""
    if narrowed is not None or item_tenant is None:
        return narrowed
    return item_tenant() if settings.rate_limit_checkout_per_tenant is not None else None


def _bucket(settings: Settings, limit: str, whose: str, rate: Rate) -> Bucket:
    """``whose`` (``agent:<id>``, ``tenant:<id>``) bucket under ``limit`` at this capacity
    and rate, which its name carries (``checkout@20/0.333333:agent:<id>``): a limit changed
    between restarts starts full, on every store (the database's row refilled a bucket
    emptied under the old rate at the new one, and a rate lowered to 1/h kept agents idle
    since the restart out for an hour; Redis's key had expired). The id comes last: an
    erasure finds an agent's buckets by their end (``services/forget.py``)."""
    capacity = settings.rate_limit_burst or rate.count
    key = f"{limit}@{capacity}/{rate.per_second:g}:{whose}"
    return Bucket(key, float(capacity), rate.per_second)


def refill_seconds(key: str) -> float | None:
    """How long the bucket ``key`` names (``_bucket``: its capacity and rate) takes to
    fill up from empty: after that its row says no more than a missing row does (a full
    bucket), so housekeeping may delete it. Read from the key, never from this process's
    settings: maintenance runs where a limit may not be set (a limit of the API alone),
    and deleted the buckets of callers still waiting out an hour's limit. ``None`` for a
    key of no such form (none is written)."""
    found = _KEY.match(key)
    if found is None:
        return None
    capacity, rate = float(found["capacity"]), float(found["rate"])
    return capacity / rate if rate > 0 else None


_KEY = re.compile(r"[^@]*@(?P<capacity>[0-9.e+-]+)/(?P<rate>[0-9.e+-]+):")
