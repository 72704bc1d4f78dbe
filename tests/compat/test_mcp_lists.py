"""Upstream's Feature/Mcp/WorkListQueryBuilderTest and Feature/Mcp/GlobalCheckoutTest over a
real MCP client session (stdio), with upstream's camelCase arguments: one session per
test, its state reset between scenarios (upstream's RefreshDatabase), on a server started
with upstream's concurrency limits (its tests set them with ``config([...])``):
``WORK_MANAGER_MAX_LEASES_PER_AGENT=2``, ``..._PER_TYPE=1``, and upstream's lease tools
without tokens (``WORK_MANAGER_LEASE_TOKEN_REQUIRED=false``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.api.conftest import BIN, base_env, truncate_work_tables
from tests.api.test_mcp import result
from tests.compat.listing_cases import (
    CASES,
    DEFAULT_ORDER,
    INVALID,
    keys_of,
    resolve,
    seed_many,
    seed_rows,
    verify,
)
from tests.compat.seeding import Seeder

pytestmark = pytest.mark.postgres

Call = Callable[..., Awaitable[dict[str, Any]]]


def env(db_url: str) -> dict[str, str]:
    return base_env(
        db_url,
        WORK_MANAGER_LEASE_TOKEN_REQUIRED="false",
        WORK_MANAGER_MAX_LEASES_PER_AGENT="2",
        WORK_MANAGER_MAX_LEASES_PER_TYPE="1",
    )


async def in_session(db_url: str, body: Callable[[Call], Awaitable[None]]) -> None:
    params = StdioServerParameters(
        command=str(BIN / "workmanager"),
        args=["--dispatcher", "none", "mcp", "--transport", "stdio"],
        env=env(db_url),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(name: str, **args: Any) -> dict[str, Any]:
            return result(await session.call_tool(name, args))

        await body(call)


def test_work_list_query_builder(api_db_url: str) -> None:
    """WorkListQueryBuilderTest: every case of listing_cases.CASES as ``work.list``
    arguments (``filter``, ``sort``, ``include``, ``fields``, ``page``), then its
    pagination scenarios ('supports pagination with page parameter', 'uses default page
    size when no pagination specified' (20), 'enforces maximum limit of 100', 'returns
    pagination metadata in response') and 'includes items by default' (here: each row
    carries ``items_count``; the items themselves with ``include=items``, as over HTTP:
    docs/migrating.md). Unknown filters, sorts and includes are refused (upstream: 400
    over HTTP; its MCP tool had no test of them)."""
    seen: dict[str, Any] = {}

    async def body(call: Call) -> None:
        ids = seen["ids"] = seed_rows(api_db_url)
        ago = (datetime.now(UTC) - timedelta(days=5)).isoformat(timespec="seconds")
        for case in CASES:
            seen[case.scenario] = await call("work.list", **resolve(case.query, ids, ago))
        seen["default"] = await call("work.list")
        seen["state_arg"] = await call("work.list", state="queued", type="test.multi")
        for n, query in enumerate(INVALID):
            seen[f"invalid{n}"] = await call("work.list", **query)
        seed_many(api_db_url, 120)
        seen["page2"] = await call("work.list", page={"size": 10, "number": 2})
        seen["page_default"] = await call("work.list")
        seen["page_max"] = await call("work.list", page={"size": 200})

    anyio.run(in_session, api_db_url, body)
    ids = seen["ids"]
    for case in CASES:
        answer = seen[case.scenario]
        assert answer["success"] is True, (case.scenario, answer)
        assert answer["count"] == len(answer["orders"])
        verify(case, answer["orders"], ids)
    default = seen["default"]["orders"]
    assert keys_of(default, ids) == DEFAULT_ORDER
    assert all("items" not in r and r["items_count"] >= 1 for r in default)
    assert keys_of(seen["state_arg"]["orders"], ids) == ["batch3", "batch1"]
    for n in range(len(INVALID)):
        refused = seen[f"invalid{n}"]
        assert refused["success"] is False and refused["code"] == "invalid_query", refused
    page2 = seen["page2"]
    assert page2["count"] == 10
    assert page2["meta"] == {"current_page": 2, "per_page": 10, "total": 120, "last_page": 12}
    assert seen["page_default"]["count"] == 20 and seen["page_default"]["meta"]["per_page"] == 20
    assert seen["page_max"]["meta"]["per_page"] == 100 and seen["page_max"]["count"] == 100


def test_global_checkout_over_mcp(api_db_url: str) -> None:
    """Feature/Mcp/GlobalCheckoutTest, each scenario from an empty queue (its name as the
    key of ``seen``)."""
    seeder = Seeder(api_db_url)
    seen: dict[str, Any] = {}

    async def body(call: Call) -> None:
        async def propose(priority: int = 0, type: str = "test.simple", **payload: Any) -> str:
            answer = await call("work.propose", type=type, payload=payload, priority=priority)
            assert answer["success"] is True, answer
            return str(answer["order"]["id"])

        async def checkout(agent: str = "mcp-agent-1", **filters: Any) -> dict[str, Any]:
            return await call("work.checkout", agentId=agent, **filters)

        seeder.reset()
        for name, priority in [("low", 10), ("high", 100), ("medium", 50)]:
            await propose(priority, name=name)
        seen["highest_priority"] = await checkout()
        seeder.reset()
        for name, age in [("third", 1), ("second", 2), ("first", 3)]:
            seeder.adjust(await propose(50, name=name), age=timedelta(seconds=age))
        seen["fifo"] = await checkout()
        seeder.reset()
        await propose(100, name="echo")
        await propose(50, "test.multi", count=1)
        seen["type"] = await checkout(type="test.multi")
        seeder.reset()
        for name, priority in [("low", 10), ("medium", 50), ("high", 100)]:
            await propose(priority, "test.parts" if name == "medium" else "test.simple", name=name)
        seen["min_priority"] = await checkout(minPriority=50)
        seeder.reset()
        await propose(100, tenant_id="tenant-1", name="one")
        await propose(50, tenant_id="tenant-2", name="two")
        seen["tenant"] = await checkout(tenantId="tenant-2")
        seeder.reset()
        seen["match_id"] = await propose(80, "test.multi", tenant_id="acme", count=1)
        await propose(90, tenant_id="acme", name="wrong-type")
        await propose(85, "test.multi", tenant_id="other", count=1)
        await propose(30, "test.multi", tenant_id="acme", count=1)
        seen["combined"] = await checkout(type="test.multi", minPriority=50, tenantId="acme")
        seeder.reset()
        seen["none"] = await checkout()
        await propose(10, name="test")
        seen["no_match"] = await checkout(type="nonexistent.type")
        seeder.reset()
        for type, payload in [
            ("test.simple", {}),
            ("test.multi", {"count": 1}),
            ("test.parts", {}),
        ]:
            await propose(0, type, **payload)
        seen["per_agent"] = [await checkout("agent-1") for _ in range(3)]
        seen["per_agent_other"] = await checkout("agent-2")
        seeder.reset()
        await propose(0, name="one")
        await propose(0, name="two")
        seen["per_type"] = [await checkout(a, type="test.simple") for a in ("agent-1", "agent-2")]
        seeder.reset()
        scoped = await propose(0, name="test")
        seen["scoped"] = await checkout(orderId=scoped)
        seeder.reset()
        leased = await propose(100, "test.multi", count=1)  # another type: the limit is 1
        await propose(50, name="available")
        await checkout("other-agent", orderId=leased)
        seen["skips_leased"] = await checkout()
        seeder.reset()
        seeder.adjust(await propose(0, name="test"), attempts=2)
        item = (await checkout())["item"]
        seen["attempt"] = item
        seen["heartbeat"] = await call("work.heartbeat", itemId=item["id"], agentId="mcp-agent-1")
        seen["submit"] = await call(
            "work.submit", itemId=item["id"], result={"answer": "test"}, agentId="mcp-agent-1"
        )

    try:
        anyio.run(in_session, api_db_url, body)
    finally:
        seeder.close()

    def name(answer: dict[str, Any]) -> Any:
        assert answer["success"] is True, answer
        return answer["item"]["input"].get("name")

    # 'returns highest priority item', 'uses fifo within same priority'
    assert name(seen["highest_priority"]) == "high" and name(seen["fifo"]) == "first"
    # 'filters by type', 'filters by min priority', 'filters by tenant id', 'combines ...'
    assert seen["type"]["item"]["type"] == "test.multi"
    assert name(seen["min_priority"]) == "high" and name(seen["tenant"]) == "two"
    assert seen["combined"]["item"]["order_id"] == seen["match_id"]
    # 'returns error when no items available', '... when no items match filters'
    for key in ("none", "no_match"):
        assert seen[key]["success"] is False and seen[key]["code"] == "no_items_available"
    assert "matching filters" in seen["no_match"]["error"]
    # 'respects per agent concurrency limit', 'respects per type concurrency limit'
    assert [a["success"] for a in seen["per_agent"]] == [True, True, False]
    assert seen["per_agent"][2]["code"] == "no_items_available"
    assert seen["per_agent_other"]["success"] is True
    assert [a["success"] for a in seen["per_type"]] == [True, False]
    assert seen["per_type"][1]["code"] == "no_items_available"
    # 'scoped checkout still works', 'skips already leased items'
    assert name(seen["scoped"]) == "test" and name(seen["skips_leased"]) == "available"
    # 'includes lease information', 'increments current attempt' (attempts + 1)
    item = seen["attempt"]
    lease_keys = {"id", "order_id", "type", "input", "lease_expires_at", "heartbeat_every_seconds"}
    assert lease_keys | {"max_attempts", "current_attempt"} <= set(item)
    assert item["current_attempt"] == 3
    # 'can heartbeat after global checkout', 'can submit after global checkout'
    assert seen["heartbeat"]["success"] is True and "lease_expires_at" in seen["heartbeat"]
    assert seen["submit"]["success"] is True and seen["submit"]["item"]["state"] == "submitted"


def test_work_list_takes_upstreams_objects_and_lists(api_db_url: str) -> None:
    """Upstream's ``filter`` values as its MCP clients send them: ``meta`` as an object
    (JSON contains: every key and value), a state as a list (any of); a value no filter
    reads is ``validation_failed``, never Python's text of it. And the counts upstream's
    answers carry: ``items_count`` on ``work.propose``, ``count`` on ``work.logs`` and
    ``work.list_parts``."""
    truncate_work_tables(api_db_url)
    seen: dict[str, Any] = {}

    async def body(call: Call) -> None:
        meta = {"batch_id": 42, "flag": True, "source": "crm"}
        seen["propose"] = await call("work.propose", type="test.parts", payload={}, meta=meta)
        await call("work.propose", type="test.simple", payload={}, meta={"batch_id": 99})
        seen["meta"] = await call("work.list", filter={"meta": {"batch_id": 42, "flag": True}})
        seen["meta_text"] = await call("work.list", filter={"meta": "batch_id:42"})
        seen["states"] = await call("work.list", filter={"state": ["queued", "rejected"]})
        seen["nested"] = await call("work.list", filter={"meta": {"batch_id": {"in": [1]}}})
        # empty, as over HTTP (surface/absent.py): no filter
        seen["empty"] = await call("work.list", filter={"state": "", "type": [], "tenant_id": None})
        seen["null_priority"] = await call(
            "work.propose", type="test.simple", payload={}, priority=None
        )
        order_id = seen["propose"]["order"]["id"]
        seen["logs"] = await call("work.logs", orderId=order_id)
        item_id = (await call("work.get", orderId=order_id))["items"][0]["id"]
        seen["parts"] = await call("work.list_parts", itemId=item_id)

    anyio.run(in_session, api_db_url, body)
    proposed = seen["propose"]
    assert proposed["success"] is True and proposed["items_count"] == 1
    for key in ("meta", "meta_text"):
        assert seen[key]["success"] is True, seen[key]
        assert [o["id"] for o in seen[key]["orders"]] == [proposed["order"]["id"]]
    assert seen["states"]["success"] is True and seen["states"]["count"] == 2
    nested = seen["nested"]
    assert nested["success"] is False and nested["code"] == "validation_failed"
    assert nested["details"][0]["path"] == "filter.meta.batch_id"
    assert seen["empty"]["success"] is True and seen["empty"]["count"] == 2, seen["empty"]
    null_priority = seen["null_priority"]
    assert null_priority["success"] is True and null_priority["order"]["priority"] == 0
    logs = seen["logs"]
    assert logs["count"] == len(logs["events"]) >= 2
    assert seen["parts"]["count"] == 0 and seen["parts"]["parts"] == []
