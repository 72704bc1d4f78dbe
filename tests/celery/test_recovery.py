"""Crash and expiry recovery with real worker processes: SIGKILL mid-apply, the sweep, on
each broker (Redis, RabbitMQ)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tasks.producer import enqueue_order
from workmanager.db.models import Event, Item
from workmanager.states import ItemState, OrderState

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def events(stack, order_id, name: str, order_level: bool = False) -> int:
    with stack.wm.db.transaction() as s:
        stmt = (
            select(func.count())
            .select_from(Event)
            .where(Event.order_id == order_id, Event.event == name)
        )
        if order_level:
            stmt = stmt.where(Event.item_id.is_(None))
        return s.scalar(stmt) or 0


def test_sigkill_mid_apply_loses_nothing(make_stack, broker, tmp_path) -> None:
    # The apply claim lasts APPLY_RECOVERY_SECONDS: long enough here that the recovered
    # apply (a second or so) is never overtaken, short enough to wait out. On RabbitMQ the
    # killed worker's message comes back at once and backs off until the claim lapses.
    stack = make_stack(broker=broker, apply_recovery_seconds="3")
    stack.worker("control-1", WM_TEST_APPLY_SECONDS="60")  # killed long before it ends
    stack.agent("e2e.slow", "tests.support.pipeline:echo_handler")
    order_id = enqueue_order("e2e.slow", {"n": 1}, app=stack.app)
    markers = tmp_path / "markers"
    stack.wait_for(lambda: list(markers.glob(f"apply-start-{order_id}-*")), 60, "apply to start")
    stack.kill("control-1")  # SIGKILL to the whole process group, mid-apply
    assert not list(markers.glob(f"apply-end-{order_id}-*"))
    assert stack.wm.queries.order(order_id)["state"] == OrderState.APPROVED

    stack.worker("control-2")
    time.sleep(3.2)  # past WORK_MANAGER_APPLY_RECOVERY_SECONDS
    stack.app.send_task("workmanager.maintenance.run", queue="workmanager")
    stack.wait_for(
        lambda: stack.wm.queries.order(order_id)["state"] == OrderState.COMPLETED,
        60,
        "the recovered apply to complete the order",
    )
    assert events(stack, order_id, "applied") == 1
    assert events(stack, order_id, "completed", order_level=True) == 1
    assert len(list(markers.glob(f"apply-start-{order_id}-*"))) == 2  # ran again, recorded once


def item_of(stack, order_id) -> Item:
    with stack.wm.db.transaction() as s:
        return s.scalars(select(Item).where(Item.order_id == order_id)).one()


def test_sweep_task_requeues_then_fails_abandoned_items(make_stack, broker) -> None:
    stack = make_stack(
        broker=broker,
        lease_ttl_seconds="1",
        retry_backoff_seconds="0",
        retry_jitter_seconds="0",
        default_max_attempts="2",
    )
    stack.worker()
    order_id = stack.wm.propose("e2e.echo", {"n": 1})  # no agent consumer: we abandon leases

    for attempt, expected in ((1, ItemState.QUEUED), (2, ItemState.FAILED)):
        lease = stack.wm.agent.checkout("abandoning-agent", order_id=order_id)
        assert lease is not None and lease.item is not None
        assert lease.item.attempts == attempt
        time.sleep(1.1)
        stack.app.send_task("workmanager.leases.sweep", queue="workmanager")
        stack.wait_for(
            lambda e=expected: item_of(stack, order_id).state == e,
            30,
            f"the sweep to make the item {expected}",
        )
    assert events(stack, order_id, "lease_expired") == 2
    item = item_of(stack, order_id)
    assert item.error is not None and item.error["code"] == "max_attempts_exceeded"
    assert stack.wm.queries.order(order_id)["state"] == OrderState.FAILED
