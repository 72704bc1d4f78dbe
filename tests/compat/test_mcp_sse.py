"""``workmanager mcp --transport sse`` (upstream serves MCP over HTTP+SSE) with a bearer
token, and CORS for a browser client from ``WORK_MANAGER_MCP_CORS_ORIGINS``."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client

from tests.api.conftest import BIN, base_env, free_port, truncate_work_tables
from tests.api.test_mcp import result

pytestmark = pytest.mark.postgres
ORIGIN = "https://console.example"


async def over_sse(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        sse_client(url, headers=headers) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        proposed = await session.call_tool(
            "work.propose", {"type": "test.simple", "payload": {}, "agentId": "sse-1"}
        )
        return result(proposed)


def test_mcp_over_sse_with_cors(api_db_url: str, tokens: dict[str, str]) -> None:
    truncate_work_tables(api_db_url)
    port = free_port()
    env = base_env(api_db_url, WORK_MANAGER_MCP_CORS_ORIGINS=ORIGIN)
    proc = subprocess.Popen(
        [
            str(BIN / "workmanager"),
            "--dispatcher",
            "none",
            "mcp",
            "--transport",
            "sse",
            "--port",
            str(port),
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(base + "/sse", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.status_code == 401  # no token, no stream
        preflight = httpx.options(
            base + "/sse",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        other = httpx.options(
            base + "/sse",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        seen = anyio.run(over_sse, base + "/sse", tokens["admin"])
        assert seen["success"] is True and seen["order"]["state"] == "queued"
        # upstream's address, as its MCP guide gives it to clients
        seen = anyio.run(over_sse, base + "/mcp/sse", tokens["admin"])
        assert seen["success"] is True and seen["items_count"] == 1
        sessions_are_their_openers(base, tokens)
    finally:
        proc.terminate()
        proc.wait(10)


def sessions_are_their_openers(base: str, tokens: dict[str, str]) -> None:
    """An SSE session is its opener's, as a streamable-HTTP one: another token posting to
    it (its id is in the stream only, but ids leak: logs, proxies) was taken, its answers
    sent down the opener's stream. Refused as a session that never was; one ended with
    its stream is gone."""
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with httpx.Client(base_url=base, timeout=10) as client:
        with client.stream("GET", "/sse", headers=admin) as stream:
            lines, endpoint = stream.iter_lines(), ""  # kept open: a closed one ends it
            while "session_id=" not in endpoint:
                endpoint = next(lines).removeprefix("data: ")
            foreign = client.post(endpoint, json=ping, headers=viewer)
            assert foreign.status_code == 404
            assert foreign.json()["error"] == {"code": "not_found", "message": "session not found"}
            # named as the SDK decodes it: session%5Fid is session_id (a review's bypass)
            encoded = endpoint.replace("session_id=", "session%5Fid=")
            assert client.post(encoded, json=ping, headers=viewer).status_code == 404
            twice = client.post(endpoint + "&session_id=" + "0" * 32, json=ping, headers=admin)
            assert twice.status_code == 404
            mine = client.post(endpoint, json=ping, headers=admin)
            assert mine.status_code == 202, mine.text
        deadline = time.monotonic() + 10  # the stream's end reaches the server
        while client.post(endpoint, json=ping, headers=admin).status_code != 404:
            assert time.monotonic() < deadline, "the ended session is still taken"
            time.sleep(0.1)
