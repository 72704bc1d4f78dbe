"""Acquire, heartbeat and release through the agent API, and the Redis store alone.

Agent API: ``wm.agent.checkout`` (global, by priority then age), ``wm.agent.heartbeat``,
``wm.agent.release``, ``wm.agent.submit_part``, ``wm.agent.finalize`` and
``wm.agent.fail`` on PostgreSQL, once per lease backend. Store: the
``RedisLeaseStore`` primitives, to compare with the bare Lua calls of ``floor.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

from .common import AGENT, ORDER_TYPE, Config, Figures, make_wm, measure, measure_pair, seed
from .floor import Bare

Paired = tuple[dict[str, Figures], dict[str, Figures]]


def agent_figures(cfg: Config, backend: str, n: int, bare: Bare) -> Paired:
    """n checkouts, then two heartbeats of each lease, then n releases; n leases again
    (not timed), a part on each, then n finalizes; n more leases (not timed), then n
    fails (retryable: requeued with backoff): ours, and each call's floor measured in
    alternating chunks with it (the floor's own leases taken untimed, ``Bare.hold``)."""
    seed(cfg, 2 * n)
    wm = make_wm(cfg, backend)
    leases: list[Any] = []
    more: list[Any] = []

    def lease_again(op: str) -> None:  # untimed: the leases the next calls end
        more.clear()
        more.extend(wm.agent.checkout(AGENT) for _ in range(n))
        if any(lease is None for lease in more):
            raise RuntimeError(f"{backend}: a checkout found no item before {op}")
        bare.hold(backend, n)

    error = {"code": "bench", "message": "bench failure"}
    calls: dict[str, Any] = {
        "checkout": lambda _: leases.append(wm.agent.checkout(AGENT)),
        # the renewal replaces the lease, as an agent keeps it: the next beats are plain ones
        # on an in_progress lease (on Redis: the lock only, db/store.py lock_only_beat)
        "heartbeat_first": lambda i: leases.__setitem__(i, wm.agent.heartbeat(leases[i])),
        "heartbeat": lambda i: leases.__setitem__(i, wm.agent.heartbeat(leases[i])),
        "release": lambda i: wm.agent.release(leases[i]),
        "submit_part": lambda i: wm.agent.submit_part(more[i], "answer", {"text": "42"}),
        "finalize": lambda i: wm.agent.finalize(more[i]),
        "fail": lambda i: wm.agent.fail(more[i], error, retryable=True),
    }
    untimed_before = {"submit_part": lease_again, "fail": lease_again}
    ours, floors = {}, {}
    try:
        for _ in range(10):  # warm the pool, statement caches and scripts; then put back
            wm.agent.release(wm.agent.checkout(AGENT))
        for op, call in calls.items():
            if op in untimed_before:
                untimed_before[op](op)
            ours[op], floors[op] = measure_pair(call, bare.floor(backend, op), n)
            if op == "checkout" and any(lease is None for lease in leases):
                raise RuntimeError(f"{backend}: a checkout found no item in a full queue")
    finally:
        wm.close()
    return ours, floors


def store_figures(cfg: Config, n: int) -> dict[str, Figures]:
    """``RedisLeaseStore.acquire / extend / release`` on n distinct items, no limits.

    Built as ``leases.factory`` builds it when no limit is configured: the scripts then
    skip the per-agent/per-type bookkeeping (the bench's settings set no limit)."""
    from workmanager.lease_tokens import Holder, new_secret
    from workmanager.leases.redis import RedisLeaseStore, connect

    store = RedisLeaseStore(connect(cfg.redis_url), f"{cfg.redis_prefix}store:", track_limits=False)
    items = [str(uuid.uuid4()) for _ in range(n)]
    tokens: list[int] = []
    proofs: list[str] = []
    ttl_ms = 600_000
    _, secret_hash = new_secret()

    def acquire(i: int) -> None:
        fence = store.acquire(items[i], AGENT, ttl_ms, 1, ORDER_TYPE, 0, 0, secret_hash)
        tokens.append(fence)
        proofs.append(Holder(AGENT, fence, secret_hash).store_proof())

    try:
        out = {"store_acquire": measure(acquire, n)}
        if min(tokens) <= 0:
            raise RuntimeError("RedisLeaseStore.acquire refused a free item")
        out["store_extend"] = measure(
            lambda i: store.extend(items[i], AGENT, proofs[i], ttl_ms, ORDER_TYPE), n
        )
        out["store_release"] = measure(
            lambda i: store.release(items[i], AGENT, proofs[i], ORDER_TYPE), n
        )
    finally:
        store.client.close()
    return out
