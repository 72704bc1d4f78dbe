"""What ``ApplyContext`` exposes for fencing external writes (issue 11, item 1;
docs/security.md "Fencing writes to external systems"): item id -> the integer fence of the
lease that produced the item's result, never the secret, on every store and lock backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry, WorkManager
from workmanager.types import ItemView


class Fenced(OrderType):
    """One item; apply keeps the context it was given."""

    type = "test.fenced"

    def __init__(self) -> None:
        self.seen: list[ApplyContext] = []

    def result_schema(self, item: ItemView) -> dict[str, Any]:
        return {"type": "object"}

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        self.seen.append(ctx)
        return Diff.empty()


def test_apply_gets_the_fence_of_the_lease_that_produced_the_result(
    make_wm: Callable[..., WorkManager], backend: tuple[str, str]
) -> None:
    db, lease_backend = backend
    fenced = Fenced()
    wm = make_wm(db=db, backend=lease_backend, registry=Registry([fenced]))
    order_id = wm.propose("test.fenced", {})
    first = wm.agent.checkout("agent-a", order_id=order_id)
    assert first is not None
    wm.agent.release(first)  # a later grant of the same item has a higher fence
    lease = wm.agent.checkout("agent-b", order_id=order_id)
    assert lease is not None and lease.fence > first.fence
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(order_id)
    wm.executor.apply(order_id)
    (ctx,) = fenced.seen
    assert ctx.lease_tokens == ctx.fences == {str(lease.item_id): lease.fence}
    assert all(type(fence) is int for fence in ctx.fences.values())
    secret = lease.token.split(".", 1)[1]
    assert secret not in json.dumps(ctx.lease_tokens)
