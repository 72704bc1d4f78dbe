"""The MCP tools the stdio and HTTP sessions do not reach: parts, finalize, list_parts,
release, fail and reject, through an in-process client session, results read back from
the database."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.test_mcp_idempotency import Call, session
from tests.support.types import Multi, Parts, Simple
from workmanager import Registry, WorkManager


def build(make_wm: Any) -> WorkManager:
    wm: WorkManager = make_wm(registry=Registry([Simple(), Multi(), Parts()]))
    return wm


def lease_args(leased: dict[str, Any], agent: str) -> dict[str, str]:
    item = leased["item"]
    return {"item_id": item["id"], "lease_token": str(item["lease_token"]), "agent_id": agent}


def test_parts_are_submitted_listed_and_finalized(make_wm: Any) -> None:
    wm = build(make_wm)

    async def script(call: Call) -> dict[str, Any]:
        order = (await call("work.propose", type="test.parts", payload={}))["order"]
        lease = lease_args(await call("work.checkout", agent_id="mcp-p"), "mcp-p")
        seen = {"order": order}
        seen["bad_part"] = await call("work.submit_part", **lease, part_key="a", payload={})
        seen["a"] = await call("work.submit_part", **lease, part_key="a", payload={"v": 1})
        seen["early"] = await call("work.finalize", **lease)  # strict: b is missing
        seen["b"] = await call("work.submit_part", **lease, part_key="b", payload={"w": 2})
        seen["parts"] = await call("work.list_parts", item_id=lease["item_id"])
        seen["only_a"] = await call("work.list_parts", item_id=lease["item_id"], part_key="a")
        seen["final"] = await call("work.finalize", **lease)
        return seen

    seen = session(wm, script)
    assert seen["bad_part"]["code"] == "validation_failed"
    assert seen["a"]["success"] and seen["b"]["success"]
    assert seen["early"]["code"] == "missing_parts" and seen["early"]["details"]["missing"] == ["b"]
    listed = seen["parts"]["parts"]
    assert sorted(p["part_key"] for p in listed) == ["a", "b"]
    assert [p["part_key"] for p in seen["only_a"]["parts"]] == ["a"]
    assert seen["final"]["item"]["state"] == "submitted"
    assert seen["final"]["item"]["assembled_result"] == {"a": {"v": 1}, "b": {"w": 2}}
    assert seen["final"]["order_state"] == "submitted"
    assert wm.queries.order(uuid.UUID(seen["order"]["id"]))["state"] == "submitted"


def test_release_fail_and_reject(make_wm: Any) -> None:
    wm = build(make_wm)

    async def script(call: Call) -> dict[str, Any]:
        multi = (await call("work.propose", type="test.multi", payload={"count": 2}))["order"]
        first = lease_args(await call("work.checkout", agent_id="mcp-r"), "mcp-r")
        seen: dict[str, Any] = {"multi": multi}
        seen["foreign"] = await call("work.release", **(first | {"agent_id": "other"}))
        seen["released"] = await call("work.release", **first)
        again = lease_args(await call("work.checkout", agent_id="mcp-r"), "mcp-r")
        error = {"code": "bad_input", "message": "cannot"}
        seen["failed"] = await call("work.fail", **again, error=error, retryable=False)
        simple = (await call("work.propose", type="test.simple", payload={}))["order"]
        lease = lease_args(await call("work.checkout", agent_id="mcp-r"), "mcp-r")
        await call("work.submit", **lease, result={"answer": 1})
        # what HTTP stores of these (its body model keeps code, message and a field that
        # is set) is what MCP stores: MCP kept every key as sent
        errors = [
            {"code": "wrong", "message": "redo", "field": None, "severity": "x", "hint": "y"},
            {"code": "also", "message": "this", "field": "answer"},
        ]
        seen["rejected"] = await call(
            "work.reject", order_id=simple["id"], errors=errors, allow_rework=True
        )
        seen["simple"] = simple
        return seen

    seen = session(wm, script)
    assert seen["foreign"]["code"] == "forbidden"
    assert seen["released"]["item"]["state"] == "queued"
    assert seen["failed"]["item"]["state"] == "failed"
    assert seen["failed"]["item"]["error"] == {"code": "bad_input", "message": "cannot"}
    assert wm.queries.order(uuid.UUID(seen["multi"]["id"]))["state"] == "failed"
    assert seen["rejected"]["success"], seen["rejected"]
    reworked = wm.queries.order(uuid.UUID(seen["simple"]["id"]))
    assert reworked["state"] == "queued"  # allow_rework: back to the queue
    assert [i["state"] for i in reworked["items"]] == ["queued"]
    assert reworked["last_error"]["errors"] == [
        {"code": "wrong", "message": "redo"},
        {"code": "also", "message": "this", "field": "answer"},
    ], reworked["last_error"]


def test_arguments_of_the_wrong_type_are_a_validation_failure(make_wm: Any) -> None:
    """They were the MCP library's own error text (``isError``), not a §7 result."""
    wm = build(make_wm)

    async def script(call: Call) -> list[dict[str, Any]]:
        return [
            await call("work.propose", type="test.simple", payload="not an object"),
            await call("work.heartbeat", item_id="x", lease_token=[], agent_id="a"),
        ]

    answers = session(wm, script)
    for answer in answers:
        assert answer["success"] is False and answer["code"] == "validation_failed", answer
    paths = [d["path"] for answer in answers for d in answer["details"]]
    assert paths == ["payload", "lease_token"]


def test_booleans_and_numbers_are_taken_strictly_as_the_http_api_takes_them(
    make_wm: Any,
) -> None:
    """The SDK's lax validation took ``retryable: "no"`` for ``false`` (failing the item
    for good), ``priority: true`` for 1 and ``seq: "1"`` for 1: each is now refused by
    name, and nothing changes (the item stays leased, no order is proposed)."""
    wm = build(make_wm)

    async def script(call: Call) -> dict[str, Any]:
        await call("work.propose", type="test.simple", payload={})
        leased = await call("work.checkout", agent_id="a")
        lease = lease_args(leased, "a")
        error = {"code": "x", "message": "y"}
        return {
            "retryable": await call("work.fail", error=error, retryable="no", **lease),
            "priority": await call("work.propose", type="test.simple", payload={}, priority=True),
            "progress": await call("work.heartbeat", progress=True, **lease),
            "seq": await call("work.submit_part", part_key="a", payload={}, seq="1", **lease),
            "wait": await call("work.approve", order_id=str(uuid.uuid4()), wait="5"),
            "limit": await call("work.logs", item_id=lease["item_id"], limit=2.5),
            "fine": await call("work.heartbeat", progress=0.5, **lease),
            "item": await call("work.logs", item_id=lease["item_id"], limit=1),
            "orders": await call("work.list"),
            "item_id": lease["item_id"],
        }

    seen = session(wm, script)
    for name in ("retryable", "priority", "progress", "seq", "wait", "limit"):
        answer = seen[name]
        assert answer["success"] is False and answer["code"] == "validation_failed", answer
        assert [d["path"] for d in answer["details"]] == [name], answer
    assert seen["fine"]["success"] is True, seen["fine"]
    assert len(seen["orders"]["data"]) == 1  # the refused propose made none
    item = wm.queries.item(uuid.UUID(seen["item_id"]))
    assert item["state"] == "in_progress" and item["attempts"] == 1


def test_a_refusal_is_flagged_is_error_and_the_server_names_its_version(make_wm: Any) -> None:
    """Every refusal came back ``isError: false`` with ``"success": false``: a client
    reading the flag (as MCP says a tool's own error is reported) took it for a success.
    ``initialize`` named the server's version as ``""``."""
    import anyio
    from mcp.client import Client

    from workmanager.mcp import build_server

    wm = build(make_wm)

    async def main() -> tuple[Any, Any, str]:
        async with Client(build_server(wm)) as client:
            refused = await client.call_tool("work.get", {"order_id": str(uuid.uuid4())})
            made = await client.call_tool("work.propose", {"type": "test.simple", "payload": {}})
            info = client.server_info
            return refused, made, info.version if info is not None else ""
        raise AssertionError("unreachable")

    refused, made, version = anyio.run(main)
    assert refused.is_error is True and made.is_error is False
    body = refused.structured_content or {}
    assert body.get("result", body).get("code") == "not_found"
    assert version not in ("", None)


def test_an_unknown_tool_is_a_refusal_that_names_the_closest_and_every_tool(
    make_wm: Any,
) -> None:
    """It was the MCP library's own text, ``Unknown tool: work.sumbit``: no §7 code, and
    nothing to tell an agent which name it meant."""
    import anyio
    from mcp.client import Client

    from workmanager.mcp import build_server

    wm = build(make_wm)

    async def main() -> tuple[Any, Any]:
        async with Client(build_server(wm)) as client:
            near = await client.call_tool("work.sumbit", {"item_id": "x"})
            far = await client.call_tool("nothing.like.it", {})
            return near, far
        raise AssertionError("unreachable")

    near, far = anyio.run(main)
    for answer in (near, far):
        body = answer.structured_content or {}
        assert answer.is_error is True and body["success"] is False, answer
        assert body["code"] == "not_found" and "work.fail" in body["error"], body
    assert "did you mean work.submit?" in near.structured_content["error"]
    assert "did you mean" not in far.structured_content["error"]
    assert near.structured_content["details"] == {"tool": "work.sumbit"}


#: Arguments each tool takes well formed (ids of nothing: the scope is checked first).
VALID = {
    "work.propose": {"type": "test.simple", "payload": {}},
    "work.list": {},
    "work.get": {"order_id": str(uuid.UUID(int=1))},
    "work.checkout": {"agent_id": "a"},
    "work.heartbeat": {"item_id": str(uuid.UUID(int=1)), "lease_token": "1.x", "agent_id": "a"},
    "work.submit": {
        "item_id": str(uuid.UUID(int=1)),
        "lease_token": "1.x",
        "agent_id": "a",
        "result": {},
    },
    "work.submit_part": {
        "item_id": str(uuid.UUID(int=1)),
        "lease_token": "1.x",
        "agent_id": "a",
        "part_key": "p",
        "payload": {},
    },
    "work.list_parts": {"item_id": str(uuid.UUID(int=1))},
    "work.finalize": {"item_id": str(uuid.UUID(int=1)), "lease_token": "1.x", "agent_id": "a"},
    "work.approve": {"order_id": str(uuid.UUID(int=1))},
    "work.reject": {"order_id": str(uuid.UUID(int=1)), "errors": [{"code": "c", "message": "m"}]},
    "work.release": {"item_id": str(uuid.UUID(int=1)), "lease_token": "1.x", "agent_id": "a"},
    "work.logs": {"order_id": str(uuid.UUID(int=1))},
    "work.fail": {
        "item_id": str(uuid.UUID(int=1)),
        "lease_token": "1.x",
        "agent_id": "a",
        "error": {"code": "c", "message": "m"},
    },
}


def test_credentials_are_judged_before_arguments_and_the_scope_table_is_the_operations(
    make_wm: Any, monkeypatch: Any
) -> None:
    """A caller without the tool's scope (or without a token) sending bad arguments was
    told how the arguments failed, where HTTP says 401/403 first. The scopes a failed
    call is judged by (``TOOL_SCOPES``) are the ones each operation requires: a principal
    holding every scope but the table's is refused by the operation itself."""
    import anyio
    from mcp.client import Client

    from workmanager.mcp import build_server
    from workmanager.mcp.calls import Tools
    from workmanager.mcp.server import TOOL_SCOPES
    from workmanager.services.tokens import SCOPES, Principal

    wm = build(make_wm)
    assert set(TOOL_SCOPES) == set(VALID)
    held: dict[str, frozenset[str]] = {}

    def principal(self: Any, ctx: Any, claimed: Any = None, lease: Any = None) -> Any:
        return Principal("p", None, held["scopes"]), None

    async def call(name: str, arguments: dict[str, Any], require_token: bool) -> Any:
        async with Client(build_server(wm, require_token=require_token)) as client:
            answer = await client.call_tool(name, arguments)
            return answer.structured_content or {}
        raise AssertionError("unreachable")

    def body(answer: dict[str, Any]) -> dict[str, Any]:
        return answer.get("result", answer)

    # no token at all (the HTTP transport's gate aside): unauthenticated, whatever the args
    bad = anyio.run(call, "work.checkout", {"agent_id": "a", "bogus": 1}, True)
    assert body(bad)["code"] == "unauthenticated", bad
    monkeypatch.setattr(Tools, "principal", principal)
    for name, scope in TOOL_SCOPES.items():
        held["scopes"] = frozenset(SCOPES) - {scope, "admin"}
        refused = body(anyio.run(call, name, VALID[name], True))
        assert refused.get("code") == "forbidden", (name, refused)
        assert refused["details"]["required_scope"] == scope, (name, refused)
        wrong = body(anyio.run(call, name, {**VALID[name], "bogus": 1}, True))
        assert wrong.get("code") == "forbidden", (name, wrong)
        held["scopes"] = frozenset({scope})
        allowed = body(anyio.run(call, name, {**VALID[name], "bogus": 1}, True))
        assert allowed.get("code") == "validation_failed", (name, allowed)


def test_lease_tools_take_no_agent_id_as_upstream_s_and_act_for_the_caller(
    make_wm: Any,
) -> None:
    """Upstream's tools default ``agentId`` to the caller; here every lease tool required
    it, so an upstream client's ``work.checkout {}`` was refused before it ran. Without
    one, the caller acts (over stdio: ``mcp-stdio``, as HTTP's token name without
    ``X-Agent-ID``); a lease taken under another name stays that agent's."""
    wm = build(make_wm)

    async def script(call: Call) -> dict[str, Any]:
        await call("work.propose", type="test.multi", payload={"count": 2})
        seen: dict[str, Any] = {"checkout": await call("work.checkout")}
        item = seen["checkout"]["item"]
        args = {"item_id": item["id"], "lease_token": str(item["lease_token"])}
        seen["held"] = wm.queries.item(uuid.UUID(item["id"]))["leased_by_agent_id"]
        seen["heartbeat"] = await call("work.heartbeat", **args)
        seen["submit"] = await call("work.submit", **args, result={"ok": True})
        other = (await call("work.checkout", agent_id="named-one"))["item"]
        theirs = {"item_id": other["id"], "lease_token": str(other["lease_token"])}
        seen["not_mine"] = await call("work.release", **theirs)
        seen["mine"] = await call("work.release", **theirs, agent_id="named-one")
        return seen

    seen = session(wm, script)
    assert seen["checkout"]["success"], seen["checkout"]
    assert seen["held"] == "mcp-stdio"
    assert seen["heartbeat"]["success"] and seen["submit"]["success"], seen
    submitted = wm.queries.item(uuid.UUID(seen["checkout"]["item"]["id"]))
    assert submitted["state"] == "submitted" and submitted["leased_by_agent_id"] is None
    assert seen["not_mine"]["success"] is False and seen["not_mine"]["code"] == "forbidden"
    assert seen["mine"]["success"], seen["mine"]
