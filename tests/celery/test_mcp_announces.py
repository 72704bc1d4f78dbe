"""``workmanager mcp`` announces work to the Celery workers as ``serve`` does: it ran with
no dispatcher, so an order proposed over MCP never reached the agents' queue, a submit
never asked the control worker for the auto-approval, and an approval never sent its
apply, each answering ``success`` (a request silently lost). Real processes: the MCP
server over stdio, a control worker and a consumer agent, on Redis and PostgreSQL."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

BIN = Path(sys.executable).parent


def answer(result: Any) -> dict[str, Any]:
    data = result.structured_content
    if data is not None:
        return dict(data.get("result", data))
    return dict(json.loads(result.content[0].text))


async def over_mcp(env: dict[str, str]) -> tuple[str, str]:
    """Propose two orders; check out and submit the first by hand. Their ids."""
    params = StdioServerParameters(
        command=str(BIN / "workmanager"), args=["mcp", "--transport", "stdio"], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(name: str, **args: Any) -> dict[str, Any]:
            said = answer(await session.call_tool(name, args))
            assert said.get("success") is True, said
            return said

        by_hand = await call("work.propose", type="e2e.echo", payload={"n": 1})
        order_id = by_hand["order"]["id"]
        leased = await call("work.checkout", agent_id="mcp-1", order_id=order_id)
        item = leased["item"]
        await call(
            "work.submit",
            item_id=item["id"],
            lease_token=item["lease_token"],
            agent_id="mcp-1",
            result={"by": "hand"},
        )
        for_agent = await call("work.propose", type="e2e.echo", payload={"n": 2})
    return order_id, for_agent["order"]["id"]


def test_work_proposed_and_submitted_over_mcp_reaches_the_workers(make_stack) -> None:
    stack = make_stack()
    stack.worker()
    by_hand, for_agent = anyio.run(over_mcp, stack.env)
    # the submit's auto-approval check reached the control worker, which applied it
    stack.wait_for(
        lambda: stack.wm.queries.order_state(uuid.UUID(by_hand)) == "completed",
        60,
        "the order submitted over MCP approved and applied by the worker",
    )
    # the proposal's announcement waits in the agents' queue for the agent started now
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    stack.wait_for(
        lambda: stack.wm.queries.order_state(uuid.UUID(for_agent)) == "completed",
        60,
        "the order proposed over MCP worked by the consumer agent",
    )
