"""A task retried through an outage is said once in a while, not once per retry
(tasks/logs.py): during an outage every waiting task logged its retry, every time, for
as long as the database or the broker was away.

An in-process worker (``celery.contrib.testing.worker.start_worker``, what the
``celery_worker`` fixture of Celery's pytest plugin runs; pytest-celery's own fixture of
that name needs Docker) on a memory broker: the retries are Celery's own, logged by
Celery's tracer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.app import trace
from celery.contrib.testing.worker import start_worker

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


def _until(done: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the worker did not run the retries in time"
        time.sleep(0.02)


def test_outage_retries_are_said_once_a_while_and_others_each_time() -> None:
    celery_app = Celery("outage-retries", broker="memory://", backend="cache+memory://")
    (quiet,) = [f for f in trace.logger.filters if isinstance(f, QuietOutageRetries)]
    now = [1000.0]
    saved, quiet.throttle = quiet.throttle, Throttled(trace.logger, 30, clock=lambda: now[0])
    runs = {"outage": 0, "other": 0}

    @celery_app.task(bind=True, max_retries=5, default_retry_delay=0)
    def outage(self: Any) -> None:
        runs["outage"] += 1
        if runs["outage"] == 4:
            now[0] += 30  # the window passed: the next retry is said, with the count
        if runs["outage"] <= 5:
            raise self.retry(exc=Unavailable("database down\nconnection refused"))

    @celery_app.task(bind=True, max_retries=2, default_retry_delay=0)
    def other(self: Any) -> None:
        runs["other"] += 1
        if runs["other"] <= 2:
            raise self.retry(exc=ValueError("not an outage"))

    lines, level = _Lines(), trace.logger.level
    trace.logger.addHandler(lines)
    trace.logger.setLevel(logging.INFO)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False):
            outage.delay()
            other.delay()
            _until(lambda: runs == {"outage": 6, "other": 3})
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
