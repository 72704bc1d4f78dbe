"""The two ways an agent gives an item up before submitting it: release (back to the
queue now, its attempt given back) and fail (requeued with backoff, or failed). The
transaction bodies of :meth:`.agent.AgentAPI.release` and :meth:`~.agent.AgentAPI.fail`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..states import ItemState
from ..types import JSON, AgentInfo, Lease
from .context import ServiceContext
from .inputs import as_presented
from .lifecycle import lock_item, lock_order_ref, maybe_requeue_order, requeue_or_fail
from .outcomes import ItemOutcome
from .transitions import clear_lease, move_item
from .views import item_dict


def release_tx(ctx: ServiceContext, s: Session, lease: Lease, agent: AgentInfo) -> ItemOutcome:
    now = ctx.clock()
    item = lock_item(s, lease.item_id)
    ctx.leases.check(item, as_presented(lease, agent), now)
    order = lock_order_ref(s, item.order_id)
    clear_lease(item)
    item.attempts = max(item.attempts - 1, 0)
    move_item(
        s, item, ItemState.QUEUED, agent.actor, event="released", payload={"agent_id": agent.id}
    )
    maybe_requeue_order(s, order, agent.actor, now)
    ctx.provenance.record(s, "release", agent, order_id=item.order_id, item_id=item.id)
    return ItemOutcome(item_dict(item), order.state)


def fail_tx(
    ctx: ServiceContext, s: Session, lease: Lease, error: JSON, retryable: bool, agent: AgentInfo
) -> ItemOutcome:
    now = ctx.clock()
    item = lock_item(s, lease.item_id)
    ctx.leases.check(item, as_presented(lease, agent), now)
    requeue_or_fail(
        s,
        ctx.settings,
        item,
        agent.actor,
        now,
        event="agent_failed",
        error={"code": error["code"], "message": error["message"]},
        retryable=retryable,
    )
    ctx.provenance.record(s, "fail", agent, order_id=item.order_id, item_id=item.id)
    order = lock_order_ref(s, item.order_id)
    return ItemOutcome(item_dict(item), order.state)
