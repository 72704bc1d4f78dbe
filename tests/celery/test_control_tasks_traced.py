"""The control tasks' own decisions, found untested by a mutation pass: a create message
that names neither an order id nor a dedupe key (sent by hand, by name: SPEC §8.1) gets
its order id from its task id, so the same message delivered again finds its order; a
``check_auto_approval`` sent alone announces the apply of the order it approved, and as
the chain ``check_auto_approval | apply`` leaves it to the chain. Each task runs through
Celery's own tracer (what a worker's pool runs), on the test's WorkManager, SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery.app import trace
from sqlalchemy import func, select

import tasks.orders as orders
from tasks.app import app
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Order


def test_a_create_without_an_id_is_one_order_however_often_delivered(
    make_wm: Any, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wm: WorkManager = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    monkeypatch.setattr(orders, "get_wm", lambda: wm)
    task_id = str(uuid.uuid4())
    tracer = trace.build_tracer(orders.create.name, orders.create, app=app)
    kwargs = {"type": "test.simple", "payload": {"n": 1}}
    said = [tracer(task_id, (), kwargs, {"id": task_id, "delivery_info": {}})[0] for _ in range(2)]
    assert said == [str(uuid.uuid5(orders.TASK_NAMESPACE, task_id))] * 2
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1


@pytest.mark.parametrize("chained", [False, True])
def test_an_auto_approval_sent_alone_announces_its_apply(
    make_wm: Any, database: str, monkeypatch: pytest.MonkeyPatch, chained: bool
) -> None:
    wm: WorkManager = make_wm(
        db=database, backend="database", registry=Registry([Simple(auto=True)])
    )
    monkeypatch.setattr(orders, "get_wm", lambda: wm)
    sent: list[Any] = []  # the chain's apply, recorded here, not published
    monkeypatch.setattr(orders.apply, "apply_async", lambda *a, **k: sent.append(a))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    task_id = str(uuid.uuid4())
    tracer = trace.build_tracer(
        orders.check_auto_approval.name, orders.check_auto_approval, app=app
    )
    request: dict[str, Any] = {"id": task_id, "delivery_info": {}}
    if chained:
        request["chain"] = [orders.apply.s().set(task_id=str(uuid.uuid4()))]
    assert tracer(task_id, (), {"order_id": str(order_id)}, request)[0] is True
    assert wm.queries.order(order_id)["state"] == "approved"
    assert wm.dispatcher.approved == ([] if chained else [order_id])  # type: ignore[attr-defined]
    assert [a[0] for a in sent] == ([(True,)] if chained else [])  # the approval, passed on
