"""The task chain in an in-process worker (celery.contrib.testing.worker.start_worker):
create → agent consumer → check_auto_approval → apply, with the real broker."""

from __future__ import annotations

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


def _existing(wm: WorkManager, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    out = []
    for order_id in ids:
        try:
            wm.queries.order(order_id)
        except NotFound:  # not created yet
            continue
        out.append(order_id)
    return out
