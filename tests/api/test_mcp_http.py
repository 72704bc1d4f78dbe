"""The MCP streamable HTTP transport: a bearer token is required, and then tools work."""

from __future__ import annotations

import math
import subprocess
import time
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.api.conftest import base_env, free_port, mcp_http, truncate_work_tables
from tests.api.test_mcp import result

#: A client's first message of a session, and what it accepts (the streamable transport).
HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def tool_calls(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        proposed = result(
            await session.call_tool(
                "work.propose", {"type": "test.simple", "payload": {}, "agent_id": "h-1"}
            )
        )
        listed = result(await session.call_tool("work.list", {}))
    return {"propose": proposed, "list": listed}


def test_mcp_http_requires_a_token(api_db_url: str, tokens: dict[str, str]) -> None:
    truncate_work_tables(api_db_url)
    port = free_port()
    proc = subprocess.Popen(
        mcp_http(port),
        env=base_env(api_db_url),
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(url, json={}, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        bad = httpx.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
        seen = anyio.run(tool_calls, url, tokens["admin"])
        assert seen["propose"]["success"] is True
        assert seen["list"]["meta"]["total"] == 1
        viewer = anyio.run(tool_calls, url, tokens["viewer"])
        assert viewer["propose"] == {
            "success": False,
            "code": "forbidden",
            "error": "this token lacks the 'propose' scope",
            "details": {"required_scope": "propose", "principal": "viewer"},
        }
        # A session is its opener's: another token presenting its id, to call in it or
        # to end it, is told it is not found (any token could, a view-only one too).
        admin = {"Authorization": f"Bearer {tokens['admin']}", **ACCEPT}
        viewer = {"Authorization": f"Bearer {tokens['viewer']}", **ACCEPT}
        opened = httpx.post(url, json=HELLO, headers=admin, timeout=10)
        session_id = opened.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        for method, body in (("POST", ping), ("DELETE", None)):
            theirs = httpx.request(
                method, url, json=body, headers={**viewer, "Mcp-Session-Id": session_id}
            )
            assert theirs.status_code == 404, theirs.text
            assert theirs.json()["error"]["code"] == "not_found"
        mine = httpx.post(url, json=ping, headers={**admin, "Mcp-Session-Id": session_id})
        assert mine.status_code == 200, mine.text
        # a query a proxy adds is no session here (only SSE names one there)
        queried = httpx.post(url + "?session_id=abc", json=HELLO, headers=admin, timeout=10)
        assert queried.status_code == 200, queried.text
        # the viewer's own id after the admin's (the SDK reads the first), or an id no one
        # was seen opening: not found either
        own = httpx.post(url, json=HELLO, headers=viewer, timeout=10).headers["mcp-session-id"]
        twice = [*viewer.items(), ("Mcp-Session-Id", session_id), ("Mcp-Session-Id", own)]
        assert httpx.delete(url, headers=twice).status_code == 404
        made_up = {**admin, "Mcp-Session-Id": "0" * 32}
        assert httpx.post(url, json=ping, headers=made_up).json()["error"]["code"] == "not_found"
        ended = httpx.delete(url, headers={**admin, "Mcp-Session-Id": session_id})
        assert ended.status_code == 200, ended.text
        gone = httpx.post(url, json=ping, headers={**admin, "Mcp-Session-Id": session_id})
        assert gone.status_code == 404
        # MAX_BODY_BYTES (65536 here) holds for MCP as for the API, in the same envelope
        # (the SDK's own refusal is a plain-text 413 at 4 MiB), declared or chunked
        auth = {"Authorization": f"Bearer {tokens['admin']}", "Content-Type": "application/json"}
        big = b'{"jsonrpc": "2.0", "pad": "' + b"x" * 70_000 + b'"}'
        for body in (big, iter([big[:40_000], big[40_000:]])):
            r = httpx.post(url, content=body, headers=auth, timeout=10)
            assert r.status_code == 413, r.text[:200]
            assert r.json()["error"]["code"] == "payload_too_large"
            assert r.headers["x-request-id"]
        # upstream's addresses (its --transport=http was SSE there): a 404 that says where
        upstream = httpx.get(url + "/sse", headers=admin, timeout=5)
        assert upstream.status_code == 404
        assert "--transport sse" in upstream.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_one_token_cannot_fill_the_sessions_every_client_needs(make_wm, monkeypatch) -> None:
    """A token opening sessions it never ended filled the SDK's 10,000 in two minutes, and
    every client, of every token, got a bare 503 for new ones until they idled out 30
    minutes later (a load pass). Each principal holds at most its own share; past it the
    refusal is the envelope's 429 with ``Retry-After``; a session ended or idle frees one."""
    from starlette.testclient import TestClient

    from workmanager.mcp import build_server
    from workmanager.mcp import http as mcp_http_module
    from workmanager.services.tokens import TokenService

    monkeypatch.setattr(mcp_http_module.BearerGate, "MAX_SESSIONS_PER_PRINCIPAL", 3)
    wm = make_wm(auth="tokens")
    tokens = TokenService(wm.ctx)
    greedy, other = tokens.create("greedy", ["view"])[0], tokens.create("other", ["view"])[0]
    app = mcp_http_module.http_app(wm, build_server(wm, require_token=True))
    with TestClient(app, base_url="http://127.0.0.1:8001") as client:

        def open_one(token: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}", **ACCEPT}
            return client.post("/mcp", json=HELLO, headers=headers)

        opened = [open_one(greedy) for _ in range(3)]
        assert all(r.status_code == 200 for r in opened), [r.text for r in opened]
        refused = open_one(greedy)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        assert refused.json()["error"]["code"] == "rate_limited", refused.text
        assert open_one(other).status_code == 200  # another token is not shut out
        first = opened[0].headers["mcp-session-id"]
        ended = client.delete(
            "/mcp", headers={"Authorization": f"Bearer {greedy}", "Mcp-Session-Id": first}
        )
        assert ended.status_code == 200, ended.text
        assert open_one(greedy).status_code == 200  # the ended one's place
        monkeypatch.setattr(mcp_http_module, "SESSION_IDLE_SECONDS", 0)  # all idle now
        assert open_one(greedy).status_code == 200


def test_a_session_in_use_is_never_idle_and_an_sse_message_opens_none(monkeypatch) -> None:
    """A review of the cap: the gate timed a session from its last request's start, so a
    client's open GET stream (the SDK counts it as use) lost its session to the gate after
    30 minutes; and a message to an open SSE session was counted as opening one, refused
    once the principal held its share. The gate with a stand-in app and token check."""
    import asyncio

    from workmanager.mcp import http as gate_module
    from workmanager.services.tokens import Principal

    class Tokens:
        def authenticate(self, presented: str | None) -> Principal:
            return Principal(presented or "anonymous", None, frozenset({"view"}))

    release = asyncio.Event()
    opened = iter(f"s{n}".encode() for n in range(1000))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        named = dict(scope["headers"]).get(b"mcp-session-id")
        headers = [] if named else [(b"mcp-session-id", next(opened))]
        if scope["method"] == "GET":
            await release.wait()  # a stream held open
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def call(gate: Any, method: str, session: bytes | None = None, query: bytes = b"") -> int:
        headers = [(b"authorization", b"Bearer alice")]
        if session is not None:
            headers.append((b"mcp-session-id", session))
        scope = {"type": "http", "method": method, "headers": headers, "query_string": query}
        status: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        await gate(scope, receive, send)
        return status[0]

    async def main() -> None:
        gate = gate_module.BearerGate(app, Tokens())  # type: ignore[arg-type]
        assert await call(gate, "POST") == 200  # opens s0
        stream = asyncio.create_task(call(gate, "GET", b"s0"))
        await asyncio.sleep(0.05)
        monkeypatch.setattr(gate_module, "SESSION_IDLE_SECONDS", 0)  # idle time is over
        assert await call(gate, "POST", b"s0") == 200  # in use all along: still its own
        release.set()
        assert await stream == 200
        assert await call(gate, "POST", b"s0") == 404  # idle once the stream ended: gone
        monkeypatch.setattr(gate_module, "SESSION_IDLE_SECONDS", 1800)
        monkeypatch.setattr(gate_module.BearerGate, "MAX_SESSIONS_PER_PRINCIPAL", 1)
        sse = gate_module.BearerGate(app, Tokens(), sse=True)  # type: ignore[arg-type]
        sse._opened(b"abc", "alice", math.inf)  # an SSE stream open: the share is taken
        assert await call(sse, "POST", query=b"session_id=abc") == 200  # a message in it
        assert await call(sse, "POST") == 429  # a second session is over the share

    asyncio.run(main())
