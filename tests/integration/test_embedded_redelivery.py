"""The embedded default loses no proposal to a killed worker (``tasks/embedded_transport``).

A control worker SIGKILLed while it plans an order held the proposal's message,
unacknowledged (``acks_late``); kombu's SQLAlchemy transport had hidden it for good, so
the order the producer was given the id of never existed. Now the message comes back
after ``WORK_MANAGER_BROKER_VISIBILITY_TIMEOUT_SECONDS`` and the next worker creates the
order, once. Real processes: ``workmanager orders create``, ``celery -A tasks worker``, on
SQLite files (the embedded default)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.environment import clean_env

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("workmanager")
VISIBILITY = 3


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "markers").mkdir()
    return clean_env(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{tmp_path}/wm.db",
        WORK_MANAGER_BROKER_URL=f"sqla+sqlite:///{tmp_path}/broker.db",
        WORK_MANAGER_METRICS_DRIVER="null",
        WORK_MANAGER_ORDER_TYPES="tests.support.slow_plan",
        WORK_MANAGER_BROKER_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY),
        WM_TEST_MARKERS=str(tmp_path / "markers"),
    )


Worker = subprocess.Popen[bytes]
WORKER = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "threads", "-c", "1",
          "--without-gossip", "--without-mingle"]  # fmt: skip


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    started: list[Worker] = []

    def start(name: str) -> Worker:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [*WORKER, "-n", f"{name}@%h"], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def wait_for(predicate: Callable[[], object], seconds: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))
    raise AssertionError(f"timed out after {seconds}s waiting for {what}\n{logs}")


def orders(tmp_path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(tmp_path / "wm.db")) as db:
        return db.execute("SELECT id, state FROM work_orders").fetchall()


def test_a_proposal_held_by_a_killed_worker_becomes_its_order_once(
    env: dict[str, str], workers: Callable[[str], Worker], tmp_path: Path
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EXE), *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    assert cli("db", "upgrade").returncode == 0
    markers = tmp_path / "markers"
    first = workers("first")
    created = cli("orders", "create", "--type", "e2e.slowplan", "--payload", "{}", "--json")
    assert created.returncode == 0, created.stderr
    order_id = json.loads(created.stdout)["id"]
    wait_for(lambda: list(markers.glob("plan-start-*")), 60, "the first worker to plan", tmp_path)
    os.killpg(first.pid, signal.SIGKILL)  # mid-plan: the proposal's message unacknowledged
    first.wait(timeout=20)
    assert orders(tmp_path) == []  # the plan's transaction died with it
    (markers / "go").touch()
    workers("second")
    wait_for(lambda: orders(tmp_path), VISIBILITY + 60, "the order, from the redelivery", tmp_path)
    time.sleep(VISIBILITY + 2)  # acknowledged now: no second delivery makes a second order
    [(stored, state)] = orders(tmp_path)
    assert stored.replace("-", "") == order_id.replace("-", "") and state == "queued"
