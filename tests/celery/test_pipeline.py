"""End to end through real Celery worker processes (SPEC §8): propose → agents consume →
auto-approve → apply → completed, on PostgreSQL and each broker (Redis, RabbitMQ)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from tasks.producer import enqueue_order
from workmanager.db.models import Event, Order
from workmanager.states import OrderState

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def count_orders(stack, state: str, ids: list[uuid.UUID]) -> int:
    with stack.wm.db.transaction() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Order)
                .where(Order.id.in_(ids), Order.state == state)
            )
            or 0
        )


def count_events(stack, event: str, ids: list[uuid.UUID]) -> int:
    with stack.wm.db.transaction() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.order_id.in_(ids), Event.event == event)
            )
            or 0
        )


@pytest.mark.parametrize(
    ("broker", "lease_backend"),
    [("redis", "database"), ("redis", "redis"), ("rabbitmq", "redis")],
    indirect=["broker"],
)
def test_hundred_orders_complete(make_stack, broker: str, lease_backend: str) -> None:
    stack = make_stack(broker=broker, lease_backend=lease_backend)
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=4)
    ids = [enqueue_order("e2e.echo", {"n": n}, app=stack.app) for n in range(100)]
    stack.wait_for(
        lambda: count_orders(stack, OrderState.COMPLETED, ids) == 100, 120, "100 orders completed"
    )
    assert count_events(stack, "applied", ids) == 100
    assert count_events(stack, "approved", ids) == 100
    order = stack.wm.queries.order(ids[0])
    assert order["diff"]["after"]["results"][0]["echo"] == {"n": 0}
    assert order["items"][0]["state"] == "completed"


def test_enqueue_with_dedupe_key_creates_one_order(make_stack) -> None:
    stack = make_stack()
    stack.worker()
    first = enqueue_order("e2e.echo", {"n": 1}, dedupe_key="same", app=stack.app)
    second = enqueue_order("e2e.echo", {"n": 2}, dedupe_key="same", app=stack.app)
    assert first == second
    stack.wait_for(
        lambda: count_orders(stack, OrderState.QUEUED, [first]) == 1, 30, "the order created"
    )
    with stack.wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1


def test_lease_limit_holds_messages_back_instead_of_dropping_them(make_stack, broker) -> None:
    stack = make_stack(broker=broker, max_leases_per_agent="1")
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=4)
    ids = [enqueue_order("e2e.echo", {"n": n}, app=stack.app) for n in range(12)]
    stack.wait_for(
        lambda: count_orders(stack, OrderState.COMPLETED, ids) == 12,
        90,
        "12 orders completed by one agent limited to one lease",
    )
    assert "later" in stack.log("agent") or "Retry in" in stack.log("agent")
