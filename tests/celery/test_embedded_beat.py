"""``celery -A tasks worker -B``: the beat forked inside the worker. It inherited the
worker's pooled PostgreSQL connections, and the two processes interleaved statements on
them ("another command is already in progress", "connection socket closed", tracebacks at
every start; found by a zombie-agent pass). A forked child now starts with empty pools
(``workmanager/db/session.py``)."""

from __future__ import annotations

import sys

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_worker_with_its_own_beat_shares_no_connection_with_it(make_stack) -> None:
    stack = make_stack(sweep_interval_seconds="1")
    command = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-B", "-P", "threads",
               "-c", "2", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
               "-s", str(stack.tmp / "beat-schedule")]  # fmt: skip
    stack.start("worker-b", command)
    stack.wait_for(
        lambda: stack.log("worker-b").count("workmanager.leases.sweep") >= 8,
        60,
        "four sweeps sent by the beat and run by the worker",
    )
    log = stack.log("worker-b")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
