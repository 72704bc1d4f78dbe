"""MCP tools with an ``idempotency_key`` run once and replay (SPEC §6.3's rules over §7).

In-process: an MCP client session connected to the server object, on SQLite and on
PostgreSQL's hot path, the database every tool writes to read back afterwards.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlalchemy import func, select

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Order, Provenance
from workmanager.mcp.server import build_server

Call = Any


def result(answer: Any) -> dict[str, Any]:
    if answer.structured_content is not None:
        data = answer.structured_content
        return dict(data.get("result", data))
    return dict(json.loads(answer.content[0].text))


def session(wm: WorkManager, script: Any) -> Any:
    """Run ``script(call)`` against ``wm``'s MCP server in one client session."""

    async def main() -> Any:
        async with Client(build_server(wm)) as client:

            async def call(name: str, **args: Any) -> dict[str, Any]:
                return result(await client.call_tool(name, args))

            return await script(call)

    return anyio.run(main)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def wm(request: pytest.FixtureRequest, make_wm: Any) -> WorkManager:
    backend = "database" if request.param == "postgres" else "memory"
    return make_wm(db=request.param, backend=backend, registry=Registry([Simple()]))  # type: ignore[no-any-return]


def orders(wm: WorkManager) -> int:
    with wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Order)) or 0)


def test_a_retried_propose_creates_one_order_and_replays_it(wm: WorkManager) -> None:
    async def script(call: Call) -> list[dict[str, Any]]:
        args = {"type": "test.simple", "payload": {"n": 1}, "idempotency_key": "prop-1"}
        first = await call("work.propose", **args)
        again = await call("work.propose", **args)
        other_body = await call("work.propose", **(args | {"payload": {"n": 2}}))
        no_key = await call("work.propose", type="test.simple", payload={"n": 1})
        return [first, again, other_body, no_key]

    first, again, other_body, no_key = session(wm, script)
    assert first["success"] and "replayed" not in first
    assert again == first | {"replayed": True}
    assert other_body["success"] is False and other_body["code"] == "idempotency_key_reused"
    assert no_key["success"] and no_key["order"]["id"] != first["order"]["id"]
    assert orders(wm) == 2  # the replay and the refused reuse created nothing


def test_a_retried_submit_replays_and_a_failure_frees_its_key(wm: WorkManager) -> None:
    async def script(call: Call) -> dict[str, Any]:
        await call("work.propose", type="test.simple", payload={})
        leased = await call("work.checkout", agent_id="mcp-a", idempotency_key="co-1")
        replayed_lease = await call("work.checkout", agent_id="mcp-a", idempotency_key="co-1")
        item = leased["item"]
        lease = {"item_id": item["id"], "lease_token": str(item["lease_token"])}
        lease |= {"agent_id": "mcp-a", "idempotency_key": "sub-1"}
        bad = await call("work.submit", **lease, result={})  # fails schema validation
        good = await call("work.submit", **lease, result={"answer": 3})
        again = await call("work.submit", **lease, result={"answer": 3})
        unkeyed = await call("work.submit", **(lease | {"idempotency_key": None}), result={})
        return {
            "leased": leased,
            "replayed_lease": replayed_lease,
            "bad": bad,
            "good": good,
            "again": again,
            "unkeyed": unkeyed,
        }

    seen = session(wm, script)
    assert seen["replayed_lease"] == seen["leased"] | {"replayed": True}  # not a second grant
    assert seen["bad"]["code"] == "validation_failed"
    assert seen["good"]["success"] and "replayed" not in seen["good"]  # the key was freed
    assert seen["again"] == seen["good"] | {"replayed": True}
    assert seen["unkeyed"]["code"] == "illegal_state_transition"  # it did run only once
    with wm.db.transaction() as s:
        hashes = list(
            s.scalars(select(Provenance.idempotency_key_hash).where(Provenance.action == "submit"))
        )
    assert len(hashes) == 1 and hashes[0] is not None  # provenance names the key


def test_keys_are_scoped_by_agent(wm: WorkManager) -> None:
    """Every stdio session is the same principal: two agents that happen to pick the same
    key each get their own lease, not a replay of the other's."""

    async def script(call: Call) -> list[dict[str, Any]]:
        await call("work.propose", type="test.simple", payload={"n": 1})
        await call("work.propose", type="test.simple", payload={"n": 2})
        first = await call("work.checkout", agent_id="agent-a", idempotency_key="checkout-1")
        second = await call("work.checkout", agent_id="agent-b", idempotency_key="checkout-1")
        return [first, second]

    first, second = session(wm, script)
    assert "replayed" not in first and "replayed" not in second
    assert first["item"]["id"] != second["item"]["id"]
    leased = [wm.queries.item(uuid.UUID(a["item"]["id"])) for a in (first, second)]
    assert [i["leased_by_agent_id"] for i in leased] == ["agent-a", "agent-b"]


def test_an_approval_key_sent_again_with_another_wait_is_reused(wm: WorkManager) -> None:
    """An approvals pass: ``work.approve`` fingerprinted no arguments, so the key sent again
    with ``wait`` replayed the first answer (no diff) instead of refusing the reuse. The same
    holds over HTTP, where ``wait`` is a query parameter."""
    from fastapi.testclient import TestClient

    from workmanager.api import create_app
    from workmanager.services.tokens import TokenService

    def submitted() -> str:
        order_id = wm.propose("test.simple", {})
        lease = wm.agent.checkout("agent-1", order_id=order_id)
        assert lease is not None
        wm.agent.submit(lease, {"answer": 1})
        return str(order_id)

    over_mcp = submitted()

    async def script(call: Call) -> list[dict[str, Any]]:
        first = await call("work.approve", order_id=over_mcp, idempotency_key="ap-1")
        again = await call("work.approve", order_id=over_mcp, idempotency_key="ap-1")
        waiting = await call("work.approve", order_id=over_mcp, idempotency_key="ap-1", wait=1)
        return [first, again, waiting]

    first, again, waiting = session(wm, script)
    assert first["success"] and again == first | {"replayed": True}
    assert waiting["success"] is False and waiting["code"] == "idempotency_key_reused"

    over_http = submitted()
    token, _ = TokenService(wm.ctx).create("reviewer", "approve,view")
    http = TestClient(create_app(wm))
    keyed = {"Authorization": f"Bearer {token}", "Idempotency-Key": "ap-2"}
    path = f"/agent/work/orders/{over_http}/approve"
    assert http.post(path, headers=keyed).status_code == 202
    reused = http.post(path + "?wait=1", headers=keyed)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
