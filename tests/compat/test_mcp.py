"""Upstream's MCP tests (WorkManagerToolsTest, PartialSubmissionsMcpTest, GlobalCheckoutTest,
WorkListQueryBuilderTest) over a real MCP client session (stdio), with upstream's camelCase
argument names."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.api.conftest import BIN, base_env, truncate_work_tables
from tests.api.test_mcp import result

pytestmark = pytest.mark.postgres


async def session_run(env: dict[str, str]) -> dict[str, Any]:
    params = StdioServerParameters(
        command=str(BIN / "workmanager"),
        args=["--dispatcher", "none", "mcp", "--transport", "stdio"],
        env=env,
    )
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(name: str, **args: Any) -> dict[str, Any]:
            return result(await session.call_tool(name, args))

        key = uuid.uuid4().hex
        seen["propose"] = await call(
            "work.propose", type="test.parts", payload={}, idempotencyKey=key, agentId="mcp-1"
        )
        seen["propose_again"] = await call(
            "work.propose", type="test.parts", payload={}, idempotencyKey=key, agentId="mcp-1"
        )
        order_id = seen["propose"]["order"]["id"]
        for n in range(3):
            await call("work.propose", type="test.simple", payload={"n": n}, agentId="mcp-1")
        seen["unknown"] = await call("work.propose", type="test.simple", payload={}, colour="red")
        seen["both"] = await call("work.get", orderId=order_id, order_id=order_id)
        seen["wrong_type"] = await call("work.approve", orderId=order_id, wait="soon")
        seen["missing_arg"] = await call("work.approve")
        leased = await call("work.checkout", orderId=order_id, agentId="mcp-1", minPriority=0)
        seen["checkout"] = leased
        item_id = leased["item"]["id"]
        token = leased["item"]["lease_token"]
        lease = {"itemId": item_id, "leaseToken": token, "agentId": "mcp-1"}
        seen["part"] = await call("work.submit_part", partKey="a", payload={"v": 1}, **lease)
        seen["bad_part"] = await call("work.submit_part", partKey="b", payload=[1], **lease)
        seen["invalid_part"] = await call(
            "work.submit_part", partKey="a", seq=3, payload={"v": "x"}, **lease
        )
        seen["rejected"] = await call("work.list_parts", itemId=item_id, status="rejected")
        await call("work.submit_part", partKey="b", payload={"x": 1}, **lease)
        seen["finalize"] = await call("work.finalize", mode="strict", **lease)
        seen["list"] = await call("work.list", state="queued")
        seen["list_filter"] = await call(
            "work.list", filter={"type": "test.simple"}, page={"size": 2}, sort="-created_at"
        )
        seen["get"] = await call("work.get", orderId=order_id)
        seen["logs"] = await call("work.logs", orderId=order_id, limit=5)
        seen["logs_none"] = await call("work.logs")
        seen["reject"] = await call(
            "work.reject",
            orderId=order_id,
            errors=[{"code": "redo", "message": "again"}],
            allowRework=True,
        )
    return seen


def test_an_upstream_mcp_client_with_camel_case_arguments(api_db_url: str) -> None:
    truncate_work_tables(api_db_url)
    seen = anyio.run(session_run, base_env(api_db_url))
    assert seen["propose"]["success"] is True
    # idempotencyKey is honoured, not dropped: the same order, replayed.
    assert seen["propose_again"]["order"]["id"] == seen["propose"]["order"]["id"]
    assert seen["propose_again"]["replayed"] is True
    # Unknown arguments and wrong types are refused in the project's envelope.
    unknown = seen["unknown"]
    assert unknown["success"] is False and unknown["code"] == "validation_failed"
    assert [d["path"] for d in unknown["details"]] == ["colour"]
    assert seen["both"]["code"] == "validation_failed"
    assert seen["wrong_type"]["success"] is False
    assert seen["wrong_type"]["code"] == "validation_failed" and seen["wrong_type"]["details"]
    assert seen["missing_arg"]["success"] is False
    assert seen["missing_arg"]["code"] == "validation_failed"
    assert seen["checkout"]["success"] is True
    part = seen["part"]
    assert part["success"] is True and part["item_parts_state"]["a"]["status"] == "validated"
    assert seen["bad_part"]["code"] == "validation_failed"
    assert seen["invalid_part"]["code"] == "validation_failed"
    (rejected,) = seen["rejected"]["parts"]
    assert rejected["seq"] == 3 and rejected["status"] == "rejected"
    assert seen["finalize"]["success"] is True and seen["finalize"]["item"]["state"] == "submitted"
    # work.list: upstream's arguments, its default page size (20) and its answer keys.
    listed = seen["list"]
    assert listed["meta"]["per_page"] == 20 and listed["count"] == 3
    assert {o["state"] for o in listed["orders"]} == {"queued"}
    narrowed = seen["list_filter"]
    assert narrowed["count"] == 2 and narrowed["meta"]["total"] == 3
    assert [o["payload"]["n"] for o in narrowed["orders"]] == [2, 1]
    got = seen["get"]
    assert got["recent_events"] and got["recent_events"][0]["event"] == "submitted"
    assert len(got["items"]) == 1
    assert len(seen["logs"]["events"]) == 5
    assert seen["logs_none"]["code"] == "validation_failed"
    assert seen["reject"]["success"] is True and seen["reject"]["order"]["state"] == "queued"


async def tokenless_run(env: dict[str, str]) -> dict[str, Any]:
    """An upstream MCP client: camelCase arguments and no ``leaseToken`` at all."""
    params = StdioServerParameters(
        command=str(BIN / "workmanager"),
        args=["--dispatcher", "none", "mcp", "--transport", "stdio"],
        env=env,
    )
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(name: str, **args: Any) -> dict[str, Any]:
            return result(await session.call_tool(name, args))

        order_id = (await call("work.propose", type="test.parts", payload={}))["order"]["id"]
        leased = await call("work.checkout", orderId=order_id, agentId="mcp-u1")
        seen["checkout"] = leased
        item = {"itemId": leased["item"]["id"]}
        seen["heartbeat"] = await call("work.heartbeat", agentId="mcp-u1", **item)
        seen["other_heartbeat"] = await call("work.heartbeat", agentId="mcp-u2", **item)
        seen["forged"] = await call(
            "work.heartbeat", agentId="mcp-u1", leaseToken="1.forged", **item
        )
        for key, payload in (("a", {"v": 1}), ("b", {"x": 1})):
            seen[f"part_{key}"] = await call(
                "work.submit_part", agentId="mcp-u1", partKey=key, payload=payload, **item
            )
        seen["finalize"] = await call("work.finalize", agentId="mcp-u1", mode="strict", **item)
        second = (await call("work.propose", type="test.simple", payload={}))["order"]["id"]
        leased = await call("work.checkout", orderId=second, agentId="mcp-u1")
        item = {"itemId": leased["item"]["id"]}
        seen["release"] = await call("work.release", agentId="mcp-u1", **item)
    return seen


def test_an_upstream_mcp_client_without_lease_tokens(api_db_url: str) -> None:
    """With ``WORK_MANAGER_LEASE_TOKEN_REQUIRED=false`` the lease tools act on the calling
    agent's current lease when no ``leaseToken`` is sent (upstream's MCP tools take none);
    another agent is refused, and a token that is sent is still checked."""
    truncate_work_tables(api_db_url)
    env = base_env(api_db_url, WORK_MANAGER_LEASE_TOKEN_REQUIRED="false")
    seen = anyio.run(tokenless_run, env)
    assert seen["checkout"]["success"] is True
    assert seen["heartbeat"]["success"] is True, seen["heartbeat"]
    assert seen["other_heartbeat"]["success"] is False
    assert seen["other_heartbeat"]["code"] == "lease_conflict"
    assert seen["forged"]["code"] == "lease_conflict"
    assert seen["part_a"]["success"] is True and seen["part_b"]["success"] is True
    assert seen["part_b"]["item_parts_state"]["b"]["status"] == "validated"
    finalized = seen["finalize"]
    assert finalized["success"] is True and finalized["item"]["state"] == "submitted", finalized
    assert finalized["item"]["assembled_result"] == {"a": {"v": 1}, "b": {"x": 1}}
    assert seen["release"]["success"] is True and seen["release"]["item"]["state"] == "queued"
