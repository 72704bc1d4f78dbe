"""The task chain in an in-process worker: create → agent consumer → check_auto_approval →
apply, with the real broker (Redis) and PostgreSQL.

The worker is pytest-celery's plugin fixture ``celery_session_worker`` (``celery.contrib.
pytest``: a thread-pool worker inside the test process, no Docker). Its app is the
project's own Celery app (``celery_session_app`` is overridden to hand it over, pointed at a
broker db of its own), so the worker runs the real tasks with the real routes.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

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


class Manual(Echo):
    """Echo that a person approves: its approval check answers false."""

    type = "e2e.manual"
    auto_approve = False


#: The in-process worker lives for the whole session: a broker db no subprocess stack uses.
INPROCESS_BROKER_DB = int(os.environ.get("WM_TEST_INPROCESS_BROKER_DB", "13"))


@pytest.fixture(scope="session")
def inprocess_wm(pg_url: str, redis_url: str) -> Iterator[WorkManager]:
    broker = redis_url.rsplit("/", 1)[0] + f"/{INPROCESS_BROKER_DB}"
    wm = WorkManager(
        Settings(database_url=pg_url, broker_url=broker, metrics_driver="null"),
        registry=Registry([Echo(), Manual()]),
    )
    wm.dispatcher = CeleryDispatcher(app)
    yield wm
    wm.close()


@pytest.fixture(scope="session")
def celery_session_app(inprocess_wm: WorkManager) -> Iterator[Celery]:
    """The plugin's session app, replaced by the project's app on this test's broker."""
    import redis

    broker = inprocess_wm.settings.broker_url
    assert broker is not None
    redis.Redis.from_url(broker).flushdb()
    saved = app.conf.broker_url
    app.conf.broker_url = broker
    consumer = AgentConsumer(
        inprocess_wm,
        load_handler("tests.support.pipeline:echo_handler"),
        AgentInfo(id="inproc-agent-1"),
    )
    register_agent_task(app, Echo.type, consumer)
    set_wm(inprocess_wm)
    yield app
    set_wm(None)
    app.conf.broker_url = saved


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {
        "concurrency": 2,
        "perform_ping_check": False,
        "queues": QUEUES,
        "loglevel": "WARNING",
    }


@pytest.fixture
def wm_on_app(pg_url: str, inprocess_wm: WorkManager, celery_session_worker: Any) -> WorkManager:
    """The worker running, the tables empty."""
    truncate_all(Database(pg_url))
    set_wm(inprocess_wm)
    return inprocess_wm


def test_chain_runs_to_completed_in_an_inprocess_worker(wm_on_app: WorkManager) -> None:
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
    level = logger.level
    logger.setLevel(logging.INFO)  # the worker set its levels up when it started
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


def test_apply_chained_to_a_refused_check_does_nothing(wm_on_app: WorkManager) -> None:
    """The chain's apply gets its parent's answer: an order whose type does not
    auto-approve stays submitted, and apply, the check's child, runs nothing."""
    import re

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, keep = logging.getLogger("workmanager.tasks"), Keep()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(keep)
    try:
        order_id = wm_on_app.propose(Manual.type, {"n": 1})
        lease = wm_on_app.agent.checkout("inproc-manual-1", order_id=order_id)
        assert lease is not None
        wm_on_app.agent.submit(lease, {"echo": 1})  # submitted: the dispatcher sends the chain
        pattern = rf"apply of {order_id}: not approved \(parent (\S+)\)"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not re.search(pattern, "\n".join(lines)):
            time.sleep(0.1)
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    text = "\n".join(lines)
    checks = re.findall(rf"check_auto_approval of {order_id}: task (\S+), chained True", text)
    parents = re.findall(pattern, text)
    assert checks and parents == checks, text[-2000:]
    assert f"apply of {order_id}: task" not in text  # the apply step itself never ran
    assert _state(wm_on_app, order_id) == "submitted"
    events = [e["event"] for e in wm_on_app.queries.events(order_id) if not e["item_id"]]
    assert "approved" not in events and "applied" not in events


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
