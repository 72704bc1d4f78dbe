"""The task chain in an in-process worker (celery.contrib.testing.worker.start_worker):
create → agent consumer → check_auto_approval → apply, with the real broker."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker

from tasks.app import app
from tasks.dispatcher import CeleryDispatcher
from tasks.producer import enqueue_order
from tasks.runtime import set_wm
from tests.support.pipeline import Echo
from workers.agent import AgentConsumer, register_agent_task
from workers.handlers import load_handler
from workmanager import AgentInfo, Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.errors import NotFound

from ..conftest import truncate_all

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
QUEUES = ["workmanager", "workmanager.apply", "agents.e2e.echo"]


@pytest.fixture
def wm_on_app(pg_url: str, redis_url: str):
    broker = redis_url.rsplit("/", 1)[0] + "/13"
    import redis

    redis.Redis.from_url(broker).flushdb()
    truncate_all(Database(pg_url))
    saved = app.conf.broker_url
    app.conf.broker_url = broker
    wm = WorkManager(
        Settings(database_url=pg_url, broker_url=broker, metrics_driver="null"),
        registry=Registry([Echo()]),
    )
    wm.dispatcher = CeleryDispatcher(app)
    set_wm(wm)
    consumer = AgentConsumer(
        wm, load_handler("tests.support.pipeline:echo_handler"), AgentInfo(id="inproc-agent-1")
    )
    register_agent_task(app, Echo.type, consumer)
    yield wm
    set_wm(None)
    wm.close()
    app.conf.broker_url = saved


def test_chain_runs_to_completed_in_an_inprocess_worker(wm_on_app: WorkManager) -> None:
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=QUEUES,
        loglevel="WARNING",
    ):
        ids: list[uuid.UUID] = [enqueue_order(Echo.type, {"n": n}, app=app) for n in range(5)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [wm_on_app.queries.order(i)["state"] for i in _existing(wm_on_app, ids)]
            if len(states) == 5 and set(states) == {"completed"}:
                break
            time.sleep(0.2)
    for order_id in ids:
        order = wm_on_app.queries.order(order_id)
        assert order["state"] == "completed"
        assert order["diff"]["after"]["results"][0]["echo"]["n"] in range(5)
        events = [e["event"] for e in wm_on_app.queries.events(order_id) if not e["item_id"]]
        assert events == [
            "proposed",
            "planned",
            "in_progress",
            "submitted",
            "approved",
            "applied",
            "completed",
        ]


def test_apply_is_the_chained_child_of_the_approval_check(wm_on_app: WorkManager) -> None:
    """SPEC §8.2: check_auto_approval | apply is a Celery chain: the apply task's request
    names the check task as its parent (what Flower shows), and the order is applied once."""
    import re

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, keep = logging.getLogger("workmanager.tasks"), Keep()
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=QUEUES,
        loglevel="WARNING",
    ):
        level = logger.level
        logger.setLevel(logging.INFO)  # after the worker set its levels up
        logger.addHandler(keep)
        try:
            order_id = enqueue_order(Echo.type, {"n": 1}, app=app)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _state(wm_on_app, order_id) != "completed":
                time.sleep(0.1)
        finally:
            logger.removeHandler(keep)
            logger.setLevel(level)
    assert _state(wm_on_app, order_id) == "completed"
    text = "\n".join(lines)
    checks = re.findall(rf"check_auto_approval of {order_id}: task (\S+), chained True", text)
    parents = re.findall(rf"apply of {order_id}: task \S+, parent (\S+)", text)
    assert checks and parents, text[-2000:]
    assert parents[0] == checks[0]
    events = [e["event"] for e in wm_on_app.queries.events(order_id) if not e["item_id"]]
    assert events.count("applied") == 1


def _state(wm: WorkManager, order_id: uuid.UUID) -> str | None:
    try:
        return str(wm.queries.order(order_id)["state"])
    except NotFound:
        return None


def _existing(wm: WorkManager, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    out = []
    for order_id in ids:
        try:
            wm.queries.order(order_id)
        except NotFound:  # not created yet
            continue
        out.append(order_id)
    return out
