"""Servers that freeze rather than go away (stopped with SIGSTOP, swapping, a network
that drops packets) accept a connection and never answer. Found by an outage pass:
``/readyz`` waited as long as the freeze and then said "ok"; a propose waited 60 s on a
frozen Redis broker, and enough of them held every API thread. Here a listening socket
that never answers stands for the frozen server."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.environment import clean_env
from workmanager import readiness
from workmanager.db.session import Database

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
    time.sleep(0.2)
    started = time.monotonic()
    again = readiness.check(ctx)
    assert time.monotonic() - started < readiness.TIMEOUT_SECONDS + 1.5
    assert "a probe still waits" in again["database"], again
    assert again["broker"].startswith("down: ") and again["redis"].startswith("down: ")
    assert readiness.check(wm.ctx)["database"] == "ok"  # another process's context: its own


def test_checks_at_the_same_time_each_probe(make_wm: Any) -> None:
    """Found in review: a probe under way in another request was taken for a frozen
    server, so two ``/readyz`` at once said healthy components were down (28 of 40
    pairs 503, every server up)."""
    wm = make_wm(db="sqlite", backend="database")
    answers: list[dict[str, str]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(readiness.check(wm.ctx))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 8
    assert all(a["database"] == "ok" for a in answers), answers


def test_an_announcement_to_a_frozen_redis_broker_gives_up_in_seconds(frozen: int) -> None:
    env = clean_env(WORK_MANAGER_BROKER_URL=f"redis://127.0.0.1:{frozen}/0")
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


def test_readyz_with_a_token_answers_while_the_database_is_frozen(
    make_wm: Any, frozen: int
) -> None:
    """Found by a frozen-server pass: a caller with a token waited as long as the freeze
    (51 s), its token being looked up in the frozen database after the bounded probes."""
    from fastapi.testclient import TestClient

    from workmanager.api import create_app
    from workmanager.services.tokens import TokenService

    wm = make_wm(db="sqlite", backend="database", auth="tokens")
    token, _ = TokenService(wm.ctx).create("ops", "view")
    client = TestClient(create_app(wm), headers={"Authorization": f"Bearer {token}"})
    assert client.get("/readyz").json()["checks"]["database"] == "ok"  # identified: reasons
    wm.ctx.db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{frozen}/x")
    answered: list[Any] = []
    asking = threading.Thread(target=lambda: answered.append(client.get("/readyz")), daemon=True)
    asking.start()
    asking.join(readiness.TIMEOUT_SECONDS + 5)
    assert answered, "no answer while the database is frozen"
    assert answered[0].status_code == 503 and answered[0].json()["checks"]["database"] == "down"


def test_a_new_connection_to_a_frozen_database_gives_up(frozen: int) -> None:
    """Found by a frozen-server pass: `workmanager serve`, `mcp` and workers started while
    PostgreSQL was frozen waited silently as long as the freeze; a new connection now
    gives up after libpq's ``connect_timeout`` (10 s unless the URL names one)."""
    from workmanager.db.session import CONNECT_TIMEOUT_SECONDS
    from workmanager.errors import Unavailable

    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{frozen}/x")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="database unavailable"):
        db.ping()
    assert time.monotonic() - started < CONNECT_TIMEOUT_SECONDS + 5
    with pytest.raises(Unavailable):  # the hot paths' own pool too
        db.raw.run(lambda conn: conn.execute("SELECT 1"))
    assert time.monotonic() - started < 2 * CONNECT_TIMEOUT_SECONDS + 10
