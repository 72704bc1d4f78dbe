"""A task retried through an outage is said once in a while, not once per retry
(tasks/logs.py): during an outage every waiting task logged its retry, every time, for
as long as the database or the broker was away.

Each attempt runs through Celery's own tracer (``celery.app.trace.build_tracer``, what a
worker's pool runs for every task message): the retries, their ``task_retry`` signal and
their log lines are Celery's. No worker is started, so no worker start-up hook and no
logging set-up of a worker touches the test process."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from celery import Celery
from celery.app import trace

from tasks.logs import QuietOutageRetries
from workmanager.errors import Unavailable
from workmanager.saying import Throttled


class _Lines(logging.Handler):
    """The retry lines Celery's tracer logs (its logger may not propagate to pytest's)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if " retry: " in record.getMessage():
            self.said.append(record.getMessage())


def test_outage_retries_are_said_once_a_while_and_others_each_time() -> None:
    app = Celery("outage-retries", broker="memory://", backend="cache+memory://")
    (quiet,) = [f for f in trace.logger.filters if isinstance(f, QuietOutageRetries)]
    now = [1000.0]
    saved, quiet.throttle = quiet.throttle, Throttled(trace.logger, 30, clock=lambda: now[0])

    @app.task(bind=True, max_retries=10, default_retry_delay=0)
    def outage(self: Any) -> None:
        raise self.retry(exc=Unavailable("database down\nconnection refused"))

    @app.task(bind=True, max_retries=10, default_retry_delay=0)
    def other(self: Any) -> None:
        raise self.retry(exc=ValueError("not an outage"))

    def attempt(task: Any, retries: int) -> None:
        tracer, task_id = trace.build_tracer(task.name, task, app=app), str(uuid.uuid4())
        tracer(task_id, (), {}, {"id": task_id, "retries": retries, "delivery_info": {}})

    lines, level = _Lines(), trace.logger.level
    trace.logger.addHandler(lines)
    trace.logger.setLevel(logging.INFO)
    try:
        for n in range(5):
            if n == 3:
                now[0] += 30  # the window passed: the next retry is said, with the count
            attempt(outage, n)
        attempt(other, 0)
        attempt(other, 1)
    finally:
        quiet.throttle = saved
        trace.logger.removeHandler(lines)
        trace.logger.setLevel(level)
    said = lines.said
    outages = [line for line in said if "Unavailable" in line]
    # five retries: the first said, two counted, the fourth said with them, the fifth counted
    assert len(outages) == 2, said
    first = r"retry: Retry in 0s: Unavailable('database down\nconnection refused')"
    assert outages[0].endswith(first)
    assert outages[1].endswith("(and 2 more like it in the last 30 s)")
    assert all("\n" not in line for line in outages)
    assert len([line for line in said if "ValueError" in line]) == 2  # each, as Celery says


@pytest.mark.parametrize("name", ["create", "check_auto_approval", "apply"])
def test_an_outage_is_retried_however_long_it_lasts(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """docs/operations.md: "Celery tasks retry ``TransientError`` with exponential backoff
    (capped at 60 s, no retry limit)". A mutation pass: without ``autoretry_for``, or
    with a retry limit, the control tasks' outage ended them ``FAILURE`` (a create's
    proposal lost) and no test failed. The eleventh try of each, through Celery's tracer,
    is sent again (recorded here, not published)."""
    import tasks.orders as orders
    from tasks.app import app

    def down() -> Any:
        raise Unavailable("the database is away")

    task = getattr(orders, name)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(orders, "get_wm", down)
    monkeypatch.setattr(task, "apply_async", lambda *a, **k: sent.append(k))
    order_id = str(uuid.uuid4())
    kwargs: dict[str, Any] = {"order_id": order_id}
    if name == "create":
        kwargs |= {"type": "e2e.echo", "payload": {}}
    task_id = str(uuid.uuid4())
    tracer = trace.build_tracer(task.name, task, app=app)
    request = {"id": task_id, "retries": 10, "delivery_info": {}}
    _, info, *_ = tracer(task_id, (), kwargs, request)
    assert info is not None and info.state == "RETRY", info and info.state
    assert len(sent) == 1 and 0 < sent[0]["countdown"] <= 60, sent
