"""Servers that freeze rather than go away (stopped with SIGSTOP, swapping, a network
that drops packets) accept a connection and never answer. Found by an outage pass:
``/readyz`` waited as long as the freeze and then said "ok"; a propose waited 60 s on a
frozen Redis broker, and enough of them held every API thread. Here a listening socket
that never answers stands for the frozen server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from workmanager.db.session import Database
from workmanager.services import readiness

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def frozen() -> Iterator[int]:
    """The port of a server that takes connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def test_readyz_says_a_frozen_server_is_down_within_its_timeout(make_wm: Any, frozen: int) -> None:
    wm = make_wm(db="sqlite", backend="database")
    url = f"127.0.0.1:{frozen}"
    settings = replace(
        wm.settings,
        broker_url=f"redis://{url}/0",
        lease_backend="redis",
        redis_url=f"redis://{url}/0",
    )
    ctx = replace(wm.ctx, settings=settings, db=Database(f"postgresql+psycopg://postgres@{url}/x"))
    started = time.monotonic()
    checks = readiness.check(ctx)
    took = time.monotonic() - started
    assert took < readiness.TIMEOUT_SECONDS + 1.5, took
    assert set(checks) == {"database", "broker", "redis"}
    assert all(v.startswith("down: ") for v in checks.values()), checks
    # a probe still waiting (the database's: no timeout of its own) is not started again
    started = time.monotonic()
    again = readiness.check(ctx)
    assert time.monotonic() - started < readiness.TIMEOUT_SECONDS + 1.5
    assert "a probe still waits" in again["database"], again
    assert again["broker"].startswith("down: ") and again["redis"].startswith("down: ")
    assert readiness.check(wm.ctx)["database"] == "ok"  # another process's context: its own


def test_an_announcement_to_a_frozen_redis_broker_gives_up_in_seconds(frozen: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env |= {"PYTHONPATH": str(ROOT), "WORK_MANAGER_BROKER_URL": f"redis://127.0.0.1:{frozen}/0"}
    code = (
        "import time, uuid\n"
        "from tasks.app import app\n"
        "from tasks.dispatcher import CeleryDispatcher\n"
        "started = time.monotonic()\n"
        "CeleryDispatcher(app).order_approved(uuid.uuid4())\n"
        "print(round(time.monotonic() - started, 1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 15, done.stdout  # two tries of the 5 s socket timeout
    [line] = [x for x in done.stderr.splitlines() if "could not send" in x]
    assert "maintenance sends it again later" in line and "Traceback" not in done.stderr
