"""A broker that does not take an announcement is one logged line, no traceback, and the
rest of a batch is not tried one by one (``workmanager mcp`` wrote a traceback per
announced item, 480 lines for one proposal, each after the publish's retries)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from celery import Celery

from tasks.dispatcher import CeleryDispatcher


def test_an_outage_is_one_line_per_announcement_batch(caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("outage", broker="redis://127.0.0.1:1/0")
    app.conf.broker_connection_timeout = 0.5
    app.conf.task_publish_retry = False
    caplog.set_level(logging.ERROR, logger="workmanager")
    items = [uuid.uuid4() for _ in range(5)]
    CeleryDispatcher(app).items_available("t.x", items)
    CeleryDispatcher(app).order_submitted(uuid.uuid4())
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info for r in lines] == [None, None, None]
    said = [r.getMessage() for r in lines]
    assert said[0].startswith(f"could not send workmanager.agents.t.x {{'item_id': '{items[0]}'}}")
    assert said[0].endswith("maintenance sends it again later")
    assert said[1] == "4 more announcements of t.x not sent"
    assert said[2].startswith("could not send workmanager.orders.check_auto_approval for ")
    assert "\n" not in "".join(said)


def test_beat_says_a_task_it_could_not_send_in_one_line(caplog: Any) -> None:
    """Found by an outage pass: each scheduled task beat could not send (the broker down)
    was logged with a stack and a traceback, ~160 lines, every period."""
    from celery.beat import Scheduler

    import tasks.logs  # noqa: F401  (installs the filter on celery.beat)

    app = Celery("beat-outage", broker="memory://")
    scheduler = Scheduler(app, lazy=True)
    entry = scheduler.Entry(name="sweep", task="workmanager.leases.sweep", app=app)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    scheduler.apply_async = refused  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="celery.beat"):
        scheduler.apply_entry(entry)
    (record,) = [r for r in caplog.records if r.name == "celery.beat"]
    said = record.getMessage()
    assert said == (
        "beat: a scheduled task could not be sent (ConnectionError: Error 111 connecting to"
        " 127.0.0.1:1. Connection refused.); sent again next time"
    )
    assert record.exc_info is None and "\n" not in said
