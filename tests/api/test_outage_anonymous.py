"""The database down while a caller is still unknown: every gate answers 503
``unavailable`` in the envelope, and none gives the driver's text (hosts, ports, users:
docs/security.md, "see the driver's error text (needs any valid token)") to a caller
that presented a made-up token, a made-up console cookie or no credentials at all."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from workmanager import Settings, WorkManager
from workmanager.api import create_app
from workmanager.api.guard import WorkOrderOnlyMiddleware
from workmanager.mcp.http import BearerGate
from workmanager.services.tokens import TokenService

#: What the driver says about a refused connection, none of which an anonymous caller sees.
DRIVER_WORDS = ("127.0.0.1", "port 1", "refused", "psycopg", "Traceback")


@pytest.fixture(scope="module")
def wm() -> Iterator[WorkManager]:
    """A deployment whose PostgreSQL refuses connections (nothing listens on port 1)."""
    settings = Settings(
        database_url="postgresql+psycopg://wm:s3cret@127.0.0.1:1/nowhere", metrics_driver="null"
    )
    made = WorkManager(settings)
    yield made
    made.close()


def told_nothing(answer: Any) -> None:
    assert answer.status_code == 503, answer.text[:300]
    assert not [w for w in DRIVER_WORDS if w in answer.text], answer.text[:500]
    assert "s3cret" not in answer.text


def test_the_api_with_a_made_up_token(wm: WorkManager) -> None:
    client = TestClient(create_app(wm))
    answer = client.get("/agent/work/orders", headers={"Authorization": "Bearer nonsense"})
    told_nothing(answer)
    assert answer.json()["error"]["code"] == "unavailable" and answer.headers["Retry-After"]


def test_the_console_sign_in_and_a_made_up_cookie(wm: WorkManager) -> None:
    client = TestClient(create_app(wm), follow_redirects=False)
    page = client.get("/ui/login")
    match = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert match
    told_nothing(client.post("/ui/login", data={"token": "nonsense", "csrf": match.group(1)}))
    client.cookies.set("wm_console", "made-up", path="/ui")
    told_nothing(client.get("/ui/queue"))


def test_the_mcp_gate_with_a_made_up_token(wm: WorkManager) -> None:
    """The gate's 503 named an auth scheme (``WWW-Authenticate``, a 401's header) and no
    ``Retry-After`` (a same-mistake-every-surface pass): now the API's 503."""
    inner = Starlette(routes=[Route("/mcp", lambda r: PlainTextResponse("ok"), methods=["POST"])])
    client = TestClient(BearerGate(inner, TokenService(wm.ctx)))
    answer = client.post("/mcp", json={}, headers={"Authorization": "Bearer nonsense"})
    told_nothing(answer)
    assert answer.json()["error"]["code"] == "unavailable"
    assert answer.headers["Retry-After"] == "5" and "www-authenticate" not in answer.headers


def test_the_work_order_only_middleware(wm: WorkManager) -> None:
    """It answered a bare 500 (only its 403 was caught); now the 503 envelope."""
    inner = Starlette(routes=[Route("/c", lambda r: PlainTextResponse("ok"), methods=["POST"])])
    client = TestClient(WorkOrderOnlyMiddleware(inner, wm))
    answer = client.post("/c", headers={"X-Work-Order-ID": "6f1c5a52-8f0e-4d5e-9d4c-1a2b3c4d5e6f"})
    told_nothing(answer)
    assert answer.json()["error"]["code"] == "unavailable" and answer.headers["Retry-After"]


def test_an_outage_is_logged_once_in_a_while_not_per_request(
    wm: WorkManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request failing alike wrote two warnings each (535 a second under load), the
    driver's text split over two lines: the reason and the 503 are said once in a while,
    each on one line, naming the request."""
    from workmanager import saying
    from workmanager.services import tokens

    for throttled in (tokens._outage, saying._outages):
        throttled._last.clear()
    client = TestClient(create_app(wm))
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            answer = client.get("/agent/work/orders", headers={"Authorization": "Bearer x"})
            assert answer.status_code == 503
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, lines
    reason, refused = lines
    assert reason.startswith("authentication could not read the tokens: ") and "\n" not in reason
    assert refused.startswith("GET /agent/work/orders answered 503 [unavailable]: ")


def test_the_library_says_an_outage_in_one_line(wm: WorkManager) -> None:
    """A same-mistake-every-surface pass: PostgreSQL's refusal kept the driver's second
    line ("\\n\\tIs the server running on that host…") in the library's exceptions, MCP
    results and Celery's retry lines; the CLI and other tools flattened it."""
    from workmanager.errors import Unavailable

    calls = {
        "approve": lambda: wm.approve("6f1c5a52-8f0e-4d5e-9d4c-1a2b3c4d5e6f"),
        "checkout": lambda: wm.agent.checkout("agent-1"),
        "read": lambda: wm.queries.order("6f1c5a52-8f0e-4d5e-9d4c-1a2b3c4d5e6f"),
        "ping": wm.db.ping,
    }
    for name, call in calls.items():
        with pytest.raises(Unavailable) as down:
            call()
        assert "\n" not in down.value.message and "\t" not in down.value.message, (name, down)
