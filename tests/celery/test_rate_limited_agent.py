"""A Celery consumer agent over a checkout rate limit backs off (SPEC §13, issue 17): its
message is retried after ``Retry-After``, the item stays queued with its attempts, nothing
is marked failed, and every order completes at the limit's pace. Real worker processes
on PostgreSQL and the Redis broker; the buckets on Redis (Redis lease backend)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tasks.producer import enqueue_order
from workmanager.db.models import Event, Item, Order
from workmanager.states import OrderState

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def count(stack, model, *where) -> int:  # type: ignore[no-untyped-def]
    with stack.wm.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_a_rate_limited_consumer_retries_later_and_never_fails(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(
        lease_backend="redis", rate_limit_checkout_per_agent="1/s", rate_limit_burst="1"
    )
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=4)
    started = time.monotonic()
    ids = [enqueue_order("e2e.echo", {"n": n}, app=stack.app) for n in range(5)]
    stack.wait_for(
        lambda: count(stack, Order, Order.id.in_(ids), Order.state == OrderState.COMPLETED) == 5,
        90,
        "5 orders completed",
    )
    # one checkout a second, burst 1: five leases take at least four seconds
    assert time.monotonic() - started >= 4
    assert "rate limited" in stack.log("agent")
    assert count(stack, Event, Event.order_id.in_(ids), Event.event == "leased") == 5
    assert count(stack, Item, Item.order_id.in_(ids), Item.attempts != 1) == 0  # no lost attempt
    assert count(stack, Event, Event.order_id.in_(ids), Event.event.like("%fail%")) == 0
