"""``/readyz`` tells anyone which dependency is down, and only a caller with a valid token
why (issue 11, item 10): driver messages name hosts, ports and users."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import PREFIX, free_port, start_server

pytestmark = pytest.mark.postgres


def test_readyz_reasons_only_with_a_token(api_db_url: str, tokens: dict[str, str]) -> None:
    closed = free_port()  # nothing listens there: Redis is down for this server
    server = start_server(api_db_url, tokens, "redis", f"redis://127.0.0.1:{closed}/0")
    try:
        anonymous = server.client(None).get("/readyz")
        assert anonymous.status_code == 503 and anonymous.headers["Retry-After"]
        body: dict[str, Any] = anonymous.json()
        assert body["checks"] == {
            "database": "ok",
            "broker": "ok",
            "redis": "down",
            "deployment": "ok",
        }, body
        assert str(closed) not in anonymous.text and "Error" not in anonymous.text
        forged = server.client("not-a-token").get("/readyz")
        assert forged.json()["checks"]["redis"] == "down"

        viewer = server.client("viewer").get("/readyz")  # any scope will do
        assert viewer.status_code == 503
        reason = viewer.json()["checks"]["redis"]
        assert reason.startswith("down: ") and str(closed) in reason, reason
        # HEAD, as load balancers probe: the same status, no body
        head = server.client(None).head("/readyz")
        assert head.status_code == 503 and head.content == b""
        live = server.client(None).head("/healthz")
        assert live.status_code == 200 and live.content == b""
    finally:
        server.close()


def test_readyz_opens_the_embedded_broker(
    api_db_url: str, tokens: dict[str, str], tmp_path: Any
) -> None:
    """An audit pass found ``/readyz`` and ``ops check`` saying the embedded broker was
    "ok" for a server started from another directory than ``db upgrade`` ran in, while
    every message it sent failed ("unable to open database file"): kombu's SQLAlchemy
    transport connects lazily. The broker's database is opened."""
    home = tmp_path / "var"
    url = f"sqla+sqlite:///{home}/broker.db"
    server = start_server(api_db_url, tokens, "database", None, WORK_MANAGER_BROKER_URL=url)
    try:
        missing = server.client("viewer").get("/readyz")
        assert missing.status_code == 503
        reason = missing.json()["checks"]["broker"]
        assert reason.startswith("down: [unavailable] no embedded broker at"), reason
        assert "workmanager db upgrade" in reason
        home.mkdir()  # what `db upgrade` makes
        found = server.client("viewer").get("/readyz")
        assert found.status_code == 200, found.json()
        assert found.json()["checks"]["broker"] == "ok"
    finally:
        server.close()


def test_readyz_answers_while_every_request_thread_waits_on_the_database(
    api_db_url: str, tokens: dict[str, str]
) -> None:
    """``/readyz`` ran on the requests' thread pool: under load with the database frozen
    every thread waited on it, and the probe that would say so (in 2 s) waited behind
    them, 30 s and more (a load pass). Here 48 checkouts wait on a table lock."""
    import concurrent.futures
    import time

    import httpx
    import psycopg

    server = start_server(api_db_url, tokens, "database", None)
    locker = psycopg.connect(api_db_url.replace("+psycopg", ""))
    try:
        locker.execute("LOCK TABLE work_items IN ACCESS EXCLUSIVE MODE")  # held till rollback
        url = f"{server.url}{PREFIX}/checkout"

        def checkout(n: int) -> int:
            headers = {"Authorization": f"Bearer {tokens['admin']}", "X-Agent-ID": f"w{n}"}
            return httpx.post(url, headers=headers, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            waiting = [pool.submit(checkout, n) for n in range(48)]
            time.sleep(1.5)  # every request thread is taken by now
            try:  # an answer at all while they wait (the probes' own bound is 2 s each)
                ready = httpx.get(f"{server.url}/readyz", timeout=15)
            finally:
                locker.rollback()
            statuses = [f.result() for f in waiting]
        assert ready.status_code in (200, 503), ready.text
        assert set(statuses) <= {409, 503}, statuses
    finally:
        locker.close()
        server.close()
