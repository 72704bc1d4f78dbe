"""A create message that names neither an order id nor a dedupe key (sent by hand, by
name: SPEC §8.1) gets its order id from its task id, so the same message delivered again
finds its order instead of making a second one. A mutation pass found it untested. The
task runs through Celery's own tracer (what a worker's pool runs), on the test's
WorkManager, SQLite and PostgreSQL."""

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
