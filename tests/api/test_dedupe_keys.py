"""A repeated dedupe key over HTTP and MCP (SPEC §13, "Dedupe keys"): a ``propose``-only token
that repeats (or guesses) a key learns the order's id and state, never its body; another type
or payload under the key is 422 ``dedupe_key_reused``."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.api.conftest import (
    PREFIX,
    Server,
    base_env,
    free_port,
    idem,
    mcp_http,
    truncate_work_tables,
)
from tests.api.test_mcp import result

SECRET = {"n": 1, "name": "the admin's secret"}


def post(server: Server, token: str, body: dict[str, Any]) -> httpx.Response:
    return server.client(token).post(f"{PREFIX}/propose", json=body, headers=idem())


def test_a_repeated_key_shows_the_order_by_scope(db_server: Server) -> None:
    body = {"type": "test.simple", "payload": SECRET, "meta": {"m": 1}, "dedupe_key": "k-1"}
    first = post(db_server, "admin", body)
    assert first.status_code == 201, first.text
    order = first.json()["order"]

    same = post(db_server, "proposer", body)  # propose only: id and state
    assert same.status_code == 200, same.text
    assert same.json() == {"order": {"id": order["id"], "state": "queued"}}

    viewer = post(db_server, "agent-a", body)  # propose + view: the whole order
    assert viewer.status_code == 200 and viewer.json()["order"]["payload"] == SECRET
    assert post(db_server, "admin", body).json()["order"]["meta"] == {"m": 1}

    for other in (
        {**body, "payload": {"n": 1}},  # a guessed key with another payload
        {**body, "type": "test.multi"},
    ):
        refused = post(db_server, "proposer", other)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "dedupe_key_reused"
        assert order["id"] not in refused.text and "secret" not in refused.text
    listed = db_server.client().get(f"{PREFIX}/orders").json()
    assert listed["meta"]["total"] == 1


async def mcp_proposals(url: str, token: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        seen = []
        for payload in (SECRET, {"n": 2}):
            args = {"type": "test.simple", "payload": payload, "dedupe_key": "k-mcp"}
            seen.append(result(await session.call_tool("work.propose", args)))
        return seen


def test_mcp_propose_follows_the_same_rule(api_db_url: str, tokens: dict[str, str]) -> None:
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
                httpx.post(url, json={}, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        created, _ = anyio.run(mcp_proposals, url, tokens["admin"])
        assert created["success"] and created["order"]["payload"] == SECRET
        same, other = anyio.run(mcp_proposals, url, tokens["proposer"])
        assert same == {
            "success": True,
            "order": {"id": created["order"]["id"], "state": "queued"},
        }
        assert other["success"] is False and other["code"] == "dedupe_key_reused"
    finally:
        proc.terminate()
        proc.wait(10)
