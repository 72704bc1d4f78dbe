"""The apply task's retries through a real Celery worker (SPEC §5): the countdowns double
from ``APPLY_RETRY_BACKOFF_SECONDS``, a success after failures is recorded once, and an
apply that keeps failing fails the order after ``APPLY_MAX_RETRIES``. And a redelivered
``workmanager.orders.create`` makes one order."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tasks.dispatcher import CeleryDispatcher
from tests.support.retrying import Retrying
from workmanager.db.models import Event, Item, Order
from workmanager.states import OrderState

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TYPES = "tests.support.pipeline,tests.support.retrying"
MAX_RETRIES = 2
BACKOFF = 1.0  # seconds before the 2nd attempt; 2 s before the 3rd


def events(stack, order_id: uuid.UUID, name: str) -> list[Event]:
    with stack.wm.db.transaction() as s:
        return list(
            s.scalars(
                select(Event)
                .where(Event.order_id == order_id, Event.event == name)
                .order_by(Event.id)
            )
        )


def attempts(markers: Path, order_id: uuid.UUID) -> dict[int, float]:
    """The start time of each apply attempt, by attempt number."""
    return {
        int(p.name.rsplit("-", 1)[1]): float(p.read_text())
        for p in markers.glob(f"attempt-{order_id}-*")
    }


def approved_order(stack, fail: int) -> uuid.UUID:
    """An order of ``e2e.retrying`` submitted and approved here; its apply goes to the
    worker through the Celery dispatcher, as the API's approve would send it."""
    wm = stack.wm
    order_id = wm.propose("e2e.retrying", {"fail": fail})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"ok": True})
    wm.approve(order_id)
    return order_id


def test_apply_is_retried_with_doubling_countdowns_then_fails_for_good(
    make_stack, tmp_path: Path
) -> None:
    stack = make_stack(
        order_types=TYPES,
        apply_max_retries=str(MAX_RETRIES),
        apply_retry_backoff_seconds=str(BACKOFF),
    )
    stack.wm.registry.register(Retrying())
    stack.wm.dispatcher = CeleryDispatcher(stack.app)
    stack.worker()
    markers = tmp_path / "markers"
    flaky = approved_order(stack, fail=MAX_RETRIES)  # succeeds at the last attempt
    broken = approved_order(stack, fail=99)  # never succeeds

    state = stack.wm.queries.order_state
    stack.wait_for(lambda: state(flaky) == OrderState.COMPLETED, 60, "the flaky order applied")
    stack.wait_for(lambda: state(broken) == OrderState.FAILED, 60, "the broken order failed")
    stack.wait_for(
        lambda: f"apply of {broken} failed for good" in stack.log("control"),
        30,
        "the last apply task of the broken order to end",
    )

    for order_id in (flaky, broken):
        started = attempts(markers, order_id)
        assert sorted(started) == [1, 2, 3], started  # no attempt after the last one
        for attempt in (1, 2):
            countdown = BACKOFF * 2 ** (attempt - 1)
            gap = started[attempt + 1] - started[attempt]
            assert countdown - 0.05 <= gap <= countdown + 2.0, (order_id, attempt, gap)
        retrying = events(stack, order_id, "apply_retrying")
        assert [e.payload["attempt"] for e in retrying] == [1, 2]
        assert all(e.payload["exception"] == "RuntimeError" for e in retrying)

    assert len(events(stack, flaky, "applied")) == 1
    assert events(stack, flaky, "applied")[0].payload["attempt"] == 3
    assert events(stack, flaky, "apply_failed") == []
    order = stack.wm.queries.order(flaky)
    assert order["diff"]["after"] == {"attempt": 3} and order["last_error"] is None

    assert events(stack, broken, "applied") == []
    failed = events(stack, broken, "apply_failed")
    assert len(failed) == 1 and failed[0].payload["attempt"] == MAX_RETRIES + 1
    order = stack.wm.queries.order(broken)
    assert order["last_error"]["code"] == "apply_failed"
    assert order["last_error"]["message"] == "downstream down (attempt 3)"
    assert order["diff"] is None


def test_redelivered_create_message_makes_one_order(make_stack) -> None:
    stack = make_stack()
    stack.worker()
    order_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    message = {"type": "e2e.echo", "payload": {"n": 1}, "order_id": str(order_id)}
    for _ in range(2):  # the same message, twice: as the broker redelivers it
        stack.app.send_task(
            "workmanager.orders.create", kwargs=message, queue="workmanager", task_id=task_id
        )
    stack.wait_for(
        lambda: stack.log("control").count(f"[{task_id}] succeeded") == 2,
        60,
        "both deliveries of the create task to end",
    )
    with stack.wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1
        assert s.scalar(select(func.count()).select_from(Item)) == 1
        assert s.get(Order, order_id) is not None
    assert len(events(stack, order_id, "proposed")) == 1
    assert len(events(stack, order_id, "planned")) == 1
    assert stack.log("control").count(f"[{task_id}] succeeded in") == 2
    assert f"'{order_id}'" in stack.log("control")
