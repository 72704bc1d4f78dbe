"""A client that starts a request and trickles its body (slowloris) held the server's
memory for as long as it liked: the body is read whole before any route runs. It now has
``WORK_MANAGER_API_BODY_TIMEOUT_SECONDS`` to arrive, then gets 408 ``request_timeout``
and the connection is closed. The middleware is driven here as the ASGI server drives it."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from workmanager.surface.middleware import RequestContextMiddleware


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no route runs for a body that never arrived")


def run(receive_chunks: list[bytes], hang: bool, timeout: float) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    middleware = RequestContextMiddleware(
        never_called, max_body_bytes=1_000_000, max_json_depth=64, body_timeout=timeout
    )
    chunks = list(receive_chunks)

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
        if hang:
            await asyncio.sleep(3600)  # the client sends nothing more
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/agent/work/propose", "headers": []}
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), 10))
    return sent


def test_a_body_that_stops_arriving_is_a_408_in_time() -> None:
    sent = run([b'{"type": "x", ', b'"payload"'], hang=True, timeout=0.3)
    start, body = sent
    assert start["status"] == 408
    headers = dict(start["headers"])
    assert headers[b"connection"] == b"close" and b"x-request-id" in headers
    error = json.loads(body["body"])["error"]
    assert error["code"] == "request_timeout" and error["details"] == {"timeout_seconds": 0.3}


def test_a_body_that_arrives_is_read_as_before() -> None:
    """In time, the route runs (here it raises, which the middleware turns into its 500:
    the body was read and handed on)."""
    sent = run([b'{"a": 1}'], hang=False, timeout=5)
    assert sent[0]["status"] == 500


def test_a_client_gone_before_its_body_arrived_is_not_acted_on() -> None:
    """Found by a pass at the HTTP protocol's level: the part of the body that arrived was
    handed on as the whole, so a checkout cut short leased an item of any type to an agent
    gone, and a propose short of its declared length made its order. Nothing runs and
    nothing is answered (no one is there)."""
    sent: list[dict[str, Any]] = []
    middleware = RequestContextMiddleware(
        never_called, max_body_bytes=1_000_000, max_json_depth=64, body_timeout=5
    )
    messages = [{"type": "http.request", "body": b'{"type": "x"', "more_body": True}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/agent/work/propose", "headers": []}
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), 10))
    assert sent == []


def test_the_path_of_a_client_gone_is_logged_on_one_short_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pass at what a hostile caller costs the operator: before authentication, a path
    with ``%0A`` in it (decoded) forged a line of the server's own in its log, and a path
    of 60 KB wrote 60 KB a connection. The path is one line, escaped and cut."""
    middleware = RequestContextMiddleware(
        never_called, max_body_bytes=1_000, max_json_depth=64, body_timeout=5
    )

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("no one is there to answer")

    forged = "\n[2026-12-08 00:40:00,000: WARNING] workmanager.agent: order failed \u202e"
    path = "/agent/work/propose" + forged + "x" * 60_000
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    with caplog.at_level(logging.INFO, logger="workmanager.api"):
        asyncio.run(asyncio.wait_for(middleware(scope, receive, send), 10))
    (said,) = [r.getMessage() for r in caplog.records if "went before" in r.getMessage()]
    assert "\n" not in said and "\u202e" not in said and "\\u202e" in said
    assert len(said) < 700 and "/agent/work/propose [2026-12-08" in said


def test_an_encoded_slash_in_the_path_is_no_route() -> None:
    """``/orders/<id>%2Freject`` reached reject (Starlette decodes it to a separator),
    past a proxy's rule on the raw path: no route or id holds a slash."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for path, raw in (
        ("/agent/work/orders/x/reject", b"/agent/work/orders/x%2Freject"),
        ("/ui/orders/x/reject", b"/ui/orders/x%2Freject"),  # the console's forms too
        ("/ui/orders/x", b"/ui%2forders/x"),
    ):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": raw, "headers": []}
        console = RequestContextMiddleware(
            never_called, max_body_bytes=1000, max_json_depth=64, form_prefix="/ui/"
        )
        asyncio.run(console(scope, receive, send))
        assert sent[0]["status"] == 404, raw
        assert json.loads(sent[1]["body"])["error"]["code"] == "not_found"
