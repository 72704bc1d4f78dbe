"""Planning that ends the worker's process is tried once more, then recorded.

``plan()`` calling ``os._exit`` (or crashing the interpreter, or running out of memory)
ended the pool child; Celery requeued the proposal's message (``reject_on_worker_lost``)
and the next child planned it again, for ever, one lost child every few seconds, and the
order never existed. Now a message delivered again is noted before it plans again
(``OrderService.note_redelivery``); delivered a third time, it records the order
``failed`` under the producer's id, saying why, and plans no more. A second run that ends
well makes the order, with nothing of the first run in its history.
Real processes (``workmanager orders create``, ``celery -A tasks worker -P prefork``), on
the embedded broker and on a Redis of the test's own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.environment import ROOT, clean_env
from tests.support.own_redis import OwnRedis
from tests.support.waiting import wait_for

EXE = Path(sys.executable).with_name("workmanager")
WORKER = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "1",
          "--without-gossip", "--without-mingle"]  # fmt: skip


@pytest.fixture(params=["embedded", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "markers").mkdir()
    server = None
    if request.param == "redis":
        server = OwnRedis()
        server.start()
        request.node.own_redis = server
    broker = server.url if server else f"sqla+sqlite:///{tmp_path}/broker.db"
    env = clean_env(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{tmp_path}/wm.db",
        WORK_MANAGER_BROKER_URL=broker,
        WORK_MANAGER_METRICS_DRIVER="null",
        WORK_MANAGER_ORDER_TYPES="tests.support.lost_plan",
        WM_TEST_MARKERS=str(tmp_path / "markers"),
    )
    upgraded = subprocess.run([str(EXE), "db", "upgrade"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    yield env
    if server is not None:
        server.kill()


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(WORKER, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    yield proc
    _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def create(env: dict[str, str], tmp_path: Path, type: str) -> str:
    done = subprocess.run(
        [str(EXE), "orders", "create", "--type", type, "--payload", "{}", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"]).replace("-", "")


def order(tmp_path: Path, order_id: str) -> tuple[str, dict[str, object], int] | None:
    with closing(sqlite3.connect(tmp_path / "wm.db")) as db:
        row = db.execute(
            "SELECT state, last_error, (SELECT count(*) FROM work_items i"
            " WHERE i.order_id = o.id) FROM work_orders o WHERE replace(o.id, '-', '') = ?",
            (order_id,),
        ).fetchone()
    return None if row is None else (row[0], json.loads(row[1] or "{}"), row[2])


def runs(tmp_path: Path, type: str) -> int:
    return len(list((tmp_path / "markers").glob(f"plan-{type}-*")))


def test_planning_that_ends_its_process_stops_after_the_second_run(
    env: dict[str, str], worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    lost = create(env, tmp_path, "e2e.exits")
    wait_for(lambda: (order(tmp_path, lost) or ("",))[0] == "failed", timeout=90,
             what="the order recorded failed")  # fmt: skip
    time.sleep(4)  # a third delivery would have planned again by now
    assert runs(tmp_path, "e2e.exits") == 2
    state, error, items = order(tmp_path, lost) or ("", {}, -1)
    assert (state, items, error["code"], error["refused"]) == (
        "failed",
        0,
        "validation_failed",
        True,
    )
    assert error["details"][0]["validator"] == "process_lost"  # type: ignore[index]
    assert "process ended while planning" in str(error["message"]) + str(error["details"])

    # A run that ends well after a lost one makes the order: the record gives way.
    made = create(env, tmp_path, "e2e.exits_once")
    wait_for(lambda: (order(tmp_path, made) or ("",))[0] == "queued", timeout=90,
             what="the order planned by the second run")  # fmt: skip
    assert order(tmp_path, made) == ("queued", {}, 1)
    assert runs(tmp_path, "e2e.exits_once") == 2
    with closing(sqlite3.connect(tmp_path / "wm.db")) as db:
        sql = "SELECT event FROM work_events WHERE replace(order_id, '-', '') = ?"
        events = [e for (e,) in db.execute(sql, (made,))]
    assert events == ["proposed", "planned"]  # nothing of the lost run in its history
    assert worker.poll() is None  # the worker itself lives on


@pytest.mark.parametrize("env", ["redis"], indirect=True)  # a client kill drops them
def test_connections_dropped_while_planning_record_no_failure(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Found by an adversarial pass: the Redis transport gives back what a dropped
    connection held, the task still running, flagged ``redelivered``; two drops during one
    long plan() were counted as two dead workers and the proposal recorded ``failed``
    ("the worker's process ended while planning") while it went on to be planned. A
    redelivery waits for the planning another delivery holds, and counts nothing."""
    import redis

    server = request.node.own_redis

    command = [*WORKER[:-4], "-c", "3", *WORKER[-2:]]  # free slots for the redeliveries
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    request.addfinalizer(lambda: _stop(worker))
    made = create(env, tmp_path, "e2e.slow")
    wait_for(lambda: runs(tmp_path, "e2e.slow") >= 1, timeout=60, what="planning to start")
    admin = redis.Redis.from_url(server.url)
    try:
        for _ in range(2):
            time.sleep(2.5)
            admin.client_kill_filter(_type="normal", skipme=True)  # every worker connection
    finally:
        admin.close()
    wait_for(lambda: (order(tmp_path, made) or ("",))[0] == "queued", timeout=90,
             what="the order planned")  # fmt: skip
    time.sleep(5)  # a redelivery counted as a death would record it failed by now
    assert order(tmp_path, made) == ("queued", {}, 1)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "ended its worker process again" not in log, log[-3000:]
