"""``approve?wait=`` holds a server thread while it polls: the waiters are bounded
(``WORK_MANAGER_APPROVE_WAIT_MAX_WAITERS``), and one past the bound is 503 ``unavailable``
with ``Retry-After`` before anything is approved (issue 11)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.api.conftest import PREFIX, free_port
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.api import create_app

pytestmark = pytest.mark.postgres


@pytest.fixture
def one_waiter(make_wm: Any) -> Iterator[tuple[WorkManager, str]]:
    """A real uvicorn server on PostgreSQL with room for one waiter. Its dispatcher records
    and applies nothing, so an approved order stays ``approved`` and a waiter waits."""
    wm = make_wm(
        db="postgres",
        backend="database",
        registry=Registry([Simple()]),
        auth="none",
        idempotency_enforce_on=(),
        approve_wait_max_waiters=1,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(wm), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield wm, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def submitted(wm: WorkManager) -> uuid.UUID:
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("waiter-agent", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    return order_id


def state(wm: WorkManager, order_id: uuid.UUID) -> str:
    return str(wm.queries.order(order_id)["state"])


def test_waiters_past_the_bound_are_503_and_approve_nothing(
    one_waiter: tuple[WorkManager, str],
) -> None:
    wm, url = one_waiter
    first, second = submitted(wm), submitted(wm)
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{url}{PREFIX}/orders/{first}/approve?wait=3", timeout=30)
        )
    )
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while state(wm, first) != "approved":  # approved: the first request is now waiting
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = httpx.post(f"{url}{PREFIX}/orders/{second}/approve?wait=3", timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        error = refused.json()["error"]
        assert error["code"] == "unavailable" and error["details"] == {"max_waiters": 1}
        assert state(wm, second) == "submitted"  # refused before approving: nothing changed
        # Without wait nothing is held: served at once.
        plain = httpx.post(f"{url}{PREFIX}/orders/{second}/approve", timeout=30)
        assert plain.status_code == 202, plain.text
    finally:
        waiting.join(30)
    assert [a.status_code for a in answers] == [202]  # waited its 3 s, the order unapplied
    # The place is free again once the waiter answered.
    third = submitted(wm)
    again = httpx.post(f"{url}{PREFIX}/orders/{third}/approve?wait=0.1", timeout=30)
    assert again.status_code == 202 and state(wm, third) == "approved", again.text


def test_a_waiting_approval_is_answered_when_the_server_stops(
    api_db_url: str, tokens: dict[str, str]
) -> None:
    """SIGTERM while ``approve?wait=`` waited: the waiter outlived the shutdown grace and
    was cut off with a plain-text 500 (its key "in flight" for minutes) though the
    approval had committed. The stop answers it at once: 202 with the order as it stands."""
    import signal
    import subprocess

    from tests.api.conftest import (
        BIN,
        base_env,
        checkout,
        lease_headers,
        propose,
        truncate_work_tables,
    )

    truncate_work_tables(api_db_url)
    port = free_port()
    env = base_env(api_db_url, WORK_MANAGER_API_SHUTDOWN_GRACE_SECONDS="20")
    args = [str(BIN / "workmanager"), "serve", "--port", str(port), "--dispatcher", "none"]
    proc = subprocess.Popen(args, env=env)  # nothing applies: the order stays approved
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {tokens['admin']}"}
        with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
            order = propose(client)
            item = checkout(client, order["id"])
            result = {"result": {"answer": 1}}
            submit = f"{PREFIX}/items/{item['id']}/submit"
            submitted = client.post(submit, json=result, headers=lease_headers(item))
            assert submitted.status_code == 202, submitted.text
            answers: list[httpx.Response] = []
            approve = f"{PREFIX}/orders/{order['id']}/approve"
            key = {"X-Idempotency-Key": "stop-1"}

            def wait_for_the_apply() -> None:
                answers.append(client.post(approve, params={"wait": 60}, headers=key))

            waiter = threading.Thread(target=wait_for_the_apply)
            waiter.start()
            time.sleep(1.0)  # the approval waits for an apply nobody runs
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            waiter.join(30)
        assert answers and answers[0].status_code == 202, answers and answers[0].text
        assert answers[0].json()["order"]["state"] == "approved"
        assert time.monotonic() - stopped_at < 10  # not the 20 s grace, not the 60 s wait
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
