"""The PostgreSQL hot paths (agent and control plane) write what the general path writes.

The same scenario runs through both paths on one PostgreSQL database (with each lease
backend); the rows it leaves — item state, events in order with their payloads and actors,
provenance rows — must be the same once ids and timestamps are set aside. The contract
suite covers the rules; this covers the audit trail the hand-written SQL produces.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.types import Multi, Simple
from workmanager import AgentInfo, Registry, WorkManager
from workmanager.db.models import Item, Order, Provenance
from workmanager.errors import (
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    NotFound,
    ValidationFailed,
)
from workmanager.services.hotpath import HotPath

pytestmark = pytest.mark.postgres

AGENT = AgentInfo(id="agent-7", name="tester", version="1.2.3", model_name="m", runtime="py")
VOLATILE = {"id", "order_id", "item_id", "created_at", "request_fingerprint"}


def scenario(wm: WorkManager, tenant: str) -> list[uuid.UUID]:
    """Two orders: one of two items (scoped checkouts), one of one item (filtered global
    checkout); everything submitted, approved (one automatically) and applied; plus
    refused calls that must change nothing."""
    multi = wm.propose("test.multi", {"count": 2}, priority=3)
    simple = wm.propose("test.simple", {"tenant_id": tenant}, priority=1)
    first = wm.agent.checkout(AGENT, order_id=multi)
    second = wm.agent.checkout("agent-8", order_id=multi)
    assert first is not None and second is not None
    with pytest.raises(LeaseConflict):  # a stale token changes nothing
        wm.agent.submit(_with_token(first, first.token - 1), {"x": 1})
    wm.agent.submit(first, {"x": 1}, evidence={"url": "e"}, notes="n")
    wm.agent.submit(second, {"x": 2})
    only = wm.agent.checkout(AGENT, type="test.simple", min_priority=1, tenant_id=tenant)
    assert only is not None and only.order_id == simple
    with pytest.raises(ValidationFailed):  # schema refusal: the lease stays
        wm.agent.submit(only, {"no": "answer"})
    wm.agent.submit(only, {"answer": 42})
    assert wm.agent.checkout(AGENT, order_id=simple) is None
    with pytest.raises(NotFound):
        wm.agent.checkout(AGENT, order_id=uuid.uuid4())
    # The control plane: plain auto-approval, a refused one, a manual one, two applies.
    assert wm.orders.check_auto_approval(multi) is False  # not an auto-approving type
    assert wm.orders.check_auto_approval(simple) is True
    assert wm.orders.check_auto_approval(simple) is False  # already approved
    wm.approve(multi)
    assert wm.executor.apply(multi).recorded and wm.executor.apply(simple).recorded
    again = wm.executor.apply(simple)  # a redelivered apply records nothing
    assert not again.recorded and again.order["state"] == "completed"
    with pytest.raises(IllegalStateTransition):
        wm.executor.apply(wm.propose("test.multi", {"count": 1}))
    # Proposed by an agent (provenance), with a dedupe key: the second call finds it.
    by_agent = wm.orders.propose(
        "test.multi", {"count": 3}, priority=2, dedupe_key=f"dk-{tenant}", agent=AGENT
    )
    again_proposed = wm.orders.propose(
        "test.multi", {"count": 3}, dedupe_key=f"dk-{tenant}", agent=AGENT
    )
    assert by_agent.created and not again_proposed.created
    assert again_proposed.order == by_agent.order
    return [multi, simple, uuid.UUID(by_agent.order["id"])]


def _with_token(lease: Any, token: int) -> Any:
    import dataclasses

    return dataclasses.replace(lease, token=token)


def trail(wm: WorkManager, order_ids: list[uuid.UUID]) -> dict[str, Any]:
    """What the scenario left, ids and clocks aside."""
    out: dict[str, Any] = {"orders": [], "items": [], "events": [], "provenance": []}
    with wm.db.transaction() as s:
        for order_id in order_ids:
            order = s.get(Order, order_id)
            assert order is not None
            out["orders"].append(
                (
                    order.state,
                    order.diff,
                    order.apply_attempts,
                    order.applied_at == order.completed_at is not None,
                )
            )
            items = s.scalars(select(Item).where(Item.order_id == order_id).order_by(Item.id))
            out["items"].extend(
                sorted(
                    (
                        (i.state, i.result, i.attempts, i.lease_token > 0, i.leased_by_agent_id)
                        for i in items
                    ),
                    key=repr,
                )
            )
            rows = s.scalars(
                select(Provenance).where(Provenance.order_id == order_id).order_by(Provenance.id)
            )
            out["provenance"].extend(
                {
                    c: getattr(p, c)
                    for c in (col.name for col in Provenance.__table__.columns)
                    if c not in VOLATILE
                }
                for p in rows
            )
    for order_id in order_ids:
        out["events"].extend(
            (e["event"], e["actor_type"], e["actor_id"], e["payload"], e["item_id"] is None)
            for e in wm.queries.events(order_id)
        )
    return out


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_hot_and_general_paths_leave_the_same_trail(make_wm, backend) -> None:
    registry = Registry([Simple(auto=True), Multi()])
    hot = make_wm(db="postgres", backend=backend, registry=registry)
    general = make_wm(db="postgres", backend=f"{backend}/general", registry=registry)
    assert isinstance(hot.agent.hot, HotPath) and general.agent.hot is None
    assert hot.executor.hot is not None and general.executor.hot is None
    via_general = trail(general, scenario(general, "t-general"))
    via_hot = trail(hot, scenario(hot, "t-hot"))
    assert [o[0] for o in via_hot["orders"]] == ["completed", "completed", "queued"]
    assert [p["action"] for p in via_hot["provenance"]][-1] == "propose"
    assert via_hot == via_general
    names = [e[0] for e in via_hot["events"]]
    assert names[names.index("leased") :][:3] == ["leased", "in_progress", "leased"], names


def test_limits_keep_the_general_checkout_on_the_database_backend(make_wm) -> None:
    """Limits take advisory locks and counts on the general path; submit stays hot."""
    wm = make_wm(db="postgres", backend="database", max_leases_per_agent=1)
    assert wm.agent.hot is not None and not wm.agent.hot.handles_checkout
    plain = make_wm(db="postgres", backend="database")
    assert plain.agent.hot is not None and plain.agent.hot.handles_checkout


@pytest.mark.redis
def test_a_lock_the_store_lost_does_not_refuse_a_hot_submit(make_wm) -> None:
    """The one documented difference (ARCHITECTURE.md, "The PostgreSQL hot path"): the row
    still shows the agent's unexpired lease, so the hot path accepts the submit; the
    general path asks Redis first and refuses it as expired."""
    registry = Registry([Simple(), Multi()])
    outcomes = {}
    for backend in ("redis", "redis/general"):
        wm = make_wm(db="postgres", backend=backend, registry=registry)
        order_id = wm.propose("test.multi", {"count": 1})
        lease = wm.agent.checkout(AGENT, order_id=order_id)
        assert lease is not None
        store = wm.ctx.leases.store  # type: ignore[attr-defined]
        store.client.delete(*store.client.keys(f"{store.keys.prefix}item:*"))
        try:
            outcomes[backend] = wm.agent.submit(lease, {"x": 1}).item["state"]
        except LeaseExpired:
            outcomes[backend] = "lease_expired"
    assert outcomes == {"redis": "submitted", "redis/general": "lease_expired"}


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_submit_the_database_refuses_leaves_the_lease_usable(make_wm, backend) -> None:
    """A result PostgreSQL cannot store (a lone surrogate in a string) is a 422 at the
    commit's round trip; nothing changed, so the holder can still heartbeat and fail
    (the store lock is only deleted after a commit that succeeded)."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"x": "\ud800"})
    wm.agent.heartbeat(lease)
    outcome = wm.agent.fail(lease, {"code": "gave_up", "message": "after the 422"})
    assert outcome.item["state"] == "queued"
